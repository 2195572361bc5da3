"""Manifests for multilingual corpora: Common Voice and Multilingual LibriSpeech (MLS).

Layouts read (as the corpora ship them)::

    Common Voice  <data_folder>/clips/<name>.mp3
                  <data_folder>/train.tsv, dev.tsv, test.tsv   (client_id, path, sentence, ...)
    MLS           <data_folder>/<split>/transcripts.txt        lines "<spk>_<book>_<utt>\\tTEXT"
                  <data_folder>/<split>/audio/<spk>/<book>/<spk>_<book>_<utt>.flac (or .opus, .wav)

Both write what :func:`taste_toolkit.data.librispeech.prepare_librispeech` writes:
``<save_folder>/<split>.csv`` with ``ID, duration, wav, spk_id, wrd`` (sorted by
ID), ``prepare_report.json`` listing every excluded item with its reason and
``prepare_options.json`` (an unchanged corpus is not examined again). Nothing is
dropped silently: ``kept + excluded == total_items`` per split.

Transcripts are Unicode-normalized (NFKC by default: full-width letters and
digits, compatibility ligatures) and their whitespace collapsed; how many were
changed is reported under ``warnings.normalized_transcripts``. Language-specific
normalization (case, punctuation) is the text tokenizer's business.

Exclusion reasons, first that applies: ``bad_row`` (a TSV row without a path),
``duplicate_id``, ``empty_transcript``, ``audio_missing``, ``audio_unreadable``,
``audio_zero_length``, ``audio_decode_error`` (the samples cannot be decoded, or
far fewer than the header announced: a truncated MP3), ``audio_non_finite``,
``too_long``, ``too_short``.

MP3 is decoded by libsndfile (>= 1.1, through ``soundfile``); the data pipeline
reads the same files, so nothing is converted. Common Voice clips are 32 or
48 kHz: they are kept and listed under ``warnings.non_16k_sample_rate``.
"""

import csv
import json
import logging
import os
import unicodedata

import numpy as np
import soundfile as sf

from taste_toolkit.data.librispeech import (
    CSV_HEADER, EXPECTED_SAMPLE_RATE, OPTIONS_FILE, REPORT_FILE, _load_json, _write_atomic, _write_csv, check_manifest)
from taste_toolkit.errors import ConfigError, DataPreparationError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
NORMALIZATIONS = ("NFKC", "NFC", "NFKD", "NFD", "none")
MLS_AUDIO_EXTENSIONS = (".flac", ".opus", ".wav")
CV_HINT = "<data_folder>/clips/*.mp3 with <data_folder>/<split>.tsv (train.tsv, dev.tsv, test.tsv)"
MLS_HINT = "<data_folder>/<split>/transcripts.txt with <data_folder>/<split>/audio/<spk>/<book>/<ID>.flac"


def detect_layout(data_folder):
    """``"commonvoice"``, ``"mls"`` or ``"librispeech"``: the layout of ``data_folder``.

    Common Voice has ``clips/`` and a ``.tsv`` per split; MLS has split folders with
    ``transcripts.txt``; anything else is read as LibriSpeech.
    """
    if os.path.isdir(os.path.join(data_folder, "clips")) and any(
            name.endswith(".tsv") for name in os.listdir(data_folder)):
        return "commonvoice"
    if os.path.isdir(data_folder) and any(
            os.path.isfile(os.path.join(data_folder, d, "transcripts.txt")) for d in os.listdir(data_folder)):
        return "mls"
    return "librispeech"


def normalize_transcript(text, normalization="NFKC"):
    """Unicode-normalize ``text`` and collapse its whitespace.

    >>> normalize_transcript("ｈｏｌａ\\u3000 ＭＵＮＤＯ  ２")
    'hola MUNDO 2'
    """
    if normalization != "none":
        text = unicodedata.normalize(normalization, text)
    return " ".join(text.split())


