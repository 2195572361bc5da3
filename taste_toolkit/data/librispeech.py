"""LibriSpeech manifests (SpeechBrain CSVs) with an account of every excluded item.

Expected layout (the one LibriSpeech ships)::

    <data_folder>/<split>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac   (or .wav)
    <data_folder>/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt    lines "<ID> TRANSCRIPT"

:func:`prepare_librispeech` writes ``<save_folder>/<split>.csv`` with the columns
``ID, duration, wav, spk_id, wrd`` (``duration`` in seconds, ``wav`` absolute),
sorted by ``ID``. Nothing is dropped silently: each excluded item is listed with
its ID, path and reason in ``<save_folder>/prepare_report.json``, the counts per
reason are logged, and ``kept + excluded + not_selected == total_items`` for
every split. An *item* is an audio file, or a transcript ID that has no audio.

Each item gets the first reason that applies, in this order: ``unexpected_name``,
``duplicate_id``, ``audio_without_transcript``, ``empty_transcript``,
``audio_unreadable`` (header), ``audio_zero_length``, ``audio_decode_error``
(samples cannot be decoded, or fewer than the header announced),
``audio_non_finite`` (NaN/inf), ``too_long``, ``too_short``; transcript IDs
without audio are ``transcript_without_audio``. Data problems come before the
duration policy so that a broken file is reported as broken.

Sample rates other than 16 kHz and multi-channel files are kept (the data
pipeline resamples and downmixes) and listed under ``warnings``.

Authors: taste-toolkit contributors.
"""

import csv
import json
import logging
import os
import re
import tempfile
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import soundfile as sf

from taste_toolkit.errors import ConfigError, DataPreparationError

logger = logging.getLogger(__name__)

CSV_HEADER = ["ID", "duration", "wav", "spk_id", "wrd"]
OPTIONS_FILE = "prepare_options.json"
REPORT_FILE = "prepare_report.json"
EXPECTED_SAMPLE_RATE = 16000
AUDIO_EXTENSIONS = (".flac", ".wav")
# Bump when the CSV/report content changes, so old outputs are rebuilt.
FORMAT_VERSION = 1
_ID_PATTERN = re.compile(r"^[^-\s]+-[^-\s]+-[^-\s]+$")
_LAYOUT_HINT = (
    "<data_folder>/<split>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac (or .wav) "
    "with <spk>-<chapter>.trans.txt in each chapter folder"
)


