#!/usr/bin/env python3
"""How much of the corpus' prosody labels do the prosody-supervision descriptors hold?

The same linear probes as the recipe's token probes (:mod:`taste_toolkit.evaluation.probe`:
logistic regression, balanced accuracy over the prosody labels, speaker accuracy), fit
on training-split words and scored on the test split, but on the four per-word
descriptors that ``prosody_supervision`` asks the tokens to carry (log duration, mean
log F0, voiced fraction, mean log energy; :mod:`taste_toolkit.training.prosody_supervision`),
computed from the audio and the corpus' word times:

* ``absolute``: the four as they are;
* ``utterance_relative``: the four and each minus its utterance's mean (the 8 targets
  of ``prosody_supervision_relative``);
* ``speaker_normalized``: each z-scored within its speaker (uses the speaker labels,
  so an upper bound no tokenizer target can have).

A token that carried these descriptors perfectly would score about what they score.

    python recipes/librispeech/probe_prosody_descriptors.py --corpus results/synthetic_corpus \\
        --output recipes/librispeech/measured/session14/descriptors/prosody_descriptors_probe.json
"""

import argparse
import json
import math

import numpy as np
import torch

from taste_toolkit.audio import read_audio
from taste_toolkit.data.word_alignment import unit_word_ids
from taste_toolkit.evaluation.probe import NEUTRAL, _classifier_scores, read_metadata
from taste_toolkit.training.prosody_supervision import relative_to_utterance, word_prosody_targets

SAMPLE_RATE, FRAME_RATE = 16000, 50.0


def descriptors(rows):
    """Per-word ``(absolute (N, 4), relative (N, 4))`` and ``(labels, speakers)`` over ``rows``."""
    absolute, relative, labels, speakers = [], [], [], []
    for row in rows:
        wav, sr = read_audio(row["path"])
        if sr != SAMPLE_RATE:
            raise SystemExit(f"{row['path']}: {sr} Hz, expected {SAMPLE_RATE} (the embedded corpus).")
        wav = torch.as_tensor(np.asarray(wav), dtype=torch.float32).reshape(1, -1)
        frames = int(math.ceil(wav.shape[1] / (SAMPLE_RATE / FRAME_RATE)))
        words = unit_word_ids(row["word_start"], frames, FRAME_RATE)[None]
        t, m = word_prosody_targets(wav, torch.tensor([wav.shape[1]]), words, SAMPLE_RATE, FRAME_RATE)
        rel = relative_to_utterance(t, m)[0]
        t, m = t[0], m[0]
        # A word without voiced frames has no F0: it takes its utterance's mean (relative 0).
        mean_f0 = (t[:, 1] * m[:, 1]).sum() / m[:, 1].sum().clamp(min=1)
        t[:, 1] = torch.where(m[:, 1], t[:, 1], mean_f0)
        absolute.append(t.numpy())
        relative.append(rel.numpy())
        n = len(row["words"])
        labels += [p or NEUTRAL for p in (row.get("prosody") or [None] * n)]
        speakers += [str(row["speaker"])] * n
    return np.concatenate(absolute), np.concatenate(relative), np.asarray(labels), np.asarray(speakers)


def speaker_normalized(x, speakers):
    out = x.copy()
    for s in set(speakers):
        i = speakers == s
        out[i] = (x[i] - x[i].mean(0)) / x[i].std(0).clip(min=1e-6)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="results/synthetic_corpus")
    parser.add_argument("--train_stride", type=int, default=2,
                        help="every k-th training utterance (the recipe's probes take 240 of 480 at a stride)")
    parser.add_argument("--output", default="")
    args = parser.parse_args(argv)
    train = read_metadata(f"{args.corpus}/train")[:: args.train_stride]
    test = read_metadata(f"{args.corpus}/test")
    a_abs, a_rel, a_lab, a_spk = descriptors(train)
    b_abs, b_rel, b_lab, b_spk = descriptors(test)
    features = {
        "absolute": (a_abs, b_abs),
        "utterance_relative": (np.concatenate([a_abs, a_rel], 1), np.concatenate([b_abs, b_rel], 1)),
        "speaker_normalized": (speaker_normalized(a_abs, a_spk), speaker_normalized(b_abs, b_spk)),
    }
    results = {"words": {"train": int(len(a_lab)), "test": int(len(b_lab))},
               "prosody_chance": round(1 / len(set(a_lab)), 4), "speaker_chance": round(1 / len(set(a_spk)), 4)}
    for name, (xa, xb) in features.items():
        results[name] = {
            "prosody_balanced_accuracy": round(_classifier_scores(xa, a_lab, xb, b_lab)["balanced_accuracy"], 4),
            "speaker_accuracy": round(_classifier_scores(xa, a_spk, xb, b_spk)["accuracy"], 4),
        }
        print(f"{name:20s} prosody bal. acc. {results[name]['prosody_balanced_accuracy']:.3f}  "
              f"speaker acc. {results[name]['speaker_accuracy']:.3f}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
