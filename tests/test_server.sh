#!/usr/bin/env bash
# kvslim serve end to end: pytest (tests/server/) against a real server on
# 127.0.0.1 with the default model, using the `openai` client from PyPI,
# installed with pytest into a venv under the build folder. Skips loudly when
# the model is absent, unless KVS_REQUIRE_MODELS=1, where it fails.
set -u
BUILD=${BUILD:-build}
K=$BUILD/kvslim
M=models/smollm2-135m-instruct-q4_1.gguf
[ -x "$K" ] || { echo "test_server.sh: $K not built"; exit 1; }
if [ ! -f "$M" ]; then
  echo "test_server.sh: SKIPPED: the default model is absent (make models)"
  [ "${KVS_REQUIRE_MODELS:-0}" = 1 ] && exit 1
  exit 0
fi
VENV=$BUILD/venv-server
PKGS=(openai==3.57.0 pytest==9.2.0)
if ! "$VENV/bin/python" -c 'import openai, pytest' >/dev/null 2>&1; then
  echo "test_server.sh: installing ${PKGS[*]} into $VENV"
  if ! python3 -m venv "$VENV" || ! "$VENV/bin/pip" install -q --disable-pip-version-check "${PKGS[@]}"; then
    echo "test_server.sh: FAILED: cannot make the venv (python3-venv, network to PyPI)"
    exit 1
  fi
fi
KVS_BIN=$K KVS_MODEL=$M timeout 1200 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/server "$@"
rc=$?
[ $rc -eq 0 ] && echo "test_server.sh: passed" || echo "test_server.sh: FAILED (pytest exit $rc)"
exit $rc
