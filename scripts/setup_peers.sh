#!/usr/bin/env bash
# The llama.cpp peer every comparison script measures against, built
# reproducibly from one pinned source: the llama-cpp-python 0.3.36 sdist on
# PyPI (sha256 below), whose vendor/llama.cpp tree is the llama.cpp those
# Python bindings were written for. Only what the comparisons use is built,
# CPU only:
#   llama-bench  llama-perplexity  llama-batched-bench  llama-server
#   libllama.so (+ the libggml*.so it needs)
# into peers/llama.cpp/ (git-ignored):
#   peers/llama.cpp/build/bin/    the tools and the shared libraries
#   peers/llama.cpp/llama_cpp_python-0.3.36/llama_cpp/
#                                 the Python bindings from the same sdist, their
#                                 lib/ a link to build/bin: imported from there,
#                                 `llama_cpp` loads the libllama.so built here
# and with --python the reference Python the scripts that need llama.cpp as a
# library (scripts/ref_llamacpp.py, ref_tokenize.py; through scripts/peer.py)
# run under:
#   peers/venv/                   a venv (git-ignored) with the pinned packages
#                                 below and a .pth that puts those bindings on
#                                 its path: peers/venv/bin/python -c 'import llama_cpp'
# A stamp holds the version and the flags: a second run with the same ones is
# a no-op; changing either (or PEER_NATIVE) rebuilds.
#
# Flags (CMake options of this llama.cpp version): Release, shared libraries;
# GGML_NATIVE=ON by default (-march=native, what a user building llama.cpp
# locally gets; PEER_NATIVE=OFF gives a portable AVX2 build instead); no
# CUDA/HIP/Vulkan/Metal/SYCL/BLAS/RPC, no dynamically loaded backends, no
# OpenSSL (llama.cpp no longer uses curl), no tests/examples/unified app, no
# web UI (neither the npm build nor the prebuilt download: the server embeds
# an empty asset table), ccache off. OpenMP (gcc's libgomp) stays on, as in a
# default build. The commit the tools report (llama-bench's build_commit) is
# the vendored llama.cpp commit; the build number is 0 (the sdist's git
# metadata is a shallow clone, whose count would mean nothing).
#
# Build time (unpack + configure + build, -j2): 1129 s wall on the shared
# 2-core development VM at load average ~11 from other builds, 10.8 min of
# CPU (user + sys), so ~6 min on two idle cores; the sdist download takes
# ~1.5 min more (pip prepares its metadata), the venv (--python) ~20 s.
#
# Usage: bash scripts/setup_peers.sh [--python] [--lib] [--check] [--quiet]
#   --python also make the reference Python (peers/venv)
#   --lib    build only libllama.so (and the libggml*.so it needs), what
#            tests/test_peer.c uses through the bindings; CI builds this. A
#            full build satisfies --lib; a --lib build is completed by a run
#            without it
#   --check  exit 0 when the peer (and with --python the venv) is built and
#            current, 1 otherwise; builds nothing
#   --quiet  print nothing on success (scripts call it this way)
# Environment: PEER_NATIVE=ON|OFF (default ON), JOBS (default $(nproc)),
# PEER_AMX=OFF (native without llama.cpp's AMX path, for CPUs that list AMX
# but fault in it; remembered until PEER_AMX=ON).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

