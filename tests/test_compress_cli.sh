#!/usr/bin/env bash
# `kvslim compress` on good and bad input: bad options, a rank above the
# K/V width, calibration text too short, an architecture the retrofit cannot
# handle, -o naming the input or the calibration text, -o a symlink, fifo,
# directory or device: clear message, non-zero exit, no output file, input
# untouched. Then (unless KVS_SKIP_SLOW=1) a small real compression:
# the file loads, `info` shows latent and shared layers, and `ppl` and `run`
# work on it.
set -u
K=${BUILD:-build}/kvslim
M=models/smollm2-135m-instruct-q4_1.gguf
G=models/gemma-3-270m-q4_k_m.gguf
CAL=/usr/share/common-licenses/GPL-2
[ -x "$K" ] || { echo "test_compress_cli.sh: $K not built"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
# expect NAME EXIT PATTERN -- CMD...   (and no $tmp/out.gguf may appear on failure)
expect() {
  local name=$1 want=$2 pat=$3; shift 4
  rm -f "$tmp/out.gguf"
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  if [ "$rc" -ne "$want" ] || ! grep -qiE -- "$pat" "$tmp/out" "$tmp/err"; then
    echo "FAIL $name: exit $rc (want $want), pattern '$pat'"; sed 's/^/    /' "$tmp/err" | head -5; fail=$((fail+1))
  elif [ "$want" -ne 0 ] && [ -e "$tmp/out.gguf" ]; then
    echo "FAIL $name: failed but wrote $tmp/out.gguf"; fail=$((fail+1))
  else pass=$((pass+1)); fi
}
O="$tmp/out.gguf"
expect no-args      2 "need -m IN"              -- "$K" compress
expect help         0 "--rope-keep"             -- "$K" compress --help
expect bad-latent   2 "bad --latent"            -- "$K" compress -m x --calib y --latent q=3 -o "$O"
expect bad-rope     2 "bad --rope"              -- "$K" compress -m x --calib y --latent r=8 --rope post -o "$O"
expect both-rope    2 "exclude each other"      -- "$K" compress -m x --calib y --latent r=8 --rope pre --rope-keep 2 -o "$O"
expect nothing      2 "nothing to do"           -- "$K" compress -m x --calib y -o "$O"
expect rope-no-lat  2 "need --latent"           -- "$K" compress -m x --calib y --rope-keep 2 -o "$O"
expect no-model     1 "cannot|no such"          -- "$K" compress -m /nonexistent.gguf --calib "$CAL" --latent r=8 -o "$O"
# -o must be a regular file (or nothing yet) and none of the inputs: refused
# before any work (-m need not exist), the path left as it was. /dev/null
# would be replaced when run as root.
printf 'calibration text\n' > "$tmp/cal.txt"; ln "$tmp/cal.txt" "$tmp/cal-hard.txt"
printf 'keep me\n' > "$tmp/victim"; ln -s "$tmp/victim" "$tmp/link.gguf"
mkfifo "$tmp/fifo.gguf"; mkdir "$tmp/dir.gguf"
expect out-is-calib 2 "calibration text.*refusing to overwrite" -- "$K" compress -m x --calib "$tmp/cal.txt" --latent r=8 -o "$tmp/cal.txt"
expect out-calib-hl 2 "calibration text.*refusing to overwrite" -- "$K" compress -m x --calib "$CAL" --calib "$tmp/cal.txt" --latent r=8 -o "$tmp/cal-hard.txt"
expect out-is-cache 2 "same file"               -- "$K" compress -m x --calib-cache "$O" --latent r=8 -o "$O"
expect out-symlink  1 "symbolic link"           -- "$K" compress -m x --calib "$CAL" --latent r=8 -o "$tmp/link.gguf"
expect out-fifo     1 "fifo"                    -- "$K" compress -m x --calib "$CAL" --latent r=8 -o "$tmp/fifo.gguf"
expect out-dir      1 "directory"               -- "$K" compress -m x --calib "$CAL" --latent r=8 -o "$tmp/dir.gguf"
expect out-devnull  1 "device"                  -- "$K" compress -m x --calib "$CAL" --latent r=8 -o /dev/null
if [ -L "$tmp/link.gguf" ] && [ -p "$tmp/fifo.gguf" ] && [ -d "$tmp/dir.gguf" ] && [ -c /dev/null ] &&
   [ "$(cat "$tmp/victim")" = "keep me" ] && [ "$(cat "$tmp/cal.txt")" = "calibration text" ]; then pass=$((pass+1))
else echo "FAIL a refused -o path changed"; fail=$((fail+1)); fi
if [ -f "$M" ]; then
  sum=$(cksum < "$M")
  expect same-file  2 "refusing to overwrite"   -- "$K" compress -m "$M" --calib "$CAL" --latent r=64 -o "$M"
  ln -s "$(realpath "$M")" "$tmp/alias.gguf"
  expect same-alias 2 "refusing to overwrite"   -- "$K" compress -m "$M" --calib "$CAL" --latent r=64 -o "$tmp/alias.gguf"
  expect big-rank   1 "rank larger than"        -- "$K" compress -m "$M" --calib "$CAL" --latent r=200 -o "$O"
  expect big-keep   1 "rotary pairs"            -- "$K" compress -m "$M" --calib "$CAL" --latent r=64 --rope-keep 40 -o "$O"
  expect big-share  1 "only 30 layers"          -- "$K" compress -m "$M" --calib "$CAL" --share 30 -o "$O"
  expect bad-kv     2 "latent rows take"        -- "$K" compress -m "$M" --calib "$CAL" --latent r=64 --kv q4k4v -o "$O"
  expect bad-rule   1 "cannot use"              -- "$K" compress -m "$M" --calib "$CAL" --kv bogus -o "$O"
  printf 'Far too short for calibration.' > "$tmp/short.txt"
  expect short-cal  1 "calibration text has [0-9]+ tokens" -- "$K" compress -m "$M" --calib "$tmp/short.txt" --latent r=64 -o "$O"
  expect no-cal     1 "cannot open"             -- "$K" compress -m "$M" --calib /nonexistent.txt --latent r=64 -o "$O"
  [ "$(cksum < "$M")" = "$sum" ] && pass=$((pass+1)) || { echo "FAIL input changed"; fail=$((fail+1)); }
  if [ "${KVS_SKIP_SLOW:-0}" != 1 ] && [ -f "$CAL" ]; then
    G2="$tmp/good.gguf"   # expect removes out.gguf before each case
    expect compress-ok 0 "wrote"              -- "$K" compress -m "$M" --calib "$CAL" --calib-tokens 512 --calib-ctx 256 --latent r=64 --share 2 -t 2 -o "$G2"
    if [ -f "$G2" ]; then
      expect info-latent 0 "latent 64\+64"    -- "$K" info -m "$G2"
      expect info-shared 0 "shared<-"         -- "$K" info -m "$G2"
      # plan reads the kvslim.* keys: same bytes per token as info / the allocator
      expect plan-latent 0 "latent 64\+64"    -- "$K" plan -m "$G2" --ctx 4k
      bi=$("$K" info -m "$G2" | sed -n 's/^KV cache: *\([0-9]*\) bytes\/token.*/\1/p')
      bp=$("$K" plan -m "$G2" --ctx 4k | sed -n 's/^KV *\[base\] \([0-9]*\) bytes\/token.*/\1/p')
      if [ -n "$bi" ] && [ "$bi" = "$bp" ]; then pass=$((pass+1)); else echo "FAIL plan/info bytes: info '$bi' plan '$bp'"; fail=$((fail+1)); fi
      expect run-latent  0 "generated: 8 tokens" -- "$K" run -m "$G2" -p "Once upon a time" -n 8 --temp 0 --ignore-eos -t 2
      head -c 6000 /usr/share/common-licenses/GPL-3 > "$tmp/eval.txt"
      expect ppl-latent  0 "perplexity: [0-9]" -- "$K" ppl -m "$G2" -f "$tmp/eval.txt" -c 256 --chunks 1 -t 2
    else
      echo "FAIL compress-ok wrote no file"; fail=$((fail+1))
    fi
  fi
else
  echo "skip compress model cases: $M absent"
fi
# an architecture the retrofit cannot handle (MLA already latent; Gemma 4 KV sharing)
for f in tests/data/deepseek2_a.gguf tests/data/gemma4_tiny.gguf; do
  [ -f "$f" ] && expect "arch-$(basename "$f" .gguf)" 1 "cannot be retrofitted" -- "$K" compress -m "$f" --calib "$CAL" --latent r=8 -o "$O"
done
if [ -f "$G" ]; then
  expect gemma-rank 1 "rank larger than"        -- "$K" compress -m "$G" --calib "$CAL" --latent r=512 -o "$O"
  if [ "${KVS_SKIP_SLOW:-0}" != 1 ]; then
    # Gemma 3: the 3 global layers become latent, the 15 sliding ones keep their windows
    G3="$tmp/gemma.gguf"
    expect gemma-ok   0 "keeps its window cache" -- "$K" compress -m "$G" --calib "$CAL" --calib-tokens 512 --calib-ctx 512 --latent r=64 -t 2 -o "$G3"
    [ -f "$G3" ] && expect gemma-plan 0 "latent 64\+64" -- "$K" plan -m "$G3" --ctx 4k
  fi
fi
echo "compress cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
