#!/usr/bin/env python3
"""Train and test every ablation of the paper's Table 4 and write the table.

Each row is one YAML in ``hparams/`` run by ``train.py`` (in a subprocess, so runs
are independent); a row whose ``test_results.json`` exists is not retrained.
Output: ``<output>/ablation_table.md`` (and ``.json``) with the teacher-forced
unit accuracy on the held-out test split, the speech-token rate and bitrate,
next to the paper's numbers.

Usage::

    python recipes/librispeech/ablation_table.py                # embedded corpus
    python recipes/librispeech/ablation_table.py --only taste text_only
    python recipes/librispeech/ablation_table.py -- --data_folder=/data/LibriSpeech ...
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

#: name, YAML, module description, paper frequency, paper top-5 accuracy
ROWS = [
    ("encoder_only", "hparams/ablations/encoder_only.yaml", "Encoder only", "50 Hz", 0.98),
    ("no_vq", "hparams/ablations/no_vq.yaml", "Encoder + aggregator", "~3 Hz", 0.88),
    ("taste", "hparams/taste.yaml", "Encoder + aggregator + quantizer (TASTE)", "~3 Hz", 0.76),
    ("encoder_last_layer_only", "hparams/ablations/encoder_last_layer_only.yaml", "Encoder (last layer only)", "50 Hz", 0.84),
    ("last_layer_values", "hparams/ablations/last_layer_values.yaml", "Encoder + aggregator (last layer as values)", "~3 Hz", 0.78),
    ("text_only", "hparams/ablations/text_only.yaml", "Text only", "~3 Hz", 0.65),
]


def run(name, yaml_file, seed, extra):
    result = os.path.join(ROOT, "results", name, str(seed), "test_results.json")
    if os.path.exists(result):
        print(f"[{name}] done before, reusing {result}")
    else:
        cmd = [sys.executable, os.path.join(HERE, "train.py"), yaml_file, f"--seed={seed}", *extra]
        print(f"[{name}] running: {' '.join(cmd)}", flush=True)
        start = time.time()
        subprocess.run(cmd, cwd=ROOT, check=True)
        print(f"[{name}] finished in {time.time() - start:.0f} s", flush=True)
    with open(result) as f:
        return next(iter(json.load(f).values()))  # first test split


def table(results):
    lines = [
        "| Module | Token rate (measured) | Bitrate | Unit top-1 | Unit top-5 | Paper frequency | Paper top-5 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, _, module, freq, paper in ROWS:
        if name not in results:
            continue
        r = results[name]
        rate = f"{r['token_rate_hz']:.2f} Hz" if "token_rate_hz" in r else f"{r.get('text_token_rate_hz', 0):.2f} Hz (text)"
        bitrate = f"{r['bitrate_bps']:.0f} bps" if "bitrate_bps" in r else "continuous" if "token_rate_hz" in r else "0"
        lines.append(
            f"| {module} | {rate} | {bitrate} | {r.get('unit_top1', float('nan')):.3f} | "
            f"{r.get('unit_top5', float('nan')):.3f} | {freq} | {paper:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="Run only these rows (names: %s)." % ", ".join(r[0] for r in ROWS))
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument("--output", default=os.path.join(ROOT, "results"))
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="After --: overrides passed to every train.py run.")
    args = parser.parse_args(argv)
    extra = [a for a in args.extra if a != "--"]
    unknown = set(args.only or []) - {r[0] for r in ROWS}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; choose from {[r[0] for r in ROWS]}")
    results = {}
    for name, yaml_file, *_ in ROWS:
        if args.only and name not in args.only:
            continue
        results[name] = run(name, yaml_file, args.seed, extra)
    text = table(results)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "ablation_table.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.output, "ablation_table.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(text)


if __name__ == "__main__":
    main()
