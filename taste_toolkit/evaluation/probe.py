"""What do the speech tokens know? Linear probes on per-word vectors.

TASTE's claim is that each word's speech token carries what the transcript does
not: who speaks and how the word is said. On a corpus whose per-word facts are
known (the embedded corpus' ``metadata.jsonl``: speaker, prosody label, word
start/end), this module fits linear probes on

* ``tokens``: the tokenizer's speech vector of each word (``z_hat``, or the
  continuous vector of a no-VQ model; the mean over a word's sub-word tokens
  when the model works per text token), and
* ``oracle_keys`` / ``oracle_values``: the mean of the frozen encoder's two taps
  inside the word's true time span, i.e. what an aggregator that attended
  perfectly would pool (the ceiling of the aggregator),
* ``attended_values``: the value tap pooled with the aggregator's own alignment
  attention (its alignment heads, read at the position that predicts each
  token): what the aggregator's attention selects, before its residual stream
  and feed-forward layers mix it with the text,

and reports, on held-out utterances, speaker accuracy, prosody-label balanced
accuracy (chance = 1 / number of labels) and the R^2 of the log word duration,
next to a text-only baseline for the duration (each word's mean training
duration: what the transcript alone predicts). A token that is far below its
oracle has lost information in the aggregator or the quantizer; a token close
to its oracle that still does not help the unit decoder points at the decoder.

Entry point: ``recipes/librispeech/probe_tokens.py``.
"""

import json
import math
import os
from collections import defaultdict

import numpy as np
import torch

from taste_toolkit.errors import InputError, MissingResourceError

#: Label for words without a prosody modification in the corpus metadata.
NEUTRAL = "none"


def read_metadata(folder, limit=0):
    """Rows of ``<folder>/metadata.jsonl`` that have per-word times, with their audio paths resolved."""
    path = os.path.join(folder, "metadata.jsonl")
    if not os.path.isfile(path):
        raise MissingResourceError(f"{path} not found: probes need the embedded corpus' metadata "
                                   "(python recipes/librispeech/train.py hparams/taste.yaml makes it).")
    root = os.path.dirname(os.path.abspath(folder.rstrip("/")))
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if not all(k in row for k in ("words", "word_start", "word_end", "speaker", "audio")):
                raise InputError(f"{path}: row {row.get('id')!r} lacks words/word_start/word_end/speaker/audio.")
            row["path"] = row["audio"] if os.path.isabs(row["audio"]) else os.path.join(root, row["audio"])
            rows.append(row)
            if limit and len(rows) >= limit:
                break
    return rows


def _pool_span(frames, frame_rate, start, end):
    """Mean of ``frames (T, D)`` over ``[start, end)`` seconds (at least one frame)."""
    a = min(int(math.floor(start * frame_rate)), frames.shape[0] - 1)
    b = max(a + 1, min(int(math.ceil(end * frame_rate)), frames.shape[0]))
    return frames[a:b].mean(0)


@torch.no_grad()
def word_features(tok, row):
    """Per-word feature matrices of one utterance.

    Returns
    -------
    dict
        ``tokens``, ``oracle_keys``, ``oracle_values``, ``attended_values`` ->
        ``(W, D)`` float32 arrays (``tokens`` is missing for text-only models,
        ``attended_values`` for aggregators without attention weights).
    """
    from taste_toolkit.audio import prepare_waveform, read_audio

    wav, sr = read_audio(row["path"])
    text = " ".join(row["words"])
    n_words = len(row["words"])
    out = {}
    tokens = tok.encode(wav, sr, text, return_embeddings=True, return_alignment=True)
    if tokens.embeddings is not None and tokens.level in ("word", "token"):  # frame-level tokens are not per word
        emb = tokens.embeddings.float()
        if tokens.level == "word":
            words = emb
        else:  # per text token: mean over each word's sub-words
            ids = tokens.word_ids
            words = torch.stack([emb[ids == w].mean(0) for w in range(int(ids.max()) + 1)])
        if words.shape[0] != n_words:
            raise InputError(f"{row['id']}: {words.shape[0]} word vectors for {n_words} words "
                             "(the text tokenizer split words differently from the metadata).")
        out["tokens"] = words.numpy()
    encoder = tok.model.encoder
    if encoder is not None:
        x = prepare_waveform(wav, sr, target_sr=encoder.sample_rate)
        enc = tok.model.encode_audio(x[None].to(tok.device), torch.tensor([x.numel()], device=tok.device))
        t = int(enc.lengths[0])
        for name, tap in (("oracle_keys", enc.keys), ("oracle_values", enc.values)):
            frames = tap[0, :t].float().cpu()
            out[name] = torch.stack([_pool_span(frames, enc.frame_rate, s, e)
                                     for s, e in zip(row["word_start"], row["word_end"])]).numpy()
        if tokens.alignment is not None and tokens.alignment.shape[-1] == t:
            pooled = tokens.alignment.float() @ enc.values[0, :t].float().cpu()  # (N tokens, D)
            ids = tokens.word_ids
            out["attended_values"] = torch.stack([pooled[ids == w].mean(0) for w in range(n_words)]).numpy()
    return out


