#!/usr/bin/env python3
"""Load generator for OpenAI-compatible servers: kvslim serve and, side by
side in the same run, llama.cpp's llama-server on the same model, threads,
prompts and context (BENCHMARKS.md; issue 15).

For each concurrency in --streams, that many clients each send --requests
chat streams with a shared system prompt of about --system-tokens tokens and
a question of their own (after one untimed round at that concurrency), and
both servers ignore EOS so every request generates --max-tokens; the run reports aggregate generated tokens/s
(from the servers' usage chunks) and time to first token p50/p99. Only the
Python standard library; servers bind 127.0.0.1.

  python3 scripts/bench_serve.py --streams 1,4,8,16 -t 2
  python3 scripts/bench_serve.py --no-peer --kvslim-args "--kv q4k4v"

The peer comes from scripts/setup_peers.sh (peers/llama.cpp/build/bin/llama-server).
A benchmark, not a test: run it on an otherwise idle machine.
"""
import argparse
import http.client
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches "
         "under pale morning light near the old stone bridge").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(port, proc, seconds=300):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench_serve: server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("bench_serve: server did not become healthy")


def one_stream(port, system, question, max_tokens, out):
    body = json.dumps({"model": "m", "stream": True, "stream_options": {"include_usage": True},
                       "max_tokens": max_tokens, "temperature": 0,
                       "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]})
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        out.append({"error": r.status})
        return
    ttft, n_gen, cached, buf = None, 0, 0, b""
    while True:
        chunk = r.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            if not ev.startswith(b"data: ") or ev == b"data: [DONE]":
                continue
            d = json.loads(ev[6:])
            if d.get("choices") and d["choices"][0].get("delta", {}).get("content") and ttft is None:
                ttft = time.monotonic() - t0
            if d.get("usage"):
                n_gen = d["usage"]["completion_tokens"]
                cached = (d["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    out.append({"ttft": ttft if ttft is not None else time.monotonic() - t0, "gen": n_gen, "cached": cached,
                "t": time.monotonic() - t0})


def run_level(port, n, requests, system, max_tokens):
    results, threads = [], []
    t0 = time.monotonic()
    for k in range(n):
        def client(k=k):
            for i in range(requests):
                one_stream(port, system, f"Question {k}.{i}: tell me something about the number {k * 100 + i}.",
                           max_tokens, results)
        threads.append(threading.Thread(target=client))
        threads[-1].start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    ok = [r for r in results if "error" not in r]
    ttfts = sorted(r["ttft"] for r in ok)
    p = lambda q: ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] if ttfts else float("nan")  # noqa: E731
    return {"streams": n, "requests": len(results), "errors": len(results) - len(ok),
            "tok_s": sum(r["gen"] for r in ok) / wall, "ttft_p50": statistics.median(ttfts) if ttfts else float("nan"),
            "ttft_p99": p(0.99), "cached": sum(r["cached"] for r in ok)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=os.path.join(ROOT, "models", "smollm2-135m-instruct-q4_1.gguf"))
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--streams", default="1,4,8,16")
    ap.add_argument("--requests", type=int, default=2, help="requests per client per level")
    ap.add_argument("--system-tokens", type=int, default=1024)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=2048, help="context per sequence")
    ap.add_argument("--kvslim", default=os.path.join(ROOT, "build", "kvslim"))
    ap.add_argument("--kvslim-args", default="")
    ap.add_argument("--peer", default=os.path.join(ROOT, "peers", "llama.cpp", "build", "bin", "llama-server"))
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--stop-at-eos", action="store_true",
                    help="let the model end answers early (by default both servers ignore EOS, so every request "
                         "generates --max-tokens and the tok/s compare equal work)")
    a = ap.parse_args()
    levels = [int(x) for x in a.streams.split(",")]
    system = " ".join(WORDS[i % len(WORDS)] for i in range(int(a.system_tokens * 0.8)))
    top = max(levels)
    servers = {"kvslim": [a.kvslim, "serve", "-m", a.model, "-t", str(a.threads), "-c", str(a.ctx), "--parallel",
                          str(top), "--queue", str(4 * top), "--quiet", *([] if a.stop_at_eos else ["--ignore-eos"]),
                          *shlex.split(a.kvslim_args)]}
    if not a.no_peer:
        if not os.path.exists(a.peer):
            sys.exit(f"bench_serve: {a.peer} missing: bash scripts/setup_peers.sh (or --no-peer)")
        servers["llama-server"] = [a.peer, "-m", a.model, "-t", str(a.threads), "-c", str(a.ctx * top), "-np",
                                   str(top), "--cont-batching", "--log-disable",
                                   *([] if a.stop_at_eos else ["--ignore-eos"])]
    rows = []
    for name, cmd in servers.items():
        port = free_port()
        cmd = cmd + ["--host", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_health(port, proc)
            one_stream(port, system, "warm up", 4, [])
            for n in levels:
                # one untimed round at this concurrency first, so every slot of a server
                # has met the system prompt: the timed rounds show the steady state
                run_level(port, n, 1, system, 4)
                r = run_level(port, n, a.requests, system, a.max_tokens)
                r["server"] = name
                rows.append(r)
                print(f"{name:13s} streams {n:3d}: {r['tok_s']:7.1f} tok/s  TTFT p50 {r['ttft_p50']:.3f} s "
                      f"p99 {r['ttft_p99']:.3f} s  errors {r['errors']}  cached tokens {r['cached']}", flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    if not a.no_peer:
        for n in levels:
            k = next(r for r in rows if r["server"] == "kvslim" and r["streams"] == n)
            p = next(r for r in rows if r["server"] == "llama-server" and r["streams"] == n)
            print(f"streams {n:3d}: kvslim/llama-server aggregate tok/s {k['tok_s'] / p['tok_s']:.2f}x, "
                  f"TTFT p50 {k['ttft_p50'] / p['ttft_p50']:.2f}x")


if __name__ == "__main__":
    main()
