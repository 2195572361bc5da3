"""Acoustic minimal pairs synthesized by the corpus generator (SALMON-style consistency sets).

Each pair has the same words twice; only the speech differs, and the *good*
member is the acoustically consistent one (a spoken LM should score it higher):

* ``prosody``: one voice reads the sentence with neutral prosody (good) and with
  one word's prosody changed (bad): one of the corpus labels slow / fast / high /
  low / soft / emphasis / pause on one word, cycled over the pairs so every label
  is used equally often;
* ``speaker``: the sentence is synthesized as two halves and spliced; the good
  member reads both halves in voice A, the bad one switches to voice B for the
  second half (same splice in both, so only the voice change differs).

Voices, rates and pitches are the corpus speakers' (:data:`SPEAKER_VOICES`), so a
model trained on the embedded corpus hears familiar voices. Layout::

    folder/<kind>/<kind>-<i>_pos.flac (+ .txt)   good member; <i>_neg = bad member
    folder/minimal_pairs_<kind>.csv              LibriSpeech-style manifest of every file
    folder/manifest.jsonl                        one line per pair: words, what changed, voices,
                                                 per-word labels and times of both members
    folder/.pairs_done.json                      options; a rerun with the same options is free

The ``_pos`` / ``_neg`` names also make the folder a two-choice folder for
``taste score --folder`` (:func:`taste_toolkit.taslm.scoring.load_two_choice_folder`);
:func:`taste_toolkit.taslm.scoring.load_minimal_pairs` reads it with cached tokens.
"""

import csv
import json
import os
import shutil

import numpy as np

from taste_toolkit.data.synthetic_corpus import (PROSODY_LABELS, SAMPLE_RATE, SPEAKER_VOICES, _speech_end,
                                                 _write_atomic, _write_text, make_sentence, synthesize_utterance)
from taste_toolkit.errors import ConfigError, DataPreparationError

#: Bump when the pair design changes: invalidates generated folders.
PAIRS_VERSION = 1
KINDS = ("prosody", "speaker")
DONE_FILE = ".pairs_done.json"
#: Silence kept between the two spliced halves of a speaker pair (s).
SPLICE_GAP = 0.06


def _check(num_pairs, num_speakers, kinds, max_chars):
    if not isinstance(num_pairs, int) or not 1 <= num_pairs <= 9999:
        raise ConfigError(f"num_pairs must be an integer in 1..9999, got {num_pairs!r}.")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ConfigError(f"Minimal-pair kinds must be among {KINDS}, got {list(kinds)}.")
    if not 1 <= num_speakers <= len(SPEAKER_VOICES):
        raise ConfigError(f"num_speakers must be 1..{len(SPEAKER_VOICES)}, got {num_speakers}.")
    if "speaker" in kinds and num_speakers < 2:
        raise ConfigError("Speaker minimal pairs need num_speakers >= 2 (a second voice to switch to).")
    if max_chars is not None and max_chars < 20:
        raise ConfigError(f"max_chars must be >= 20 (a 4-word sentence), got {max_chars}.")


def _sentence(rng, max_chars):
    while True:
        words = make_sentence(rng)
        if max_chars is None or len(" ".join(words)) <= max_chars:
            return [w.upper() for w in words]


