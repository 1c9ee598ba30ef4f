#!/usr/bin/env python3
"""Pairs eddy's keyed-state figures with the Flink anchor's and prints the table of
benches/README.md.

    benches/compare_with_flink.py ANCHOR_JSON [--criterion DIR]

ANCHOR_JSON is the anchor's report (RESULT_JSON=... anchors/flink/run.sh point). --criterion is
criterion's output of `cargo bench --bench keyed_state` (default target/criterion, or
$CARGO_TARGET_DIR/criterion). Each criterion group there is named after an anchor workload; its
median time per iteration and its element count give operations (or entries) per second.

The goals: every operation at least 2x Flink's heap backend and 10x its RocksDB backend.
"""

import argparse
import json
import os
import sys

HEAP_GOAL = 2.0
ROCKS_GOAL = 10.0

POINT = [
    "valueUpdate", "valueAdd", "valueGet",
    "listAdd", "listGet", "listUpdate",
    "mapUpdate", "mapGet", "mapContains", "mapIterator", "mapRemove", "mapAdd",
]
EXTRA = ["mapIsEmpty", "mapKeys", "mapValues"]


def anchor_results(path):
    with open(path) as f:
        report = json.load(f)
    out = {}
    for r in report["results"]:
        out[(r["backend"], r["workload"], r["metric"])] = (r["value"], r.get("detail") or {})
    return report, out


def criterion_rate(root, group, function):
    """Elements per second from criterion's median time per iteration, or None."""
    base = os.path.join(root, group, function, "new")
    try:
        with open(os.path.join(base, "estimates.json")) as f:
            ns = json.load(f)["median"]["point_estimate"]
        with open(os.path.join(base, "benchmark.json")) as f:
            elements = (json.load(f).get("throughput") or {}).get("Elements", 1)
    except (OSError, KeyError, ValueError):
        return None
    return elements * 1e9 / ns if ns > 0 else None


def fmt_rate(v):
    return "-" if v is None else f"{v / 1e6:.2f} M"


def fmt_ratio(ours, theirs, goal):
    if ours is None or not theirs:
        return "-"
    r = ours / theirs
    text = f"{r:.2f}x" if r < 100 else f"{r:.0f}x"
    return text if r >= goal else f"**{text}** (miss)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("anchor")
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap.add_argument("--criterion", default=os.path.join(target, "criterion"))
    args = ap.parse_args()

    report, anchor = anchor_results(args.anchor)
    host = report.get("host", {})
    jvm = report.get("child_jvm", {})
    print(f"Flink anchor: {report.get('started_at', '?')}, {host.get('cpus', '?')} CPUs "
          f"({host.get('cpu_model', '?')}), Java {jvm.get('java_version', '?')}")
    print()
    print("| workload | unit | eddy | HashMap | Flink heap | Flink RocksDB "
          f"| eddy / heap (goal {HEAP_GOAL:g}x) | eddy / RocksDB (goal {ROCKS_GOAL:g}x) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    missing = []
    for w in POINT:
        ours = criterion_rate(args.criterion, w, "eddy")
        base = criterion_rate(args.criterion, w, "hashmap")
        heap, heap_detail = anchor.get(("heap", w, "throughput"), (None, {}))
        rocks, _ = anchor.get(("rocksdb", w, "throughput"), (None, {}))
        if ours is None:
            missing.append(w)
        unit = "entries/s" if w == "mapIterator" else "ops/s"
        if heap_detail.get("stopped_early"):
            unit += " (heap ran out of entries)"
        print(f"| {w} | {unit} | {fmt_rate(ours)} | {fmt_rate(base)} | {fmt_rate(heap)} | {fmt_rate(rocks)} "
              f"| {fmt_ratio(ours, heap, HEAP_GOAL)} | {fmt_ratio(ours, rocks, ROCKS_GOAL)} |")
    print()
    print("| workload (no anchor figure) | unit | eddy | HashMap |")
    print("|---|---|---:|---:|")
    for w in EXTRA:
        ours = criterion_rate(args.criterion, w, "eddy")
        base = criterion_rate(args.criterion, w, "hashmap")
        unit = "ops/s" if w == "mapIsEmpty" else "entries/s"
        print(f"| {w} | {unit} | {fmt_rate(ours)} | {fmt_rate(base)} |")
    if missing:
        print(f"\nno criterion figures for: {', '.join(missing)} (run `cargo bench --bench keyed_state`)",
              file=sys.stderr)


if __name__ == "__main__":
    main()