def prepare_librispeech(
    data_folder: str,
    save_folder: str,
    splits: Sequence[str] = ("train-clean-100",),
    max_duration: Optional[float] = 30.0,
    min_duration: float = 0.0,
    select_n_sentences: Union[int, Sequence[Optional[int]], None] = None,
    skip_prep: bool = False,
) -> dict:
    """Write one SpeechBrain CSV per LibriSpeech split and report exclusions.

    Arguments
    ---------
    data_folder : str
        Folder holding the split folders (e.g. ``.../LibriSpeech``).
    save_folder : str
        Where ``<split>.csv``, ``prepare_options.json`` and
        ``prepare_report.json`` are written (created if missing).
    splits : sequence of str
        Split folder names, e.g. ``("train-clean-100", "dev-clean")``.
    max_duration : float or None
        Longest kept utterance in seconds (Whisper's encoder window is 30 s);
        ``None`` disables the limit.
    min_duration : float
        Shortest kept utterance in seconds.
    select_n_sentences : int, list or None
        Keep only the first N valid utterances (by ID) of each split; a list
        gives one N (or None) per split, as in SpeechBrain. Items after the
        N-th kept one are not examined and counted as ``not_selected``.
    skip_prep : bool
        If True, do nothing and return the stored report (or ``{}``).

    Returns
    -------
    dict
        The report: ``{"splits": {split: {...}}, "options": {...}, "reused": bool}``.
        Per split: ``csv``, ``total_items``, ``kept``, ``kept_hours``,
        ``n_excluded``, ``excluded`` (count per reason), ``not_selected``,
        ``excluded_items`` (``id``, ``path``, ``reason``, ``detail``), ``warnings``.

    Raises
    ------
    DataPreparationError
        If ``data_folder`` or a split folder does not exist.
    ConfigError
        If the duration limits or ``select_n_sentences`` are invalid.
    """
    save_folder = os.path.abspath(save_folder)
    report_path = os.path.join(save_folder, REPORT_FILE)
    if skip_prep:
        logger.info("skip_prep=True: LibriSpeech preparation skipped.")
        return _load_json(report_path) or {}

    splits = list(splits)
    n_select = _check_options(splits, max_duration, min_duration, select_n_sentences)
    data_folder = os.path.abspath(data_folder)
    if not os.path.isdir(data_folder):
        raise DataPreparationError(
            f"LibriSpeech data_folder {data_folder!r} does not exist. Expected layout: "
            f"{_LAYOUT_HINT}. Download and extract LibriSpeech, then pass its folder."
        )
    for split in splits:
        split_dir = os.path.join(data_folder, split)
        if not os.path.isdir(split_dir):
            raise DataPreparationError(
                f"LibriSpeech split folder {split_dir!r} does not exist. Expected layout: "
                f"{_LAYOUT_HINT}. Check the split name or extract that split."
            )

    options = {
        "format_version": FORMAT_VERSION,
        "data_folder": data_folder,
        "splits": splits,
        "max_duration": max_duration,
        "min_duration": min_duration,
        "select_n_sentences": n_select,
        # Cheap change detection: re-scanning 28k files with os.stat is fast,
        # decoding them is not.
        "fingerprints": {s: _fingerprint(os.path.join(data_folder, s)) for s in splits},
    }
    csv_paths = {s: os.path.join(save_folder, f"{s}.csv") for s in splits}
    options_path = os.path.join(save_folder, OPTIONS_FILE)
    stored = _load_json(options_path)
    report = _load_json(report_path)
    if stored == options and report is not None:
        # A reused CSV must be complete: a truncated or garbled one is rebuilt.
        broken = {
            s: check_manifest(p, report.get("splits", {}).get(s, {}).get("kept")) for s, p in csv_paths.items()
        }
        broken = {s: problem for s, problem in broken.items() if problem}
        if not broken:
            logger.info("LibriSpeech CSVs in %s are up to date; preparation skipped.", save_folder)
            report["reused"] = True
            return report
        logger.warning("Manifest(s) in %s are damaged (%s); rebuilding them.", save_folder,
                       "; ".join(f"{s}.csv: {problem}" for s, problem in broken.items()))

    os.makedirs(save_folder, exist_ok=True)
    # Remove the marker first: if this run dies halfway, the next one redoes it.
    if os.path.exists(options_path):
        os.remove(options_path)
    report = {"options": options, "splits": {}, "reused": False}
    for split, n in zip(splits, n_select):
        report["splits"][split] = _prepare_split(
            os.path.join(data_folder, split), csv_paths[split], max_duration, min_duration, n
        )
        _log_summary(split, report["splits"][split])
    _write_atomic(report_path, json.dumps(report, indent=1, ensure_ascii=False))
    _write_atomic(options_path, json.dumps(options, indent=1))
    return report


