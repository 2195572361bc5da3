"""What an exported tokenizer's tokens know, measured at the end of the training recipe.

On a corpus whose ``<split>/metadata.jsonl`` knows every word's speaker, prosody
label and time span (the embedded corpus), the recipe adds to
``test_results.json``:

* ``align_boundary_error_s``: the median absolute error, in seconds, of the word
  starts and ends that DTW finds in the aggregator's attention
  (:func:`taste_toolkit.alignment.word_timestamps`) against the metadata;
* ``probe_speaker_acc``, ``probe_prosody_bacc``, ``probe_log_duration_r2``: linear
  probes (:mod:`taste_toolkit.evaluation.probe`) on the quantized word tokens the
  tokenizer exports, fit on training-split words (utterances taken at a stride,
  so every voice is in) and scored on the test split;
* the same probes on the oracle (the value tap's mean over each word's true span)
  as ``probe_oracle_*``, and the text-only guesses (``probe_speaker_chance``,
  ``probe_prosody_chance``, ``probe_text_only_log_duration_r2``: each word's mean
  training duration), side by side.

Everything reads the exported folder through ``TasteTokenizer.from_pretrained``, as a
user would.
"""

import logging
import os

import numpy as np

from taste_toolkit.errors import InputError

logger = logging.getLogger(__name__)


def spread_rows(rows, count):
    """``count`` rows taken at an even stride (all speakers of a speaker-sorted list), or all."""
    if not count or count >= len(rows):
        return list(rows)
    idx = np.linspace(0, len(rows) - 1, count).round().astype(int)
    return [rows[i] for i in sorted(set(idx.tolist()))]


def boundary_errors(tok, rows):
    """Absolute start and end errors (s) of the aggregator's DTW word boundaries.

    Returns
    -------
    errors : list of float
        Two per word (start, end) over the usable utterances.
    skipped : int
        Utterances whose words differ from the metadata's or that have no alignment.
    """
    from taste_toolkit.alignment import word_timestamps
    from taste_toolkit.audio import read_audio

    errors, skipped = [], 0
    for row in rows:
        wav, sr = read_audio(row["path"])
        tokens = tok.encode(wav, sr, " ".join(row["words"]), return_alignment=True)
        if tokens.alignment is None:
            return [], len(rows)  # this aggregator has no attention: nothing to measure
        try:
            words = word_timestamps(tokens)
        except InputError:
            skipped += 1
            continue
        if len(words) != len(row["words"]):
            skipped += 1
            continue
        for (_, start, end), ref_start, ref_end in zip(words, row["word_start"], row["word_end"]):
            errors += [abs(start - ref_start), abs(end - ref_end)]
    return errors, skipped


def measure_exported_tokenizer(folder, corpus, train_split="train", test_split="test", train_utterances=240):
    """Alignment error and probes of an exported tokenizer (keys in the module docstring).

    Returns an empty dict, with a log line, when the corpus has no word-level
    metadata for these splits.
    """
    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.evaluation.probe import collect, read_metadata, run_probes

    paths = [os.path.join(corpus, s, "metadata.jsonl") for s in (train_split, test_split)]
    if not all(os.path.isfile(p) for p in paths):
        logger.info("No word-level metadata in %s (%s, %s): alignment error and probes skipped.",
                    corpus, train_split, test_split)
        return {}
    tok = TasteTokenizer.from_pretrained(folder)
    train_rows = spread_rows(read_metadata(os.path.join(corpus, train_split)), train_utterances)
    test_rows = read_metadata(os.path.join(corpus, test_split))
    out = {}
    errors, skipped = boundary_errors(tok, test_rows)
    if errors:
        out["align_boundary_error_s"] = round(float(np.median(errors)), 4)
        out["align_boundary_mean_error_s"] = round(float(np.mean(errors)), 4)
        out["align_skipped_utterances"] = skipped
    probes = run_probes(collect(tok, train_rows), collect(tok, test_rows))
    for feature, prefix in (("tokens", "probe_"), ("oracle_values", "probe_oracle_")):
        if feature in probes:
            r = probes[feature]
            out[prefix + "speaker_acc"] = r["speaker_accuracy"]
            out[prefix + "prosody_bacc"] = r["prosody_balanced_accuracy"]
            out[prefix + "log_duration_r2"] = r["duration_r2"]
    b = probes["baselines"]
    out["probe_speaker_chance"] = b["speaker_chance"]
    out["probe_prosody_chance"] = b["prosody_chance"]
    out["probe_text_only_log_duration_r2"] = b["text_only_duration_r2"]
    out["probe_words_train"], out["probe_words_test"] = probes["words"]["train"], probes["words"]["test"]
    return out
