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
    python recipes/librispeech/ablation_table.py --evaluate   # + the reconstruction metrics of every row

``--evaluate`` scores every row's exported tokenizer (and the original audio and the
units topline) with the evaluation harness of ``taste evaluate``, taking the data and
metrics from ``--eval-config`` (default ``hparams/evaluate/reconstruction.yaml``);
the summary goes to ``<output>/ablation_eval/summary.md``.
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


def evaluate_rows(names, seed, output, eval_config, limit=None):
    """Score each row's exported tokenizer with the evaluation harness; returns the summary path."""
    from taste_toolkit.evaluation import Evaluation, load_config, validate_config

    tokenizers = {n: os.path.join(ROOT, "results", n, str(seed), "tokenizer") for n in names}
    present = {n: p for n, p in tokenizers.items() if os.path.isdir(p)}
    if not present:
        raise SystemExit(f"No exported tokenizer among {sorted(tokenizers.values())}: train the rows first.")
    systems = [{"name": "original", "type": "original"},
               {"name": "units_topline", "type": "units_topline", "options": {"tokenizer": next(iter(present.values()))}}]
    systems += [{"name": n, "type": "tokenizer", "options": {"path": p}} for n, p in present.items()]
    folder = os.path.join(output, "ablation_eval")
    config = load_config(eval_config, {"output_folder": folder, "limit": limit})
    config = validate_config({**config, "systems": systems})
    Evaluation(config).run()
    return os.path.join(folder, "summary.md")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="Run only these rows (names: %s)." % ", ".join(r[0] for r in ROWS))
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument("--output", default=os.path.join(ROOT, "results"))
    parser.add_argument("--evaluate", action="store_true",
                        help="Also score every row's exported tokenizer with the evaluation harness.")
    parser.add_argument("--eval-config", default=os.path.join(ROOT, "hparams", "evaluate", "reconstruction.yaml"),
                        help="Evaluation YAML giving the data and metrics for --evaluate (its systems are replaced).")
    parser.add_argument("--eval-limit", type=int, default=None, help="First N utterances for --evaluate.")
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
    if args.evaluate:
        summary = evaluate_rows(list(results), args.seed, args.output, args.eval_config, args.eval_limit)
        with open(summary, encoding="utf-8") as f:
            print(f.read())


if __name__ == "__main__":
    main()
