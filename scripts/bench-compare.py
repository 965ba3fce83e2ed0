#!/usr/bin/env python3
"""Old/new comparison of hiredis-bench --json reports (scripts/bench-compare.sh runs the builds).

    python3 scripts/bench-compare.py --new new-1.json new-2.json … --old old-1.json old-2.json …

Per shape (matched by name): the median over runs of each side's median, new/old, and the
spread of new/old over the runs taken in turn (new-1 with old-1, …; those ran minutes
apart on the same machine), and each side's ratio to its reference (redis-benchmark in the
same run), which a busy machine moves less. Shapes in one build only are listed as such.
Allocations per operation are compared when both reports have them. Standard library only.
"""
import argparse
import json
import statistics
import sys


def load(paths):
    reports = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            reports.append(json.load(handle))
    return reports


def by_shape(reports):
    """shape → list (one per run) of figures dicts, in the first report's order."""
    shapes = {}
    for report in reports:
        for figures in report.get("figures", []):
            shapes.setdefault(figures["shape"], []).append(figures)
    return shapes


def fmt(value):
    if value is None:
        return "—"
    if value >= 1000:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def against(figures):
    """The ratio that compares like with like in the same run: to the reference, or to the
    best (steps), or to the single node."""
    values = [f.get("ratio") or f.get("ratioToBest") or f.get("ratioToBaseline") for f in figures]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new", nargs="+", required=True, help="reports of the new build, in run order")
    parser.add_argument("--old", nargs="+", required=True, help="reports of the old build, in run order")
    parser.add_argument("--new-label", default="new")
    parser.add_argument("--old-label", default="old")
    args = parser.parse_args()
    new_reports, old_reports = load(args.new), load(args.old)
    new, old = by_shape(new_reports), by_shape(old_reports)

    print(f"old: {args.old_label}, {len(old_reports)} runs; new: {args.new_label}, {len(new_reports)} runs")
    if new_reports:
        print(new_reports[0].get("machine", ""))
    print()
    print("| shape | old (median) | new (median) | new/old | new/old per pair (min–max) | vs reference, old → new |")
    print("|---|---|---|---|---|---|")
    for shape in [s for s in new if s in old]:
        n, o = new[shape], old[shape]
        new_median = statistics.median(f["median"] for f in n)
        old_median = statistics.median(f["median"] for f in o)
        pairs = [a["median"] / b["median"] for a, b in zip(n, o) if b["median"]]
        spread = f"{min(pairs):.2f}–{max(pairs):.2f}" if pairs else "—"
        ratio = f"{new_median / old_median:.2f}" if old_median else "—"
        unit = n[0].get("unit", "")
        reference = f"{fmt(against(o))} → {fmt(against(n))}" if against(o) is not None or against(n) is not None else "—"
        print(f"| {shape} | {fmt(old_median)} {unit} | {fmt(new_median)} {unit} | {ratio} | {spread} | {reference} |")

    only_new = [s for s in new if s not in old]
    only_old = [s for s in old if s not in new]
    if only_new:
        print()
        print("in the new build only: " + "; ".join(
            f"{s} ({fmt(statistics.median(f['median'] for f in new[s]))} {new[s][0].get('unit', '')})" for s in only_new))
    if only_old:
        print()
        print("in the old build only: " + "; ".join(
            f"{s} ({fmt(statistics.median(f['median'] for f in old[s]))} {old[s][0].get('unit', '')})" for s in only_old))

    def allocations(reports):
        table = {}
        for report in reports:
            for figure in report.get("allocations") or []:
                table.setdefault(figure["name"], []).append(figure["perOperation"])
        return {name: statistics.median(values) for name, values in table.items()}

    new_allocations, old_allocations = allocations(new_reports), allocations(old_reports)
    if new_allocations or old_allocations:
        print()
        print("allocations per operation, old → new:")
        for name in list(new_allocations) + [n for n in old_allocations if n not in new_allocations]:
            print(f"  {name}: {fmt(old_allocations.get(name))} → {fmt(new_allocations.get(name))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
