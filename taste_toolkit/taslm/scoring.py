"""Likelihood scoring of (words, TASTE codes) candidates and two-choice evaluations.

A candidate's score is its log-likelihood under TASLM: the text part (log-probs
of its LLM tokens, EOS included) plus the speech part (log-probs of its TASTE
codes in token mode, Gaussian log-density of its code sums in embedding mode),
optionally counted only from word ``start_word`` on (a continuation after a
shared prompt). A two-choice item is right when the good candidate scores higher.

Sets:

* built-in, from tokenized utterances (no audio needed): ``token_mismatch`` --
  the second half of an utterance with its own TASTE tokens vs with the last
  tokens of another speaker's *different* utterance (the words stay, the tokens
  belong to other words: a word/token mismatch test, not a prosody test);
  ``shuffled_ending`` -- the true second half vs its words (and their tokens)
  shuffled (a tSC-style text test);
* acoustic minimal pairs synthesized by the corpus generator
  (:mod:`taste_toolkit.data.minimal_pairs`, read by :func:`load_minimal_pairs`):
  ``prosody_minimal_pairs`` (same words and voice, one word's prosody changed)
  and ``speaker_minimal_pairs`` (the voice changes mid-utterance), the SALMON
  acoustic-consistency idea: the consistent member should score higher;
* a local folder in SALMON or spoken/topic StoryCloze style
  (:func:`load_two_choice_folder`); every sub-folder (``sSC``, ``tSC``, each
  SALMON task) is reported on its own.
"""

import json
import logging
import os

import numpy as np
import torch

from taste_toolkit.audio import read_audio
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


def two_choice_accuracy(model, pairs, key="total", batch_size=16, seed=0, num_resamples=10000):
    """Accuracy on ``pairs`` of ``{"good": (words, codes), "bad": (words, codes), "start_word": k}``.

    Returns
    -------
    dict
        ``accuracy``, ``n``, ``chance`` (0.5) and ``ci_low`` / ``ci_high``: the 95%
        bootstrap interval of the accuracy over the pairs' 0/1 outcomes
        (:func:`taste_toolkit.evaluation.bootstrap.bootstrap_ci`, ``seed``).
    """
    from taste_toolkit.evaluation.bootstrap import bootstrap_ci

    if not pairs:
        raise InputError("No two-choice items to evaluate.")
    items = []
    for p in pairs:
        items += [(*p["good"], p.get("start_word", 0)), (*p["bad"], p.get("start_word", 0))]
    scores = score(model, items, batch_size)
    wins = [float(scores[2 * i][key] > scores[2 * i + 1][key]) for i in range(len(pairs))]
    ci = bootstrap_ci(wins, num_resamples=num_resamples, seed=seed, confidence=0.95)
    return {"accuracy": round(ci["mean"], 4), "n": len(pairs), "chance": 0.5,
            "ci_low": round(ci["ci_low"], 4), "ci_high": round(ci["ci_high"], 4)}


