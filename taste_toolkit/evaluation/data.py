"""Evaluation sets: utterances with audio, transcript and (optionally) known word times.

Two on-disk forms are read:

* ``metadata.jsonl`` (the embedded corpus, :mod:`taste_toolkit.data.synthetic_corpus`,
  and the real-speech set of :mod:`taste_toolkit.evaluation.real_speech`): one JSON
  object per line with ``id``, ``audio`` (relative to the file's folder or its
  parent), ``text`` and optionally ``words``/``word_start``/``word_end``;
* a manifest CSV (``ID, duration, wav, spk_id, wrd``, as written by
  ``librispeech_prepare.py``), without word times.

Bad input is reported, not hidden: duplicate IDs and missing audio files raise
:class:`~taste_toolkit.errors.InputError` naming them; an utterance with an
empty transcript is kept (systems and metrics that need text report it as
missing / not scored, with that reason).
"""

import json
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

from taste_toolkit.data.manifest import read_manifest
from taste_toolkit.errors import InputError


@dataclass
class Utterance:
    """One evaluation utterance."""

    id: str
    path: str
    text: str
    words: Optional[List[Tuple[str, float, float]]] = None


def _resolve(audio, folder):
    for base in (folder, os.path.dirname(folder)):
        candidate = audio if os.path.isabs(audio) else os.path.join(base, audio)
        if os.path.isfile(candidate):
            return candidate
    return None


def _read_metadata(path):
    folder = os.path.dirname(os.path.abspath(path))
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                utt_id, audio = str(item["id"]), item["audio"]
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(f"{path}:{n}: not a JSON object with 'id' and 'audio' ({exc}).") from exc
            words = None
            if item.get("words") and item.get("word_start") and item.get("word_end"):
                if not len(item["words"]) == len(item["word_start"]) == len(item["word_end"]):
                    raise InputError(f"{path}:{n} ({utt_id}): words, word_start and word_end differ in length.")
                words = [(w, float(s), float(e)) for w, s, e in zip(item["words"], item["word_start"], item["word_end"])]
            out.append((utt_id, _resolve(audio, folder) or audio, str(item.get("text") or ""), words))
    return out


def _read_manifest(path):
    folder = os.path.dirname(os.path.abspath(path))
    rows = read_manifest(path, columns=("ID", "wav"), unique_ids=False)  # duplicates: listed by load_eval_set
    return [(r["ID"], _resolve(r["wav"], folder) or r["wav"], (r.get("wrd") or "").strip(), None) for r in rows]


def load_eval_set(metadata=None, manifest=None, limit=0, ids=None):
    """Read an evaluation set.

    Parameters
    ----------
    metadata : str, optional
        ``metadata.jsonl`` file, or a folder holding one.
    manifest : str, optional
        Manifest CSV (used when ``metadata`` is not given).
    limit : int
        First N utterances only (0 = all).
    ids : list of str, optional
        Keep only these IDs, in this order; unknown ones raise InputError.

    Returns
    -------
    list of Utterance
    """
    if metadata:
        path = os.path.join(metadata, "metadata.jsonl") if os.path.isdir(metadata) else metadata
        if not os.path.isfile(path):
            raise InputError(f"Evaluation set {path!r} not found (a metadata.jsonl file or its folder).")
        rows = _read_metadata(path)
    elif manifest:
        if not os.path.isfile(manifest):
            raise InputError(f"Manifest {manifest!r} not found.")
        path, rows = manifest, _read_manifest(manifest)
    else:
        raise InputError("The evaluation set needs data: {metadata: <file or folder>} or {manifest: <csv>}.")
    seen, dupes = set(), []
    for utt_id, *_ in rows:
        if utt_id in seen:
            dupes.append(utt_id)
        seen.add(utt_id)
    if dupes:
        raise InputError(f"{path}: duplicate utterance IDs {sorted(set(dupes))[:10]}; IDs key every output.")
    if ids:
        by_id = {r[0]: r for r in rows}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise InputError(f"IDs not in {path}: {unknown[:10]}.")
        rows = [by_id[i] for i in ids]
    if limit and limit > 0:
        rows = rows[: int(limit)]
    absent = [(u, p) for u, p, *_ in rows if not os.path.isfile(p)]
    if absent:
        raise InputError(f"{len(absent)} audio file(s) of {path} not found, e.g. {absent[0][0]}: {absent[0][1]}.")
    if not rows:
        raise InputError(f"No utterances in {path}.")
    return [Utterance(u, p, t, w) for u, p, t, w in rows]
