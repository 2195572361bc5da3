#!/usr/bin/env python3
"""Paired comparison of ``vocoder_topline.py`` runs on the same test utterances.

Each JSON written by ``recipes/librispeech/vocoder_topline.py`` keeps the ASR
hypothesis of every utterance (``hypotheses[condition][id]``) and the
references. This script scores every (file, condition) per utterance with
:func:`taste_toolkit.metrics.asr.word_error_rate` (the same normalization as the
topline's corpus WER) and compares each with the first one by a paired
bootstrap over the utterances (:func:`taste_toolkit.evaluation.bootstrap.paired_bootstrap`,
weighted by reference words, so a row's mean is its corpus WER)::

    python recipes/librispeech/compare_toplines.py \\
        recipes/librispeech/measured/session11/vocoder_topline/base.json \\
        recipes/librispeech/measured/session11/vocoder_topline/*.json

A row is ``file:condition`` (the condition defaults to ``unit_to_spec_units``).
Only utterances every row has are compared; the count is printed.
"""

import argparse
import json
import os
import sys

import numpy as np


def per_utterance(path, condition):
    """``{id: (wer, reference words)}`` of one condition of a topline JSON."""
    from taste_toolkit.metrics.asr import word_error_rate

    if not os.path.isfile(path):
        raise SystemExit(f"No topline JSON at {path!r}: give files written by vocoder_topline.py --out.")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    hyps = (data.get("hypotheses") or {}).get(condition)
    if not hyps:
        raise SystemExit(f"{path} has no hypotheses for condition {condition!r} "
                         f"(it has {sorted((data.get('hypotheses') or {}))}).")
    refs = data["references"]
    out = {}
    for uid, hyp in hyps.items():
        score = word_error_rate([refs[uid]], [hyp])
        out[uid] = (float(score["wer"]), float(score["ref_words"]))
    return out


def compare(rows, num_resamples=10000, seed=0):
    """Corpus WER of each ``(label, {id: (wer, words)})`` row and its paired bootstrap vs the first.

    Returns
    -------
    list of dict
        ``label``, ``wer`` and (from the second row on) ``difference``, ``low``, ``high``.
    int
        Number of utterances every row has.
    """
    from taste_toolkit.evaluation.bootstrap import paired_bootstrap

    common = sorted(set.intersection(*(set(scores) for _, scores in rows)))
    if not common:
        raise SystemExit("The runs share no utterance: compare runs on the same test split.")
    weights = np.array([rows[0][1][u][1] for u in common])
    values = [np.array([scores[u][0] for u in common]) for _, scores in rows]
    out = []
    for i, (label, _) in enumerate(rows):
        entry = {"label": label, "wer": float((values[i] * weights).sum() / weights.sum())}
        if i:
            result = paired_bootstrap(values[i], values[0], num_resamples=num_resamples, seed=seed, weights=weights)
            entry.update(difference=result["difference"], low=result["ci_low"], high=result["ci_high"])
        out.append(entry)
    return out, len(common)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="topline JSON files, optionally file:condition; the first is the reference")
    parser.add_argument("--num_resamples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = []
    for spec in args.runs:
        path, _, condition = spec.partition(":") if not os.path.isfile(spec) else (spec, "", "")
        rows.append((f"{os.path.basename(path)}:{condition or 'unit_to_spec_units'}",
                     per_utterance(path, condition or "unit_to_spec_units")))
    table, count = compare(rows, args.num_resamples, args.seed)
    print(f"{count} utterances in every run; paired bootstrap vs {table[0]['label']} "
          f"({args.num_resamples} resamples, seed {args.seed}, 95%)")
    print("| run | WER | difference [95% CI] |")
    print("|---|---|---|")
    for entry in table:
        diff = "reference" if "difference" not in entry else \
            f"{entry['difference']:+.3f} [{entry['low']:+.3f}, {entry['high']:+.3f}]"
        print(f"| {entry['label']} | {entry['wer']:.3f} | {diff} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
