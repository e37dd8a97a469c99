#!/usr/bin/env python3
"""Markdown tables from `pas models eval --json` output (for docs/benchmarks.md).

    scripts/eval-table.py docs/bench/eval-shared-traces.json
"""
import json
import statistics
import sys


def main(path):
    doc = json.load(open(path))
    series = doc["series"]
    models = [m["model"] for m in series[0]["models"]]
    print("| trace | steps | " + " | ".join(models) + " |")
    print("|---|---:|" + "---:|" * len(models))
    for s in series:
        scores = {m["model"]: m for m in s["models"]}
        ok = [m for m in s["models"] if "error" not in m]
        best = min(ok, key=lambda m: m["mase"])["model"] if ok else None
        cells = []
        for name in models:
            m = scores[name]
            if "error" in m:
                cells.append("failed")
            else:
                cell = f"{m['mase']:.3f}"
                cells.append(f"**{cell}**" if name == best else cell)
        print(f"| {s['name']} | {s['gaps']['steps']} | " + " | ".join(cells) + " |")
    print()
    print("| model | mean MASE | median MASE | traces | best on | mean sMAPE % | under-prediction % | upper coverage % |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for summary in doc["summary"]:
        name = summary["model"]
        scored = [m for s in series for m in s["models"] if m["model"] == name and "error" not in m]
        smape = sum(m["smape"] for m in scored) / len(scored)
        under = 100 * sum(m["under_rate"] for m in scored) / len(scored)
        cov = [m["coverage"] for m in scored if m.get("coverage") is not None]
        coverage = f"{100 * sum(cov) / len(cov):.1f}" if cov else "–"
        median = statistics.median(m["mase"] for m in scored)
        print(f"| {name} | {summary['mean_mase']:.3f} | {median:.3f} | {summary['series']} | {summary['best']} | {smape:.2f} | {under:.1f} | {coverage} |")
    won = doc["lstm_beats_lstm_seed"]
    if won["of"]:
        print()
        print(f"`lstm` beats `lstm-seed` on {won['won']} of {won['of']} traces ({100 * won['won'] / won['of']:.0f} %).")


if __name__ == "__main__":
    main(sys.argv[1])