def collect(tok, rows, progress=True):
    """Stack features and targets over utterances: ``(features {name: (N, D)}, targets dict)``."""
    from tqdm import tqdm

    feats = defaultdict(list)
    targets = {"speaker": [], "prosody": [], "log_duration": [], "word": []}
    for row in tqdm(rows, disable=not progress, desc="probe features", unit="utt"):
        for name, value in word_features(tok, row).items():
            feats[name].append(value)
        prosody = row.get("prosody") or [None] * len(row["words"])
        for w, p, s, e in zip(row["words"], prosody, row["word_start"], row["word_end"]):
            targets["speaker"].append(str(row["speaker"]))
            targets["prosody"].append(p or NEUTRAL)
            targets["log_duration"].append(math.log(max(e - s, 1e-3)))
            targets["word"].append(w.lower())
    return {k: np.concatenate(v) for k, v in feats.items()}, {k: np.asarray(v) for k, v in targets.items()}


def _classifier_scores(x_train, y_train, x_test, y_test):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(set(y_train)) < 2:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan")}
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    clf.fit(x_train, y_train)
    pred = clf.predict(x_test)
    return {"accuracy": float(accuracy_score(y_test, pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_test, pred))}


def _duration_r2(x_train, y_train, x_test, y_test):
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    reg = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    reg.fit(x_train, y_train)
    return float(r2_score(y_test, reg.predict(x_test)))


def text_duration_baseline(train_words, train_dur, test_words, test_dur):
    """R^2 of predicting each word's log duration by its mean in training (the transcript alone)."""
    from sklearn.metrics import r2_score

    sums = defaultdict(list)
    for w, d in zip(train_words, train_dur):
        sums[w].append(d)
    overall = float(np.mean(train_dur))
    pred = [float(np.mean(sums[w])) if w in sums else overall for w in test_words]
    return float(r2_score(test_dur, pred))


def run_probes(train, test):
    """Fit every probe on ``train = collect(...)`` and score it on ``test``.

    Returns
    -------
    dict
        ``{feature: {speaker_accuracy, prosody_balanced_accuracy, duration_r2, dim}}``
        plus ``baselines`` (chance levels and the text-only duration R^2) and ``words``.
    """
    (f_train, t_train), (f_test, t_test) = train, test
    results = {}
    for name in sorted(f_train):
        xa, xb = f_train[name], f_test[name]
        spk = _classifier_scores(xa, t_train["speaker"], xb, t_test["speaker"])
        pro = _classifier_scores(xa, t_train["prosody"], xb, t_test["prosody"])
        results[name] = {
            "dim": int(xa.shape[1]),
            "speaker_accuracy": round(spk["accuracy"], 4),
            "prosody_balanced_accuracy": round(pro["balanced_accuracy"], 4),
            "duration_r2": round(_duration_r2(xa, t_train["log_duration"], xb, t_test["log_duration"]), 4),
        }
    labels = sorted(set(t_train["prosody"]))
    speakers = sorted(set(t_train["speaker"]))
    results["baselines"] = {
        "speaker_chance": round(1.0 / max(1, len(speakers)), 4),
        "prosody_chance": round(1.0 / max(1, len(labels)), 4),
        "text_only_duration_r2": round(text_duration_baseline(t_train["word"], t_train["log_duration"],
                                                              t_test["word"], t_test["log_duration"]), 4),
    }
    results["words"] = {"train": int(len(t_train["word"])), "test": int(len(t_test["word"]))}
    return results


def markdown_table(by_model):
    """``{model name: run_probes(...)}`` -> a Markdown table, one row per (model, feature)."""
    lines = ["| model | features | dim | speaker acc. | prosody bal. acc. | log-duration R^2 |",
             "|---|---|---|---|---|---|"]
    for model, res in by_model.items():
        for feat, r in res.items():
            if feat in ("baselines", "words"):
                continue
            lines.append(f"| {model} | {feat} | {r['dim']} | {r['speaker_accuracy']:.3f} | "
                         f"{r['prosody_balanced_accuracy']:.3f} | {r['duration_r2']:.3f} |")
    any_res = next(iter(by_model.values()))
    b = any_res["baselines"]
    lines.append(f"| chance / text only | - | - | {b['speaker_chance']:.3f} | {b['prosody_chance']:.3f} | "
                 f"{b['text_only_duration_r2']:.3f} (word's mean training duration) |")
    return "\n".join(lines)