def _examine(path):
    """``(duration s, info)`` of a usable audio file, or ``(reason, detail)`` as a ``str`` pair."""
    if not os.path.isfile(path):
        return ("audio_missing", "no such file"), None
    try:
        info = sf.info(path)
    except (sf.SoundFileError, RuntimeError) as err:
        return ("audio_unreadable", str(err)), None
    if info.frames <= 0 or info.samplerate <= 0:
        return ("audio_zero_length", f"{info.frames} frames"), None
    n_read = 0
    try:
        # A read loop, not sf.blocks: blocks() counts the header's frames even when a
        # truncated MP3 ends early, which would hide the truncation.
        with sf.SoundFile(path) as f:
            while True:
                block = f.read(1 << 16, dtype="float32", always_2d=True)
                if not len(block):
                    break
                if not np.isfinite(block).all():
                    return ("audio_non_finite", f"NaN/inf sample near frame {n_read}"), None
                n_read += len(block)
    except (sf.SoundFileError, RuntimeError, ValueError) as err:
        return ("audio_decode_error", f"decoding failed after {n_read} frames: {err}"), None
    # MP3 headers give an estimate: allow a few codec frames (1152 samples) of padding.
    if n_read == 0 or abs(n_read - info.frames) > max(4 * 1152, 0.01 * info.frames):
        return ("audio_decode_error", f"header says {info.frames} frames, decoded {n_read}"), None
    return n_read / info.samplerate, info


def _write_split(items, csv_path, max_duration, min_duration, normalization):
    """Examine ``items`` (dicts: id, path, spk, text or reason/detail), write the CSV, return the split report."""
    excluded, rows, seen = [], [], {}
    warnings = {"non_16k_sample_rate": {}, "multi_channel": [], "normalized_transcripts": 0}

    def exclude(item, reason, detail=""):
        excluded.append({"id": item["id"], "path": item.get("path"), "reason": reason, "detail": detail})

    for item in items:
        seen[item["id"]] = seen.get(item["id"], 0) + 1
    for item in sorted(items, key=lambda i: (i["id"], i.get("path") or "")):
        if item.get("reason"):
            exclude(item, item["reason"], item.get("detail", ""))
            continue
        if seen[item["id"]] > 1:  # ambiguous: keep none of the copies
            exclude(item, "duplicate_id", f"listed {seen[item['id']]} times")
            continue
        text = normalize_transcript(item["text"], normalization)
        if text != item["text"]:
            warnings["normalized_transcripts"] += 1
        if not text:
            exclude(item, "empty_transcript", "transcript has no words")
            continue
        duration, info = _examine(item["path"])
        if info is None:
            exclude(item, *duration)
            continue
        if max_duration is not None and duration > max_duration:
            exclude(item, "too_long", f"{duration:.3f} s > max_duration {max_duration} s")
            continue
        if duration < min_duration:
            exclude(item, "too_short", f"{duration:.3f} s < min_duration {min_duration} s")
            continue
        if info.samplerate != EXPECTED_SAMPLE_RATE:
            warnings["non_16k_sample_rate"][item["id"]] = info.samplerate
        if info.channels != 1:
            warnings["multi_channel"].append(item["id"])
        rows.append([item["id"], f"{duration:.6f}", os.path.abspath(item["path"]), item["spk"], text])
    _write_csv(csv_path, rows)
    counts = {}
    for entry in excluded:
        counts[entry["reason"]] = counts.get(entry["reason"], 0) + 1
    if len(rows) + len(excluded) != len(items):
        raise RuntimeError(f"Accounting bug while writing {csv_path}: items do not add up.")
    return {"csv": csv_path, "total_items": len(items), "kept": len(rows),
            "kept_hours": sum(float(r[1]) for r in rows) / 3600.0, "n_excluded": len(excluded),
            "excluded": dict(sorted(counts.items())), "not_selected": 0, "excluded_items": excluded,
            "warnings": warnings}