VERSION=0.3.36
SDIST=llama_cpp_python-$VERSION.tar.gz
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# the llama.cpp commit vendored in that sdist (its vendor/llama.cpp git
# metadata: 0c1e57098bba43ac29e6e3b677cdceebdd22334f, 2026-10-01)
LLAMA_COMMIT=0c1e570
PEER=$ROOT/peers/llama.cpp
SRC=$PEER/llama_cpp_python-$VERSION
BUILD=$PEER/build
BIN=$BUILD/bin
TARGETS=(llama llama-bench llama-perplexity llama-batched-bench llama-server)
LIB_TARGETS=(llama)
NATIVE=${PEER_NATIVE:-ON}
FLAGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=ON
  -DGGML_NATIVE="$NATIVE"
  -DGGML_CPU=ON -DGGML_OPENMP=ON -DGGML_LLAMAFILE=ON
  -DGGML_BACKEND_DL=OFF -DGGML_CPU_ALL_VARIANTS=OFF
  -DGGML_CUDA=OFF -DGGML_HIP=OFF -DGGML_MUSA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF
  -DGGML_SYCL=OFF -DGGML_OPENCL=OFF -DGGML_WEBGPU=OFF -DGGML_BLAS=OFF -DGGML_RPC=OFF
  -DGGML_CCACHE=OFF
  -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_OPENSSL=OFF -DLLAMA_LLGUIDANCE=OFF
  -DLLAMA_BUILD_NUMBER=0 -DLLAMA_BUILD_COMMIT="$LLAMA_COMMIT"
)
# PEER_AMX=OFF builds it without llama.cpp's AMX path (-mno-amx-*: the native
# build a user makes where llama.cpp's default one dies in its AMX matmul, as
# on a virtual machine that lists AMX but faults in it: SIGILL at tileloadd);
# llama.cpp then keeps its repacked AVX-512 kernels. The choice is remembered
# (peers/llama.cpp/amx-off) until PEER_AMX=ON.
AMX_OFF_MARK=$PEER/amx-off
case ${PEER_AMX:-} in
  OFF) AMX=OFF ;;
  ON) AMX=ON ;;
  "") if [ -e "$AMX_OFF_MARK" ]; then AMX=OFF; else AMX=ON; fi ;;
  *) echo "setup_peers: PEER_AMX must be ON or OFF, not '$PEER_AMX'" >&2; exit 2 ;;
esac
if [ "$NATIVE" = ON ] && [ "$AMX" = OFF ]; then
  FLAGS+=(-DCMAKE_C_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
          -DCMAKE_CXX_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
fi
STAMP=$PEER/.stamp
WANT="version=$VERSION sha256=$SHA256 targets=${TARGETS[*]} flags=${FLAGS[*]}"
# the reference Python: the bindings' own dependencies (pyproject.toml of the
# sdist) and gguf + numpy for the numpy reference scripts, pinned
VENV=$ROOT/peers/venv
PY_PKGS=(numpy==2.2.6 diskcache==5.6.3 jinja2==3.1.6 typing-extensions==4.12.2 gguf==0.19.0)
VENV_WANT="bindings=$SRC packages=${PY_PKGS[*]}"

CHECK=0 QUIET=0 PYTHON=0 LIB=0
for a in "$@"; do
  case $a in
    --python) PYTHON=1 ;;
    --lib) LIB=1 ;;
    --check) CHECK=1 ;;
    --quiet) QUIET=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup_peers: unknown argument $a" >&2; exit 2 ;;
  esac
done
say() { [ "$QUIET" = 1 ] || echo "$@"; }

lib_ok() { [ -e "$BIN/libllama.so" ] && [ -d "$SRC/llama_cpp" ]; }
artifacts_ok() {
  local t
  for t in llama-bench llama-perplexity llama-batched-bench llama-server; do
    [ -x "$BIN/$t" ] || return 1
  done
  lib_ok
}
venv_ok() {
  [ -f "$VENV/.stamp" ] && [ "$(cat "$VENV/.stamp")" = "$VENV_WANT" ] && [ -x "$VENV/bin/python" ]
}
report() {
  say "llama.cpp peer (llama-cpp-python $VERSION, vendor/llama.cpp, GGML_NATIVE=$NATIVE, AMX $AMX):"
  say "  tools:     $BIN/{llama-bench,llama-perplexity,llama-batched-bench,llama-server}"
  say "  library:   $BIN/libllama.so (and libggml*.so)"
  say "  bindings:  $SRC/llama_cpp (lib -> $BIN)"
  if venv_ok; then say "  python:    $VENV/bin/python (import llama_cpp: these bindings; numpy, gguf)"; fi
}
make_venv() {
  venv_ok && return 0
  if [ "$CHECK" = 1 ]; then
    echo "setup_peers: the reference Python is not set up; run: bash scripts/setup_peers.sh --python" >&2
    exit 1
  fi
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "setup_peers: python3 cannot make a venv; as root, run: apt-get install -y python3-venv" >&2
    exit 1
  fi
  echo "setup_peers: making the reference Python $VENV (${PY_PKGS[*]})" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_PKGS[@]}" >&2
  "$VENV/bin/python" - "$SRC" <<'PYEOF'
