"""Word of every speech unit, from a corpus' word times (for ``word_pointer_transformer``).

The embedded corpus records each word's start and end (``metadata.jsonl`` of a
split, written by :mod:`taste_toolkit.data.synthetic_corpus`). A unit at frame
``t`` (rate ``f``) covers ``[t / f, (t + 1) / f)``; it belongs to the last word
that has started by its centre, and leading silence belongs to the first word.
So the word index never decreases along the utterance.

Corpora without word times (LibriSpeech as distributed) need a forced
alignment first (e.g. Montreal Forced Aligner output written as ``word_start``
lists in a ``metadata.jsonl``).
"""

import json
import os

import torch

from taste_toolkit.errors import DataPreparationError


def read_word_starts(metadata_path):
    """``{utterance id: [start seconds of each word]}`` from a ``metadata.jsonl``."""
    if not os.path.isfile(metadata_path):
        raise DataPreparationError(
            f"No word times at {metadata_path}: the word_pointer_transformer decoder trains on the word "
            "of every unit. Use the embedded corpus (it records word times), write a metadata.jsonl with "
            "'id' and 'word_start' per utterance from a forced aligner, or use decoder_name: unit_transformer."
        )
    starts = {}
    with open(metadata_path) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "word_start" not in row or "id" not in row:
                raise DataPreparationError(f"{metadata_path}:{line_number} lacks 'id' or 'word_start'.")
            starts[row["id"]] = [float(s) for s in row["word_start"]]
    return starts


def unit_word_ids(word_starts, num_units, frame_rate):
    """Word index of each of ``num_units`` units at ``frame_rate`` Hz: ``(S,)`` long, non-decreasing.

    >>> unit_word_ids([0.0, 0.1, 0.35], num_units=10, frame_rate=25.0).tolist()
    [0, 0, 1, 1, 1, 1, 1, 1, 1, 2]
    """
    if not word_starts:
        raise DataPreparationError("An utterance has no word times (empty word_start).")
    centres = (torch.arange(num_units, dtype=torch.float64) + 0.5) / float(frame_rate)
    starts = torch.tensor(word_starts, dtype=torch.float64)
    ids = torch.searchsorted(starts, centres, right=True) - 1
    return ids.clamp(min=0).cummax(dim=0).values.long()


def split_word_starts(data_folder, splits):
    """``{split: {id: word starts}}`` from ``<data_folder>/<split>/metadata.jsonl``.

    A merged split (``"a+b"``, several training splits) reads each part.
    """
    out = {}
    for split in splits:
        out[split] = {}
        for part in split.split("+"):
            out[split].update(read_word_starts(os.path.join(data_folder, part, "metadata.jsonl")))
    return out