def _commonvoice_items(data_folder, split):
    """Items of ``<split>.tsv``: clip name (without extension) as ID, client_id as speaker."""
    tsv = os.path.join(data_folder, f"{split}.tsv")
    items = []
    try:
        with open(tsv, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            if not header or "path" not in header or "sentence" not in header:
                raise DataPreparationError(
                    f"{tsv} has the header {header}; a Common Voice TSV has 'client_id', 'path' and 'sentence' "
                    f"columns. Expected layout: {CV_HINT}.")
            col = {name: k for k, name in enumerate(header)}
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                get = (lambda name: row[col[name]] if name in col and col[name] < len(row) else "")
                name = get("path").strip()
                item = {"id": os.path.splitext(os.path.basename(name))[0] or f"{split}.tsv:{reader.line_num}",
                        "path": os.path.join(data_folder, "clips", name) if name else None,
                        "spk": get("client_id").strip() or "unknown", "text": get("sentence")}
                if not name:
                    item.update(reason="bad_row", detail=f"{split}.tsv line {reader.line_num} has no path")
                items.append(item)
    except UnicodeDecodeError as exc:
        raise DataPreparationError(f"{tsv} is not UTF-8 text ({exc}); re-extract the Common Voice archive.") from exc
    return items


def _mls_items(data_folder, split):
    """Items of ``<split>/transcripts.txt``; ``<spk>_<book>_<utt>`` IDs, audio under ``audio/<spk>/<book>/``."""
    folder = os.path.join(data_folder, split)
    path = os.path.join(folder, "transcripts.txt")
    items = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise DataPreparationError(f"{path} is not UTF-8 text ({exc}); re-extract the MLS archive.") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        utt_id, _, text = line.partition("\t")
        utt_id = utt_id.strip()
        parts = utt_id.split("_")
        item = {"id": utt_id, "path": None, "spk": parts[0], "text": text}
        if len(parts) != 3 or not all(parts):
            item.update(reason="bad_row", detail=f"transcripts.txt line {number}: ID is not <spk>_<book>_<utt>")
        else:
            base = os.path.join(folder, "audio", parts[0], parts[1], utt_id)
            item["path"] = next((base + e for e in MLS_AUDIO_EXTENSIONS if os.path.isfile(base + e)),
                                base + MLS_AUDIO_EXTENSIONS[0])
        items.append(item)
    return items


def _check_options(splits, max_duration, min_duration, normalization):
    if not splits or not all(isinstance(s, str) and s for s in splits) or len(set(splits)) != len(splits):
        raise ConfigError(f"splits must be a non-empty list of distinct split names, got {splits!r}.")
    if not (isinstance(min_duration, (int, float)) and min_duration >= 0):
        raise ConfigError(f"min_duration must be a number >= 0, got {min_duration!r}.")
    if max_duration is not None and not (isinstance(max_duration, (int, float)) and max_duration > min_duration):
        raise ConfigError(f"max_duration must be None or > min_duration ({min_duration}), got {max_duration!r}.")
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}.")


