#!/usr/bin/env python3
"""Merge `kvslim eval --json` outputs of several runs (same model, texts, -c and
reference) into one table, recomputing the Pareto front (KV bytes vs mean
KL) over all schemes. Runs split across processes each repeat the reference;
the script checks that their reference perplexities agree.

usage: scripts/eval_table.py [--md] RUN1.json [RUN2.json ...]
  --md  a markdown table (scheme, B/tok, x fewer than the reference, ppl change,
        KL, top-1, passkey per length; the reference row first) for BENCHMARKS.md
"""
import json
import sys


def markdown(ref, rows, lens):
    print("| scheme | B/tok | x fewer | ppl | change | KL mean | top-1 |" + "".join(" pk@%d |" % n for n in lens))
    print("|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(lens))
    for r in [ref] + rows:
        cells = [r["scheme"] + (" (ref)" if r is ref else ""), "%.0f" % r["kv_bytes_per_token"],
                 "%.2fx" % (ref["kv_bytes_per_token"] / r["kv_bytes_per_token"]), "%.4f" % r["ppl"],
                 "-" if r is ref else "%+.2f%%" % r["ppl_change_pct"],
                 "-" if r is ref else "%.4f" % r["kl_mean"], "-" if r is ref else "%.1f%%" % (100 * r["top1"])]
        cells += ["%.0f%%" % (100 * r.get("passkey", {}).get(str(n), float("nan"))) for n in lens]
        print("| " + " | ".join(cells) + " |")


def main(paths, md=False):
    rows, refs = [], []
    for p in paths:
        with open(p) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                o = json.loads(line)
                (refs if o.get("reference") else rows).append(o)
    if not refs or not rows:
        sys.exit("eval_table.py: no reference or no scheme rows in the input")
    ppl = {round(r["ppl"], 6) for r in refs}
    if len(ppl) != 1:
        sys.exit("eval_table.py: the runs disagree on the reference perplexity: %s" % sorted(ppl))
    for a in rows:
        a["pareto"] = not any(
            b is not a and b["kv_bytes"] <= a["kv_bytes"] and b["kl_mean"] <= a["kl_mean"]
            and (b["kv_bytes"] < a["kv_bytes"] or b["kl_mean"] < a["kl_mean"]) for b in rows)
    ref = refs[0]
    lens = sorted({int(k) for r in rows + refs for k in r.get("passkey", {})})
    if md:
        return markdown(ref, rows, lens)
    print("model: %s, context %d, %d chunks, %d scored tokens; reference '%s': ppl %.4f" %
          (ref["model"], ref["ctx"], ref["chunks"], ref["scored"], ref["scheme"], ref["ppl"]))
    head = "%-26s %8s %8s %9s %8s %9s %9s %7s" % ("scheme", "B/tok", "KV MiB", "ppl", "dppl%", "KL mean", "KL p99", "top1%")
    head += "".join(" %7s" % ("pk@%d" % n) for n in lens) + " %8s" % "tok/s"
    print(head)
    for r in rows:
        line = "%-26s %8.0f %8.2f %9.4f %+8.2f %9.5f %9.4f %7.2f" % (
            ("*" if r["pareto"] else " ") + r["scheme"], r["kv_bytes_per_token"], r["kv_bytes"] / 1048576.0,
            r["ppl"], r["ppl_change_pct"], r["kl_mean"], r["kl_p99"], 100 * r["top1"])
        line += "".join(" %6.0f%%" % (100 * r["passkey"].get(str(n), float("nan"))) for n in lens)
        line += " %8.1f" % r.get("decode_tok_s", float("nan"))
        print(line)
    print("'*': Pareto front of KV bytes vs mean KL over all runs")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    md = "--md" in sys.argv[1:]
    main([a for a in sys.argv[1:] if a != "--md"], md)
