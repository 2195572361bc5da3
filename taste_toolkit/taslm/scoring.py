"""Likelihood scoring of (words, TASTE codes) candidates and two-choice evaluations.

A candidate's score is its log-likelihood under TASLM: the text part (log-probs
of its LLM tokens, EOS included) plus the speech part (log-probs of its TASTE
codes in token mode, Gaussian log-density of its code sums in embedding mode),
optionally counted only from word ``start_word`` on (a continuation after a
shared prompt). A two-choice item is right when the good candidate scores higher.

Sets:

* built-in, on the embedded corpus (no download): ``prosody`` -- the second half
  of an utterance with its own TASTE tokens vs with the TASTE tokens of another
  speaker's utterance (same words: only speech differs, a SALMON-style acoustic
  consistency test); ``shuffled_ending`` -- the true second half vs its words (and
  their tokens) shuffled (a tSC-style text test);
* a local folder in SALMON or spoken/topic StoryCloze style
  (:func:`load_two_choice_folder`); every sub-folder (``sSC``, ``tSC``, each
  SALMON task) is reported on its own.
"""

import logging
import os

import numpy as np
import torch

from taste_toolkit.errors import InputError, MissingResourceError
from taste_toolkit.taslm.bridge import IGNORE
from taste_toolkit.utils import lengths_to_mask

logger = logging.getLogger(__name__)

#: (good suffix, bad suffix) pairs recognized in file stems.
PAIR_SUFFIXES = (("_correct", "_incorrect"), ("_pos", "_neg"), ("_positive", "_negative"), ("_true", "_false"))
AUDIO_EXTENSIONS = (".wav", ".flac")


@torch.no_grad()
def score(model, items, batch_size=16):
    """Log-likelihoods of candidates.

    Arguments
    ---------
    model : TaslmModel
    items : list of tuple
        ``(words, codes (W, R), start_word)``; only words ``>= start_word`` (and EOS) count.

    Returns
    -------
    list of dict
        ``{"text", "taste", "total"}`` per item (natural-log units).
    """
    model.eval()
    device = next(model.parameters()).device
    bridge, out = model.bridge, []
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        batch = bridge.collate([bridge.build(list(w), c) for w, c, _ in chunk]).to(device)
        mask = lengths_to_mask(batch.lengths, batch.input_ids.shape[1])
        hidden, logits, _ = model.run(model.embed(batch.input_ids, batch.is_tail, batch.audio_codes),
                                      attention_mask=mask.long())
        labels = batch.text_labels
        logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        target_word = torch.cat([batch.word_pos[:, 1:], torch.full_like(batch.word_pos[:, :1], -2)], 1)
        start = torch.tensor([st for _, _, st in chunk], device=device)[:, None]
        text = (logp * ((labels != IGNORE) & (target_word >= start))).sum(1)
        taste_ll = model.head.log_likelihood(model.head(hidden), batch.taste_labels, model.codebook)
        taste = (taste_ll * (target_word - bridge.delay >= start)).sum(1)
        out += [{"text": float(t), "taste": float(a), "total": float(t + a)} for t, a in zip(text, taste)]
    return out


def two_choice_accuracy(model, pairs, key="total", batch_size=16):
    """Accuracy on ``pairs`` of ``{"good": (words, codes), "bad": (words, codes), "start_word": k}``."""
    if not pairs:
        raise InputError("No two-choice items to evaluate.")
    items = []
    for p in pairs:
        items += [(*p["good"], p.get("start_word", 0)), (*p["bad"], p.get("start_word", 0))]
    scores = score(model, items, batch_size)
    wins = [scores[2 * i][key] > scores[2 * i + 1][key] for i in range(len(pairs))]
    return {"accuracy": round(float(np.mean(wins)), 4), "n": len(pairs), "chance": 0.5}