def _stamp(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _prepare(layout, data_folder, save_folder, splits, max_duration, min_duration, normalization, skip_prep):
    save_folder = os.path.abspath(save_folder)
    report_path = os.path.join(save_folder, REPORT_FILE)
    if skip_prep:
        return _load_json(report_path) or {}
    splits = list(splits)
    _check_options(splits, max_duration, min_duration, normalization)
    data_folder = os.path.abspath(data_folder)
    hint = CV_HINT if layout == "commonvoice" else MLS_HINT
    name = "Common Voice" if layout == "commonvoice" else "MLS"
    listing = {s: os.path.join(data_folder, f"{s}.tsv") if layout == "commonvoice"
               else os.path.join(data_folder, s, "transcripts.txt") for s in splits}
    for split, path in listing.items():
        if not os.path.isfile(path):
            raise DataPreparationError(
                f"{name} split {split!r}: {path} does not exist. Expected layout: {hint}. "
                "Check data_folder and the split names.")
    # Cheap change detection: the listings and the audio folders (a file added or removed changes their mtime).
    audio_dirs = [os.path.join(data_folder, "clips")] if layout == "commonvoice" else \
        [os.path.join(data_folder, s, "audio") for s in splits]
    options = {"format_version": FORMAT_VERSION, "layout": layout, "data_folder": data_folder, "splits": splits,
               "max_duration": max_duration, "min_duration": min_duration, "normalization": normalization,
               "fingerprints": {p: _stamp(p) for p in list(listing.values()) + audio_dirs if os.path.exists(p)}}
    csv_paths = {s: os.path.join(save_folder, f"{s}.csv") for s in splits}
    options_path = os.path.join(save_folder, OPTIONS_FILE)
    report = _load_json(report_path)
    if _load_json(options_path) == options and report is not None and not any(
            check_manifest(p, report.get("splits", {}).get(s, {}).get("kept")) for s, p in csv_paths.items()):
        report["reused"] = True
        return report
    os.makedirs(save_folder, exist_ok=True)
    if os.path.exists(options_path):
        os.remove(options_path)
    report = {"options": options, "splits": {}, "reused": False}
    scan = _commonvoice_items if layout == "commonvoice" else _mls_items
    for split in splits:
        rep = _write_split(scan(data_folder, split), csv_paths[split], max_duration, min_duration, normalization)
        report["splits"][split] = rep
        reasons = ", ".join(f"{k}={v}" for k, v in rep["excluded"].items()) or "none"
        (logger.warning if rep["n_excluded"] else logger.info)(
            "%s %s: kept %d (%.2f h), excluded %d (%s)", name, split, rep["kept"], rep["kept_hours"],
            rep["n_excluded"], reasons)
    _write_atomic(report_path, json.dumps(report, indent=1, ensure_ascii=False))
    _write_atomic(options_path, json.dumps(options, indent=1))
    return report


def prepare_commonvoice(data_folder, save_folder, splits=("train", "dev", "test"), max_duration=30.0,
                        min_duration=0.0, normalization="NFKC", skip_prep=False):
    """Write one manifest CSV per Common Voice split (``<split>.tsv``) and report exclusions.

    Parameters
    ----------
    data_folder : str
        The language folder of a Common Voice release (holds ``clips/`` and the TSVs).
    save_folder : str
        Where ``<split>.csv``, ``prepare_options.json`` and ``prepare_report.json`` go.
    splits : sequence of str
        TSV names without ``.tsv`` (``train``, ``dev``, ``test``, ``validated``, ...).
    max_duration, min_duration : float
        Kept durations in seconds (``max_duration=None``: no limit).
    normalization : str
        Unicode normalization of the sentences (:data:`NORMALIZATIONS`).
    skip_prep : bool
        Return the stored report without doing anything.

    Returns
    -------
    dict
        The report, as :func:`taste_toolkit.data.librispeech.prepare_librispeech`'s.

    Raises
    ------
    DataPreparationError
        A split's TSV is missing, not UTF-8, or lacks the ``path``/``sentence`` columns.
    ConfigError
        Invalid options.
    """
    return _prepare("commonvoice", data_folder, save_folder, splits, max_duration, min_duration, normalization,
                    skip_prep)


def prepare_mls(data_folder, save_folder, splits=("train", "dev", "test"), max_duration=30.0, min_duration=0.0,
                normalization="NFKC", skip_prep=False):
    """Write one manifest CSV per Multilingual LibriSpeech split and report exclusions.

    ``data_folder`` is a language folder (e.g. ``mls_spanish``) holding ``train/``,
    ``dev/`` and ``test/``; the other arguments are those of :func:`prepare_commonvoice`.
    """
    return _prepare("mls", data_folder, save_folder, splits, max_duration, min_duration, normalization, skip_prep)


__all__ = ["prepare_commonvoice", "prepare_mls", "detect_layout", "normalize_transcript", "CSV_HEADER"]