def builtin_two_choice_sets(records, seed=0, min_words=4):
    """``{"token_mismatch": pairs, "shuffled_ending": pairs}`` from TASTE-tokenized utterances.

    ``records``: dicts with ``words``, ``codes (W, R)``, ``spk_id`` (see
    :func:`taste_toolkit.taslm.data.encode_manifest`). The prompt is the first half
    of the words; the candidates are the second half.

    ``token_mismatch``: good = the utterance's own TASTE tokens; bad = the same
    words carrying the last tokens of another speaker's (different) utterance.
    The tokens then describe other words in another voice, so this measures
    whether TASLM notices tokens that do not fit the words (it used to be called
    ``prosody``, but it does not isolate prosody: see :func:`load_minimal_pairs`).
    """
    rng = np.random.default_rng(seed)
    usable = [r for r in records if len(r["words"]) >= min_words]
    mismatch, shuffled = [], []
    for i, r in enumerate(usable):
        words, codes = list(r["words"]), r["codes"]
        k = len(words) // 2
        n_cont = len(words) - k
        others = [o for o in usable if o["spk_id"] != r["spk_id"]] or [o for o in usable if o is not r]
        if others:
            o = others[int(rng.integers(len(others)))]
            idx = torch.arange(n_cont) % o["codes"].shape[0]
            other = o["codes"][-n_cont:] if o["codes"].shape[0] >= n_cont else o["codes"][idx]
            mismatch.append({"good": (words, codes), "bad": (words, torch.cat([codes[:k], other])), "start_word": k})
        for _ in range(10):  # a permutation that changes the word sequence
            perm = rng.permutation(n_cont)
            new_words = words[:k] + [words[k + j] for j in perm]
            if new_words != words:
                bad_codes = torch.cat([codes[:k], codes[k:][torch.as_tensor(perm)]])
                shuffled.append({"good": (words, codes), "bad": (new_words, bad_codes), "start_word": k})
                break
    return {"token_mismatch": mismatch, "shuffled_ending": shuffled}


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
    return asr.transcribe(*read_audio(path))


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
                wav, sr = read_audio(path)
                t = tokenizer.encode(wav, sr, _transcript(path, asr))
                cands.append((t.words, word_level_codes(t)))
            items.append({"good": cands[0], "bad": cands[1], "start_word": 0})
        sets[name] = items
    if not sets:
        raise InputError(f"No two-choice pairs found under {root!r} (expected *_correct/*_incorrect, *_pos/*_neg "
                         "or positive/ + negative/ audio files).")
    return sets


def pairs_from_records(records):
    """Two-choice pairs from tokenized records whose IDs are ``<pair>_pos`` / ``<pair>_neg``.

    Returns
    -------
    list of dict
        ``{"id", "good": (words, codes), "bad": (words, codes), "start_word": 0}`` in
        first-seen order; both members must have the same words.
    """
    members = {}
    for r in records:
        stem, _, tag = r["id"].rpartition("_")
        if tag not in ("pos", "neg") or not stem:
            raise InputError(f"Record {r['id']!r} is not named <pair>_pos or <pair>_neg.")
        members.setdefault(stem, {})[tag] = r
    pairs = []
    for stem, m in members.items():
        if set(m) != {"pos", "neg"}:
            raise InputError(f"Minimal pair {stem!r} has no {'_neg' if 'pos' in m else '_pos'} member.")
        if list(m["pos"]["words"]) != list(m["neg"]["words"]):
            raise InputError(f"Minimal pair {stem!r}: the members' words differ "
                             f"({' '.join(m['pos']['words'])!r} vs {' '.join(m['neg']['words'])!r}).")
        pairs.append({"id": stem, "good": (list(m["pos"]["words"]), m["pos"]["codes"]),
                      "bad": (list(m["neg"]["words"]), m["neg"]["codes"]), "start_word": 0})
    return pairs


def load_minimal_pairs(folder, tokenizer, cache_dir=None):
    """``{"<kind>_minimal_pairs": pairs}`` of a folder made by
    :func:`taste_toolkit.data.minimal_pairs.generate_minimal_pairs`.

    Every member is TASTE-tokenized once per tokenizer (cached in ``cache_dir``,
    default ``<folder>/tokens``, like the recipe's training tokens); the result is
    what :func:`two_choice_accuracy` takes (whole-utterance scores, ``start_word`` 0).
    """
    from taste_toolkit.data.minimal_pairs import DONE_FILE
    from taste_toolkit.taslm.data import encode_manifest

    done = os.path.join(folder, DONE_FILE)
    if not os.path.isfile(done):
        raise MissingResourceError(f"No minimal pairs in {folder!r}: generate them with "
                                   "taste_toolkit.data.minimal_pairs.generate_minimal_pairs.")
    with open(done) as f:
        kinds = json.load(f)["options"]["kinds"]
    cache_dir = cache_dir or os.path.join(folder, "tokens")
    return {f"{kind}_minimal_pairs": pairs_from_records(
        encode_manifest(tokenizer, os.path.join(folder, f"minimal_pairs_{kind}.csv"), cache_dir)) for kind in kinds}