def builtin_two_choice_sets(records, seed=0, min_words=4):
    """``{"prosody": pairs, "shuffled_ending": pairs}`` from TASTE-tokenized utterances.

    ``records``: dicts with ``words``, ``codes (W, R)``, ``spk_id`` (see
    :func:`taste_toolkit.taslm.data.encode_manifest`). The prompt is the first half
    of the words; the candidates are the second half.
    """
    rng = np.random.default_rng(seed)
    usable = [r for r in records if len(r["words"]) >= min_words]
    prosody, shuffled = [], []
    for i, r in enumerate(usable):
        words, codes = list(r["words"]), r["codes"]
        k = len(words) // 2
        n_cont = len(words) - k
        others = [o for o in usable if o["spk_id"] != r["spk_id"]] or [o for o in usable if o is not r]
        if others:
            o = others[int(rng.integers(len(others)))]
            idx = torch.arange(n_cont) % o["codes"].shape[0]
            other = o["codes"][-n_cont:] if o["codes"].shape[0] >= n_cont else o["codes"][idx]
            prosody.append({"good": (words, codes), "bad": (words, torch.cat([codes[:k], other])), "start_word": k})
        for _ in range(10):  # a permutation that changes the word sequence
            perm = rng.permutation(n_cont)
            new_words = words[:k] + [words[k + j] for j in perm]
            if new_words != words:
                bad_codes = torch.cat([codes[:k], codes[k:][torch.as_tensor(perm)]])
                shuffled.append({"good": (words, codes), "bad": (new_words, bad_codes), "start_word": k})
                break
    return {"prosody": prosody, "shuffled_ending": shuffled}


def _transcript(path, asr):
    txt = os.path.splitext(path)[0] + ".txt"
    if os.path.isfile(txt):
        with open(txt) as f:
            text = f.read().strip()
        if text:
            return text
    if asr is None:
        raise InputError(f"{path} has no transcript ({txt}) and no ASR is configured; TASTE tokens need the "
                         "words spoken: add .txt files next to the audio or pass an ASR.")
    return asr.transcribe(*_load(path))


def _load(path):
    import soundfile as sf

    wav, sr = sf.read(path, dtype="float32")
    return wav, sr


def _pairs_in(folder):
    """``[(good path, bad path)]`` in ``folder`` (suffix pairs or positive/negative sub-folders)."""
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(AUDIO_EXTENSIONS))
    stems = {os.path.splitext(f)[0]: os.path.join(folder, f) for f in files}
    pairs = []
    for good, bad in PAIR_SUFFIXES:
        for stem, path in stems.items():
            if stem.endswith(good) and stem[: -len(good)] + bad in stems:
                pairs.append((path, stems[stem[: -len(good)] + bad]))
    for good, bad in (("positive", "negative"), ("pos", "neg"), ("correct", "incorrect")):
        g, b = os.path.join(folder, good), os.path.join(folder, bad)
        if os.path.isdir(g) and os.path.isdir(b):
            for f in sorted(os.listdir(g)):
                if f.lower().endswith(AUDIO_EXTENSIONS) and os.path.isfile(os.path.join(b, f)):
                    pairs.append((os.path.join(g, f), os.path.join(b, f)))
    return pairs


def load_two_choice_folder(root, tokenizer, asr=None):
    """Read SALMON / StoryCloze-style two-choice sets from a local folder.

    Every folder under ``root`` (``root`` included) holding pairs is one subset,
    named by its path relative to ``root`` (e.g. ``sSC``, ``tSC``,
    ``bg_consistency``). Pairs are ``<id>_correct`` / ``<id>_incorrect`` (StoryCloze),
    ``<id>_pos`` / ``<id>_neg``, or ``positive/<id>`` + ``negative/<id>`` audio files;
    transcripts come from ``<file>.txt`` next to each audio file, or from ``asr``.

    Returns
    -------
    dict
        ``{subset: [{"good": (words, codes), "bad": (words, codes), "start_word": 0}]}``.
    """
    from taste_toolkit.taslm.data import word_level_codes

    if not os.path.isdir(root):
        raise MissingResourceError(f"Two-choice folder {root!r} does not exist.")
    sets = {}
    for folder, _, _ in sorted(os.walk(root)):
        pairs = _pairs_in(folder)
        if not pairs:
            continue
        name = os.path.relpath(folder, root)
        items = []
        for good, bad in pairs:
            cands = []
            for path in (good, bad):
                wav, sr = _load(path)
                t = tokenizer.encode(wav, sr, _transcript(path, asr))
                cands.append((t.words, word_level_codes(t)))
            items.append({"good": cands[0], "bad": cands[1], "start_word": 0})
        sets[name] = items
    if not sets:
        raise InputError(f"No two-choice pairs found under {root!r} (expected *_correct/*_incorrect, *_pos/*_neg "
                         "or positive/ + negative/ audio files).")
    return sets