import sys, sysconfig, os
open(os.path.join(sysconfig.get_paths()["purelib"], "kvslim-peer.pth"), "w").write(sys.argv[1] + "\n")
PYEOF
  "$VENV/bin/python" -c 'import llama_cpp, sys; sys.exit(llama_cpp.__version__ != sys.argv[1])' "$VERSION" ||
    { echo "setup_peers: $VENV/bin/python does not import llama_cpp $VERSION" >&2; exit 1; }
  echo "$VENV_WANT" >"$VENV/.stamp"
}

WANT_LIB="version=$VERSION sha256=$SHA256 targets=${LIB_TARGETS[*]} flags=${FLAGS[*]}"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && artifacts_ok; then
  [ "$PYTHON" = 1 ] && make_venv
  report; exit 0
fi
if [ "$LIB" = 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT_LIB" ] && lib_ok; then
  [ "$PYTHON" = 1 ] && make_venv
  say "llama.cpp peer (library only): $BIN/libllama.so"; exit 0
fi
if [ "$LIB" = 1 ]; then
  TARGETS=("${LIB_TARGETS[@]}")
  WANT=$WANT_LIB
fi
if [ "$CHECK" = 1 ]; then
  echo "setup_peers: the llama.cpp peer is not built (or is out of date); run: bash scripts/setup_peers.sh" >&2
  exit 1
fi

# Debian packages: a C/C++ toolchain and cmake (pip for the download), the
# same way the build checks and installs its own
bash "$(dirname "$0")/setup_deps.sh" cmake g++ make python3-pip

mkdir -p "$PEER"
start=$(date +%s)

# 1. the sdist, verified
if ! { [ -f "$PEER/$SDIST" ] && echo "$SHA256  $PEER/$SDIST" | sha256sum -c --status; }; then
  rm -f "$PEER/$SDIST"
  dl=$(mktemp -d)
  trap 'rm -rf "$dl"' EXIT
  echo "setup_peers: downloading llama-cpp-python==$VERSION (sdist) from PyPI" >&2
  python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$dl" >&2
  if ! echo "$SHA256  $dl/$SDIST" | sha256sum -c --status; then
    echo "setup_peers: $SDIST does not match the recorded sha256 $SHA256" >&2
    sha256sum "$dl/$SDIST" >&2 || true
    exit 1
  fi
  mv "$dl/$SDIST" "$PEER/$SDIST"
fi

# 2. unpacked and configured afresh when the stamp differs (nothing partial survives)
rm -rf "$SRC" "$BUILD" "$STAMP"
tar -xzf "$PEER/$SDIST" -C "$PEER"
[ -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ] || { echo "setup_peers: $SDIST has no vendor/llama.cpp" >&2; exit 1; }
ln -sfn ../../build/bin "$SRC/llama_cpp/lib"   # where the bindings look for libllama.so

# 3. configure and build only the targets needed
echo "setup_peers: configuring llama.cpp (${FLAGS[*]})" >&2
cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" "${FLAGS[@]}" >"$PEER/configure.log" 2>&1 ||
  { tail -40 "$PEER/configure.log" >&2; echo "setup_peers: cmake configure failed (log: $PEER/configure.log)" >&2; exit 1; }
echo "setup_peers: building ${TARGETS[*]} with -j${JOBS:-$(nproc)} (log: $PEER/build.log)" >&2
cmake --build "$BUILD" -j"${JOBS:-$(nproc)}" --target "${TARGETS[@]}" >"$PEER/build.log" 2>&1 ||
  { tail -40 "$PEER/build.log" >&2; echo "setup_peers: build failed (log: $PEER/build.log)" >&2; exit 1; }
if [ "$LIB" = 1 ]; then
  lib_ok || { echo "setup_peers: build finished but $BIN/libllama.so is missing" >&2; exit 1; }
else
  artifacts_ok || { echo "setup_peers: build finished but an artifact is missing under $BIN" >&2; exit 1; }
  "$BIN/llama-bench" --help >/dev/null 2>&1 || { echo "setup_peers: $BIN/llama-bench does not run" >&2; exit 1; }
fi

echo "$WANT" >"$STAMP"
if [ "$AMX" = OFF ]; then : >"$AMX_OFF_MARK"; else rm -f "$AMX_OFF_MARK"; fi
secs=$(( $(date +%s) - start ))
echo "$secs" >"$PEER/build-seconds"
say "setup_peers: built in $secs s"
[ "$PYTHON" = 1 ] && make_venv
report
