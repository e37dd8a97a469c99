#!/usr/bin/env python3
"""Markdown tables from `pas models eval --json` output (for docs/benchmarks.md).

    scripts/eval-table.py docs/bench/eval-shared-traces.json
    scripts/eval-table.py --by-family docs/bench/eval-leave-family-out.json
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


def by_family(path):
    """Mean and median MASE per model for each family of traces (the name
    before its first `-`), then over all: the leave-one-family-out table."""
    doc = json.load(open(path))
    series = doc["series"]
    models = [m["model"] for m in series[0]["models"]]
    families = sorted({s["name"].split("-")[0] for s in series})
    print("| family (traces) | " + " | ".join(models) + " |")
    print("|---|" + "---:|" * len(models))
    for family in families + [None]:
        chosen = [s for s in series if family is None or s["name"].split("-")[0] == family]
        cells = []
        means = {}
        for name in models:
            scores = [m["mase"] for s in chosen for m in s["models"] if m["model"] == name and "error" not in m]
            means[name] = (statistics.mean(scores), statistics.median(scores)) if scores else None
        best = min((v[0], k) for k, v in means.items() if v)[1]
        for name in models:
            v = means[name]
            cell = f"{v[0]:.3f} / {v[1]:.3f}" if v else "failed"
            cells.append(f"**{cell}**" if name == best else cell)
        label = f"{family} ({len(chosen)})" if family else f"all ({len(chosen)})"
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if sys.argv[1] == "--by-family":
        by_family(sys.argv[2])
    else:
        main(sys.argv[1])