def check_manifest(path: str, expected_rows: Optional[int] = None) -> Optional[str]:
    """Why the CSV at ``path`` is not a complete manifest (None when it is).

    Checks the header, that every row has all fields and a numeric duration, and
    (when given) the number of rows against the report's ``kept`` count.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    if not rows or rows[0] != CSV_HEADER:
        return f"header is {rows[0] if rows else None}, expected {CSV_HEADER}"
    for number, row in enumerate(rows[1:], 2):
        if len(row) != len(CSV_HEADER):
            return f"line {number} has {len(row)} fields instead of {len(CSV_HEADER)} (truncated?)"
        try:
            float(row[1])
        except ValueError:
            return f"line {number} has duration {row[1]!r} (truncated?)"
    if expected_rows is not None and len(rows) - 1 != expected_rows:
        return f"{len(rows) - 1} rows, the preparation report says {expected_rows} (truncated?)"
    return None


def _check_options(splits, max_duration, min_duration, select_n_sentences) -> List:
    """Validate the options; return one ``select_n_sentences`` entry per split."""
    if not splits or not all(isinstance(s, str) and s for s in splits):
        raise ConfigError(f"splits must be a non-empty list of folder names, got {splits!r}.")
    if len(set(splits)) != len(splits):
        raise ConfigError(f"splits contains duplicates: {splits!r}.")
    if not (isinstance(min_duration, (int, float)) and min_duration >= 0):
        raise ConfigError(f"min_duration must be a number >= 0, got {min_duration!r}.")
    if max_duration is not None and not (
        isinstance(max_duration, (int, float)) and max_duration > min_duration
    ):
        raise ConfigError(
            f"max_duration must be None or > min_duration ({min_duration}), got {max_duration!r}."
        )
    if select_n_sentences is None or isinstance(select_n_sentences, int):
        n_select = [select_n_sentences] * len(splits)
    else:
        n_select = list(select_n_sentences)
        if len(n_select) != len(splits):
            raise ConfigError(
                f"select_n_sentences has {len(n_select)} entries for {len(splits)} splits; "
                "give one int (or None) per split, or a single int."
            )
    for n in n_select:
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ConfigError(f"select_n_sentences entries must be ints >= 1 or None, got {n!r}.")
    return n_select


def _fingerprint(folder: str) -> Dict[str, int]:
    """Number of files, their total size and the newest mtime (ns) under ``folder``.

    Directory mtimes are included so that renaming a file is noticed too.
    """
    n_files, total, newest = 0, 0, os.stat(folder).st_mtime_ns
    for root, _, files in os.walk(folder):
        newest = max(newest, os.stat(root).st_mtime_ns)
        for name in files:
            st = os.stat(os.path.join(root, name))
            n_files += 1
            total += st.st_size
            newest = max(newest, st.st_mtime_ns)
    return {"n_files": n_files, "total_bytes": total, "newest_mtime_ns": newest}


def _scan(split_dir: str):
    """Collect audio paths per ID and transcript lines per ID under ``split_dir``."""
    audio: Dict[str, List[str]] = {}
    texts: Dict[str, List[str]] = {}
    for root, dirs, files in os.walk(split_dir):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if name.endswith(".trans.txt"):
                try:
                    with open(path, encoding="utf-8") as f:
                        lines = f.read().splitlines()
                except UnicodeDecodeError as err:
                    raise DataPreparationError(
                        f"Transcript {path!r} is not UTF-8 text ({err}); LibriSpeech "
                        "transcripts are plain ASCII, re-extract the archive."
                    ) from err
                for line in lines:
                    if line.strip():
                        utt_id, _, text = line.strip().partition(" ")
                        texts.setdefault(utt_id, []).append(" ".join(text.split()))
            elif os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                audio.setdefault(os.path.splitext(name)[0], []).append(path)
    return audio, texts


def _check_audio(path: str, info) -> Optional[tuple]:
    """Decode the whole file; return ``(reason, detail)`` if it is unusable."""
    n_read = 0
    try:
        # Blocks keep memory flat on long files; float32 is enough for a finiteness check.
        for block in sf.blocks(path, blocksize=1 << 16, dtype="float32", always_2d=True):
            if not np.isfinite(block).all():
                return "audio_non_finite", f"NaN/inf sample near frame {n_read}"
            n_read += len(block)
    except (sf.SoundFileError, RuntimeError, ValueError) as err:
        return "audio_decode_error", f"decoding failed after {n_read} frames: {err}"
    if n_read != info.frames:
        return "audio_decode_error", f"header says {info.frames} frames, decoded {n_read}"
    return None


def _prepare_split(split_dir, csv_path, max_duration, min_duration, n_select) -> dict:
    """Examine every item of one split, write its CSV and return its report."""
    audio, texts = _scan(split_dir)
    excluded: List[dict] = []
    rows: List[list] = []
    warnings = {"non_16k_sample_rate": {}, "multi_channel": []}

    def exclude(utt_id, path, reason, detail=""):
        excluded.append({"id": utt_id, "path": path, "reason": reason, "detail": detail})

    for utt_id in sorted(set(texts) - set(audio)):
        exclude(utt_id, None, "transcript_without_audio",
                f"{len(texts[utt_id])} transcript line(s), no .flac/.wav file")

    not_selected = 0
    for utt_id in sorted(audio):
        paths = audio[utt_id]
        if n_select is not None and len(rows) >= n_select:
            not_selected += len(paths)
            continue
        lines = texts.get(utt_id, [])
        if not _ID_PATTERN.match(utt_id):
            for p in paths:
                exclude(utt_id, p, "unexpected_name", "file name is not <spk>-<chapter>-<utt>")
            continue
        if len(paths) > 1 or len(lines) > 1:
            # Ambiguous: we cannot tell which copy is right, so keep none.
            for p in paths:
                exclude(utt_id, p, "duplicate_id",
                        f"{len(paths)} audio file(s), {len(lines)} transcript line(s)")
            continue
        path = paths[0]
        if not lines:
            exclude(utt_id, path, "audio_without_transcript", "ID not found in any .trans.txt")
            continue
        if not lines[0]:
            exclude(utt_id, path, "empty_transcript", "transcript line has no words")
            continue
        try:
            info = sf.info(path)
        except (sf.SoundFileError, RuntimeError) as err:
            exclude(utt_id, path, "audio_unreadable", str(err))
            continue
        if info.frames <= 0 or info.samplerate <= 0:
            exclude(utt_id, path, "audio_zero_length", f"{info.frames} frames")
            continue
        problem = _check_audio(path, info)
        if problem is not None:
            exclude(utt_id, path, *problem)
            continue
        duration = info.frames / info.samplerate
        if max_duration is not None and duration > max_duration:
            exclude(utt_id, path, "too_long", f"{duration:.3f} s > max_duration {max_duration} s")
            continue
        if duration < min_duration:
            exclude(utt_id, path, "too_short", f"{duration:.3f} s < min_duration {min_duration} s")
            continue
        if info.samplerate != EXPECTED_SAMPLE_RATE:
            warnings["non_16k_sample_rate"][utt_id] = info.samplerate
        if info.channels != 1:
            warnings["multi_channel"].append(utt_id)
        rows.append([utt_id, f"{duration:.6f}", os.path.abspath(path),
                     utt_id.split("-")[0], lines[0]])
        if len(rows) % 2000 == 0:
            logger.info("%s: %d utterances checked", os.path.basename(split_dir), len(rows))

    _write_csv(csv_path, rows)
    counts: Dict[str, int] = {}
    for item in excluded:
        counts[item["reason"]] = counts.get(item["reason"], 0) + 1
    total = sum(len(p) for p in audio.values()) + len(set(texts) - set(audio))
    kept_seconds = sum(float(r[1]) for r in rows)
    if len(rows) + len(excluded) + not_selected != total:
        # Would mean an item fell through the checks above unaccounted for.
        raise RuntimeError(f"LibriSpeech accounting bug in {split_dir}: items do not add up.")
    return {
        "csv": csv_path,
        "total_items": total,
        "kept": len(rows),
        "kept_hours": kept_seconds / 3600.0,
        "n_excluded": len(excluded),
        "excluded": dict(sorted(counts.items())),
        "not_selected": not_selected,
        "excluded_items": sorted(excluded, key=lambda e: (e["id"], e["path"] or "")),
        "warnings": warnings,
    }


def _log_summary(split: str, rep: dict) -> None:
    """One line per split: kept N (H hours), excluded M by reason."""
    reasons = ", ".join(f"{k}={v}" for k, v in rep["excluded"].items()) or "none"
    msg = (f"LibriSpeech {split}: kept {rep['kept']} ({rep['kept_hours']:.2f} h), "
           f"excluded {rep['n_excluded']} ({reasons})")
    if rep["not_selected"]:
        msg += f", not selected {rep['not_selected']}"
    n_sr = len(rep["warnings"]["non_16k_sample_rate"])
    if n_sr:
        msg += f"; WARNING {n_sr} kept files are not 16 kHz (resampled when loaded)"
    if rep["n_excluded"] or n_sr:
        logger.warning(msg)
    else:
        logger.info(msg)


def _write_csv(path: str, rows: List[list]) -> None:
    """Write the SpeechBrain CSV atomically (temporary file + ``os.replace``)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".csv.tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_HEADER)
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _load_json(path: str) -> Optional[dict]:
    """Return the JSON content of ``path`` or None if missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


__all__ = ["prepare_librispeech", "check_manifest", "CSV_HEADER"]