def plan_pairs(num_pairs, seed=2024, num_speakers=8, kinds=KINDS, max_chars=None):
    """What every pair says and changes, from one seeded RNG, before any synthesis.

    Returns
    -------
    list of dict
        ``{"id", "kind", "words", "voice", "changed_word", "label", "other_voice"}``
        (``voice`` / ``other_voice`` index :data:`SPEAKER_VOICES`; ``changed_word`` is
        the word whose prosody changes, or the first word read by the other voice).
    """
    _check(num_pairs, num_speakers, kinds, max_chars)
    rng = np.random.default_rng(seed)
    plans = []
    for kind in kinds:
        for i in range(num_pairs):
            words = _sentence(rng, max_chars)
            voice = int(rng.integers(num_speakers))
            plan = {"id": f"{kind}-{i:04d}", "kind": kind, "words": words, "voice": voice}
            if kind == "prosody":
                plan.update(changed_word=int(rng.integers(1, len(words))),
                            label=PROSODY_LABELS[i % len(PROSODY_LABELS)])
            else:
                other = [v for v in range(num_speakers) if v != voice]
                plan.update(changed_word=len(words) // 2, other_voice=other[int(rng.integers(len(other)))])
            plans.append(plan)
    return plans


def _say(words, labels, voice, ending="."):
    name, _, pitch, rate = SPEAKER_VOICES[voice]
    audio, start, end = synthesize_utterance(words, labels, name, rate, pitch, ending)
    return audio, list(start), list(end)


def _splice(first, second):
    """``first`` cut after its speech (+ a short gap), then ``second``; word times shifted."""
    audio, start, end = first
    cut = min(len(audio), int(round((_speech_end(audio.astype(np.float64) / 32768.0) + SPLICE_GAP) * SAMPLE_RATE)))
    offset = cut / SAMPLE_RATE
    return (np.concatenate([audio[:cut], second[0]]), start + [t + offset for t in second[1]],
            [min(t, offset) for t in end] + [t + offset for t in second[2]])


def synthesize_pair(plan):
    """``(good, bad)`` members of one planned pair: dicts with ``audio`` (int16), ``voices``,
    ``prosody`` (one entry per word), ``word_start``, ``word_end`` (s)."""
    words, n, v = plan["words"], len(plan["words"]), plan["voice"]
    neutral = [None] * n
    voice_a = SPEAKER_VOICES[v][0]
    if plan["kind"] == "prosody":
        changed = list(neutral)
        changed[plan["changed_word"]] = plan["label"]
        members = [(_say(words, neutral, v), neutral), (_say(words, changed, v), changed)]
        voices = [[voice_a] * n, [voice_a] * n]
    else:
        k, w = plan["changed_word"], plan["other_voice"]
        head = _say(words[:k], neutral[:k], v, ending=",")
        members = [(_splice(head, _say(words[k:], neutral[k:], v)), neutral),
                   (_splice(head, _say(words[k:], neutral[k:], w)), neutral)]
        voices = [[voice_a] * n, [voice_a] * k + [SPEAKER_VOICES[w][0]] * (n - k)]
    return tuple({"audio": audio, "voices": vs, "prosody": labels, "word_start": [round(t, 5) for t in start],
                  "word_end": [round(t, 5) for t in end]}
                 for ((audio, start, end), labels), vs in zip(members, voices))


def generate_minimal_pairs(folder, num_pairs=40, seed=2024, num_speakers=8, kinds=KINDS, max_chars=None,
                           progress=False):
    """Synthesize (or reuse) ``num_pairs`` minimal pairs of each kind into ``folder``.

    Parameters
    ----------
    folder : str or path
        Output folder (see the module docstring for its layout).
    num_pairs : int
        Pairs per kind.
    seed : int
        Seeds sentences, voices and changes; the audio is sample-identical for a seed.
    num_speakers : int
        Voices drawn from the first ``num_speakers`` corpus speakers (>= 2 for ``speaker``).
    kinds : sequence of str
        Among ``("prosody", "speaker")``.
    max_chars : int, optional
        Longest sentence in characters (small test tokenizers take short texts only).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    dict
        ``{"folder", "options", "manifests": {kind: csv path}, "pairs": count}``.
    """
    from tqdm import tqdm

    import soundfile as sf

    kinds = tuple(kinds)
    _check(num_pairs, num_speakers, kinds, max_chars)
    folder = os.path.abspath(os.fspath(folder))
    options = dict(version=PAIRS_VERSION, num_pairs=int(num_pairs), seed=int(seed), num_speakers=int(num_speakers),
                   kinds=list(kinds), max_chars=max_chars)
    manifests = {k: os.path.join(folder, f"minimal_pairs_{k}.csv") for k in kinds}
    summary = {"folder": folder, "options": options, "manifests": manifests, "pairs": num_pairs * len(kinds)}
    done = os.path.join(folder, DONE_FILE)
    if os.path.isfile(done):
        with open(done, encoding="utf-8") as f:
            if json.load(f).get("options") == options:
                return summary
        os.remove(done)  # other options: ours to regenerate
        for kind in KINDS:
            shutil.rmtree(os.path.join(folder, kind), ignore_errors=True)
    for kind in kinds:
        if os.path.exists(os.path.join(folder, kind)) and os.listdir(os.path.join(folder, kind)):
            raise DataPreparationError(f"{os.path.join(folder, kind)} exists but was not made by this generator "
                                       f"(no {DONE_FILE}); choose another folder or remove it.")
        os.makedirs(os.path.join(folder, kind), exist_ok=True)
    lines, rows = [], {k: [] for k in kinds}
    for plan in tqdm(plan_pairs(num_pairs, seed, num_speakers, kinds, max_chars), desc="minimal pairs",
                     disable=not progress):
        record = {k: plan[k] for k in ("id", "kind", "words", "changed_word")}
        record.update(text=" ".join(plan["words"]), label=plan.get("label"))
        for tag, member in zip(("pos", "neg"), synthesize_pair(plan)):
            stem = os.path.join(folder, plan["kind"], f"{plan['id']}_{tag}")
            audio = member.pop("audio")
            _write_atomic(stem + ".flac", lambda tmp: sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16",
                                                               format="FLAC"))
            _write_text(stem + ".txt", record["text"] + "\n")
            member.update(audio=os.path.relpath(stem + ".flac", folder), duration=round(len(audio) / SAMPLE_RATE, 5))
            record["good" if tag == "pos" else "bad"] = member
            rows[plan["kind"]].append([f"{plan['id']}_{tag}", member["duration"], stem + ".flac",
                                       1001 + plan["voice"], record["text"]])
        lines.append(json.dumps(record) + "\n")
    for kind, path in manifests.items():
        def write(tmp, kind=kind):
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["ID", "duration", "wav", "spk_id", "wrd"])
                w.writerows(rows[kind])
        _write_atomic(path, write)
    _write_text(os.path.join(folder, "manifest.jsonl"), "".join(lines))
    _write_text(done, json.dumps({"options": options}, indent=1))
    return summary


def read_pair_manifest(folder):
    """The pairs of ``folder/manifest.jsonl`` (see :func:`generate_minimal_pairs`)."""
    path = os.path.join(folder, "manifest.jsonl")
    if not os.path.isfile(os.path.join(folder, DONE_FILE)) or not os.path.isfile(path):
        raise DataPreparationError(f"{folder} holds no finished minimal pairs; run generate_minimal_pairs first.")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
