#!/usr/bin/env python3
"""Markdown tables of RESULTS.md from the small JSON results kept next to it.

Each reported run keeps its ``test_results.json`` (a few KB) under
``recipes/librispeech/measured/<session>/<run>.json``; the tables in RESULTS.md are
printed by this script, so a rerun can be diffed against them::

    python recipes/librispeech/results_table.py recipes/librispeech/measured/session6
    python recipes/librispeech/results_table.py results/taste/1986/test_results.json   # any run

Columns are the keys named by ``--keys`` (default: the tokenizer measurements of
issue 16); a key a run does not have prints as ``-``.
"""

import argparse
import glob
import json
import os
import sys

DEFAULT_KEYS = [
    "unit_top1", "unit_top5", "rvq_perplexity_l0", "rvq_perplexity_l1", "rvq_perplexity_l2", "rvq_perplexity_l3",
    "align_boundary_error_s", "probe_speaker_acc", "probe_prosody_bacc", "probe_log_duration_r2",
]


def load_runs(paths, split="test"):
    """``[(name, results of split)]`` from JSON files or folders of them, sorted by name."""
    files = []
    for path in paths:
        files += sorted(glob.glob(os.path.join(path, "*.json"))) if os.path.isdir(path) else [path]
    if not files:
        raise SystemExit(f"no JSON results found in {paths}")
    runs = []
    for file in files:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
        if split not in data:
            raise SystemExit(f"{file} has no {split!r} split (has {sorted(data)})")
        name = os.path.splitext(os.path.basename(file))[0]
        if name == "test_results":  # results/<experiment>/<seed>/test_results.json
            seed_dir = os.path.dirname(os.path.abspath(file))
            name = f"{os.path.basename(os.path.dirname(seed_dir))}/{os.path.basename(seed_dir)}"
        runs.append((name, data[split]))
    return runs


def markdown(runs, keys):
    """One row per run, one column per key."""
    def cell(value):
        if value is None:
            return "-"
        return f"{value:.3f}" if isinstance(value, float) and abs(value) < 10 else f"{value}"

    lines = ["| run | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, stats in runs:
        lines.append(f"| {name} | " + " | ".join(cell(stats.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="JSON result files or folders of them")
    parser.add_argument("--split", default="test")
    parser.add_argument("--keys", default=",".join(DEFAULT_KEYS), help="comma-separated columns")
    args = parser.parse_args(argv)
    print(markdown(load_runs(args.paths, args.split), [k for k in args.keys.split(",") if k]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
