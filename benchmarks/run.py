#!/usr/bin/env python3
"""The benchmark suite: the toolkit's fast paths against the official code's slow ones.

One run measures, on the device present (CUDA when available, else CPU):

1. encode throughput (real-time factor) of the ``whisper`` encoder plugin, unpadded
   vs the official 30-s padded window, at large-v3 and tiny geometry, 2-30 s,
   batch 1/4/16; plus (1b) how much the unpadded taps differ from the padded ones
   with the real Whisper tiny.en on real speech;
2. the ``cross_attention`` aggregator with SDPA vs eager attention;
3. unit-decoder generation of 100 and 500 units, KV cache vs full recompute;
4. 50-step generation of a Llama-3.2-1B-shaped backbone (TASLM's), cached vs not;
   and the TASLM-level script ``benchmarks/taslm_generation.py`` when a trained
   TASLM exists;
5. stage-1 training throughput, dynamic batching vs fixed-size padded batches;
6. peak memory of every path (columns of the table);
7. growth exponents of encode time vs utterance length and batch size.

It prints a Markdown report (machine description, table, exponents, targets) and
writes it to ``results/benchmarks/<host>-<date>.md``::

    flock /tmp/heavy.lock env OMP_NUM_THREADS=2 python benchmarks/run.py
    python benchmarks/run.py --quick          # tiny sizes, ~20 s: a smoke test
    python benchmarks/run.py --items 2,3      # a subset

Ratios are what count: on a shared machine absolute times move with the load.
"""

import argparse
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import torch  # noqa: E402

from bench_common import machine_description, markdown_table  # noqa: E402

ITEMS = ("1", "2", "3", "4", "5")

#: (description, row item prefix, setting substring, threshold, how the value is read)
TARGETS = [
    ("unpadded encode >= 3x faster than padded, 5-s utterances, large-v3 geometry", "1 encode", "large-v3 b1 5 s", 3.0),
    ("KV-cached generation >= 5x faster than recompute at 500 units", "3 unit decoder", "recipe generate 500", 5.0),
    ("dynamic batching >= 1.5x the training throughput of fixed batches", "5 stage-1 training", None, 1.5),
]


def taslm_rows(quick, log):
    """Item 4 at TASLM level via ``benchmarks/taslm_generation.py``, when a trained TASLM exists."""
    import json
    import tempfile

    from bench_common import Measurement, Row, measure

    folder = os.path.join(ROOT, "results/taslm_token/1986/taslm")
    if quick or not os.path.isfile(os.path.join(HERE, "taslm_generation.py")):
        return []
    if not os.path.isdir(folder):
        return [Row("4b TASLM generation", "trained TASLM", "recompute", "KV cache", None, None,
                    f"skipped: no trained TASLM at {os.path.relpath(folder, ROOT)}")]
    import taslm_generation

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "taslm.json")
        args = ["--taslm", folder, "--token-cache", os.path.join(ROOT, "results/prepared/taslm_tokens"),
                "--threads", str(torch.get_num_threads()), "--output", out]
        m, _ = measure(lambda: taslm_generation.main(args))
        with open(out) as f:
            res = json.load(f)
    # Seconds per generated LM position, so the ratio is the tokens/s speedup.
    slow = Measurement(1.0 / res["no_cache_tokens_per_s"], m.peak_mb, m.growth_mb, m.exact_peak)
    fast = Measurement(1.0 / res["kv_cache_tokens_per_s"], m.peak_mb, m.growth_mb, m.exact_peak)
    note = (f"trained TASLM (taslm_generation.py), {res['generated_words']} words / {res['lm_steps']} LM steps; "
            f"s per LM position; identical output: {'yes' if res['same_output'] else 'NO'}; peak memory of both runs")
    log(f"  TASLM: {res}")
    return [Row("4b TASLM generation", "trained TASLM, per LM position", "recompute", "KV cache", slow, fast, note)]


def target_lines(rows, growth):
    lines = ["| target | measured | met |", "|---|---|---|"]
    for desc, item, setting, threshold in TARGETS:
        cand = [r for r in rows if r.item == item and (setting is None or setting in r.setting) and r.ratio]
        if item.startswith("5"):
            cand = [r for r in cand if r.slow_name.startswith("fixed b")]  # the same-encoder comparison
        if not cand:
            lines.append(f"| {desc} | not measured | - |")
            continue
        ratio = cand[0].ratio
        lines.append(f"| {desc} | {ratio:.2f}x | {'yes' if ratio >= threshold else 'NO'} |")
    lengths = [g for g in growth if g["mode"] == "unpadded" and g["varies"].startswith("length")]
    if lengths:
        worst = max(g["exponent"] for g in lengths)
        desc = ", ".join(f"{g['geometry']} {g['fixed']}: {g['exponent']:.2f}" for g in lengths)
        lines.append(f"| unpadded encode time grows <= linearly with length (exponent <= 1) | {desc} "
                     f"| {'yes' if worst <= 1.0 + 0.05 else 'NO'} (max {worst:.2f}; 0.05 tolerance) |")
    else:
        lines.append("| unpadded encode time grows <= linearly with length | not measured | - |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, ~20 s)")
    parser.add_argument("--items", default=",".join(ITEMS), help="comma-separated items to run (1-5; 6-7 come with them)")
    parser.add_argument("--output", default="", help="report file (default results/benchmarks/<host>-<date>.md)")
    args = parser.parse_args(argv)
    items = [i.strip() for i in args.items.split(",") if i.strip()]
    bad = [i for i in items if i not in ITEMS]
    if bad:
        parser.error(f"unknown items {bad}; choose among {', '.join(ITEMS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    machine = machine_description()
    started = time.time()

    def log(msg):
        print(msg, flush=True)

    rows, growth, errors = [], [], []

    def run(name, fn):
        log(f"[{name}] ...")
        t0 = time.time()
        try:
            out = fn()
        except Exception as exc:  # one broken item must not lose the others' numbers
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            log(traceback.format_exc())
            return None
        log(f"[{name}] done in {time.time() - t0:.0f} s")
        return out

    if "1" in items:
        from bench_encoder import encode_benchmark, growth_rows, mode_difference

        out = run("1 encode", lambda: encode_benchmark(args.quick, log))
        if out:
            rows += out[0]
            growth = growth_rows(out[1])
        row = run("1b taps", lambda: mode_difference(args.quick, log))
        if row:
            rows.append(row)
    if "2" in items:
        from bench_models import aggregator_benchmark

        rows += run("2 aggregator", lambda: aggregator_benchmark(args.quick, log)) or []
    if "3" in items:
        from bench_models import decoder_benchmark

        rows += run("3 unit decoder", lambda: decoder_benchmark(args.quick, log)) or []
    if "4" in items:
        from bench_lm import llama_generation

        rows += run("4 generation", lambda: llama_generation(args.quick, log)) or []
        rows += run("4b TASLM", lambda: taslm_rows(args.quick, log)) or []
    if "5" in items:
        from bench_training import stage1_benchmark

        rows += run("5 stage-1 training", lambda: stage1_benchmark(args.quick, log)) or []

    from bench_encoder import growth_table

    report = [f"# Benchmarks{' (quick mode: tiny sizes, not for ratios)' if args.quick else ''}", "",
              "## Machine", ""]
    report += [f"- {k}: {v}" for k, v in machine.items()]
    report += [f"- suite wall time: {time.time() - started:.0f} s", "", "## Results", "",
               "Times are the minimum over repeats (seconds; item 5: seconds per 100 s of audio, item 4b: "
               "seconds per LM position). Peak memory: peak RSS in MB (CPU) or max allocated (CUDA) "
               "while the path ran, and in brackets its growth over the memory in use when it started.", "",
               markdown_table(rows), ""]
    if growth:
        report += ["## Cost growth (item 7)", "", growth_table(growth), ""]
    report += ["## Targets", "", target_lines(rows, growth), ""]
    if errors:
        report += ["## Errors", ""] + [f"- {e}" for e in errors] + [""]
    text = "\n".join(report)
    print("\n" + text)
    path = args.output or os.path.join(ROOT, "results", "benchmarks",
                                       f"{machine['host']}-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.md")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print(f"\nReport written to {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
