#!/usr/bin/env python3
"""Reconstruction evaluation of exported tokenizers: WER, spectral, F0 and duration metrics.

Rows of the table:

* ``original``: the source audio itself (ASR and aligner reference points);
* ``units_topline``: the source's ground-truth units (unit extractor of the FIRST
  system) through the same vocoder: the best any token -> unit decoder can do;
* one row per ``--system name=DIR``: encode (audio + transcript) -> decode -> vocoder.

Every reconstruction is scaled to the source's RMS before scoring (the
``griffin_lim`` vocoder does not calibrate its level) and resampled to the
source rate. Metrics (``taste_toolkit.metrics``), per utterance and row:
WER (Whisper tiny.en via faster-whisper, corpus WER per row in the summary),
log-mel distance and MCD (DTW-aligned), F0 RMSE/correlation, duration ratio,
and word duration consistency (share of source words whose reconstructed
duration is within 25 ms). Word boundaries of both sides come from the SAME
aligner (faster-whisper word timestamps); a second column takes the source
side from the corpus metadata (``word_start``/``word_end``) so the aligner's
bias is visible (the ``original`` row of that column is the aligner vs. the
metadata).

Decoding defaults to top-k sampling (k=25, temperature 1, a generator seeded
per row and utterance): greedy decoding (``--top-k 0``) loops on one unit for
seconds on these models (dev split: longest runs of 57-180 identical units,
many utterances stopped at the length limit; 8-14 with sampling).

Usage::

    python recipes/librispeech/evaluate_reconstruction.py \\
        --system taste=results/taste/1986/tokenizer --system text_only=results/exp_tx_pos/1986/tokenizer \\
        --split-dir results/synthetic_corpus/test --output results/eval_reconstruction

Outputs in ``--output``: ``per_utterance.csv`` (resumable: rows already there,
keyed by row + id, are skipped), ``summary.md``, ``summary.json``,
``reconstruction.png`` (per-word durations, log-mel spectrograms),
``wavs/<row>/<id>.wav`` for the first 3 utterances and ``config.json`` (a rerun
with other settings is refused).
"""

import argparse
import collections
import contextlib
import csv
import difflib
import hashlib
import json
import math
import os
import sys
import time
import zlib

import numpy as np

ORIGINAL, TOPLINE = "original", "units_topline"
CSV_NAME, CONFIG_NAME = "per_utterance.csv", "config.json"
FIELDS = [
    "row", "id", "duration_s", "ref_text", "hyp_text", "wer", "log_mel_dist", "mcd_db", "f0_rmse_hz",
    "f0_corr", "voiced_frames", "duration_ratio", "consistency_asr", "consistent_asr", "words_asr",
    "consistency_meta", "consistent_meta", "words_meta", "speech_tokens", "units", "hit_max_len",
    "longest_run_s", "asr_words", "seconds",
]
SAVE_WAVS = 3
TOLERANCE = 0.025


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--system", action="append", required=True, metavar="NAME=DIR",
                   help="exported tokenizer folder (repeatable; the first one gives the units topline)")
    p.add_argument("--split-dir", required=True, help="split folder with metadata.jsonl")
    p.add_argument("--output", required=True, help="output folder (results/eval_*)")
    p.add_argument("--limit", type=int, default=0, help="first N utterances only (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the sampling generators")
    p.add_argument("--top-k", type=int, default=25, help="top-k sampling; 0 = greedy")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-len-ratio", type=float, default=20.0, help="decoder stops at this x text tokens")
    p.add_argument("--asr-compute-type", default="int8", help="CTranslate2 compute type of the ASR")
    p.add_argument("--asr-beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="torch and ASR threads")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


# ------------------------------------------------------------------ inputs


def parse_systems(specs):
    """``["name=dir", ...]`` -> ordered ``{name: dir}``; names must be unique and not reserved."""
    from taste_toolkit.errors import InputError

    systems = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise InputError(f"--system takes NAME=DIR, got {spec!r}.")
        if name in (ORIGINAL, TOPLINE) or name in systems:
            raise InputError(f"System name {name!r} is reserved or repeated; pick another.")
        systems[name] = folder
    return systems


def load_split(split_dir, limit=0):
    """Read ``metadata.jsonl``; audio paths are relative to the split's parent (or the split)."""
    from taste_toolkit.errors import InputError

    path = os.path.join(split_dir, "metadata.jsonl")
    if not os.path.isfile(path):
        raise InputError(f"{path} not found: --split-dir must be a split folder of the synthetic corpus.")
    with open(path, encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]
    items = items[:limit] if limit > 0 else items
    for item in items:
        for base in (os.path.dirname(os.path.abspath(split_dir)), split_dir):
            if os.path.isfile(os.path.join(base, item["audio"])):
                item["path"] = os.path.join(base, item["audio"])
                break
        else:
            raise InputError(f"Audio {item['audio']!r} of {item['id']} not found next to {split_dir}.")
    return items


def read_done(csv_path):
    """Rows already written: ``{(row, id): record}`` (values as strings).

    A last line cut by an interruption (no final newline) is removed first, so
    appending continues on a clean line and that row is recomputed.
    """
    done = {}
    if not os.path.isfile(csv_path):
        return done
    with open(csv_path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
    with open(csv_path, newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            if None not in rec.values() and None not in rec:
                done[(rec["row"], rec["id"])] = rec
    return done


@contextlib.contextmanager
def cached_pitch_tracks(size=4):
    """Memoize ``metrics.signal.pitch_track`` by content for the duration of the run.

    ``f0_metrics`` runs pYIN (the slowest metric, ~1 s per second of audio on
    shared cores) on the source again for every row; the source's track is the
    same each time. ``f0_metrics`` looks ``pitch_track`` up in its module at call
    time, so swapping in this exact-result cache halves the F0 cost.
    """
    from taste_toolkit.metrics import signal

    original, cache = signal.pitch_track, collections.OrderedDict()

    def pitch_track(wav, sample_rate):
        x = wav.detach().cpu().numpy() if hasattr(wav, "detach") else np.asarray(wav)
        key = (int(sample_rate), x.dtype.str, x.shape, hashlib.sha1(np.ascontiguousarray(x).tobytes()).digest())
        if key not in cache:
            cache[key] = original(wav, sample_rate)
            if len(cache) > size:
                cache.popitem(last=False)
        return cache[key]

    signal.pitch_track = pitch_track
    try:
        yield
    finally:
        signal.pitch_track = original


def check_config(out_dir, config):
    """Write ``config.json`` or refuse to resume a run made with other settings."""
    from taste_toolkit.errors import InputError

    path = os.path.join(out_dir, CONFIG_NAME)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old != config:
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise InputError(f"{out_dir} holds results made with other settings ({', '.join(diff)}); "
                             "use another --output or delete that folder.")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)


# ------------------------------------------------------------------ metrics


def _resample(wav, sr, target):
    from scipy.signal import resample_poly

    if sr == target:
        return wav
    g = math.gcd(int(sr), int(target))
    return resample_poly(wav, target // g, sr // g).astype(np.float32)


def match_rms(ref, hyp):
    """Scale ``hyp`` to the RMS of ``ref`` (the vocoder's level is not calibrated)."""
    r, h = float(np.sqrt(np.mean(ref ** 2))), float(np.sqrt(np.mean(hyp ** 2)))
    return (hyp * (r / h)).astype(np.float32) if h > 1e-8 else hyp


def longest_run(units):
    """Length of the longest run of one repeated unit."""
    best = cur = 1 if len(units) else 0
    for a, b in zip(units[:-1], units[1:]):
        cur = cur + 1 if a == b else 1
        best = max(best, cur)
    return best


def matched_durations(ref_words, hyp_words):
    """``[(ref_dur, hyp_dur)]`` of the words paired as in ``word_duration_consistency``."""
    from taste_toolkit.metrics.durations import normalize_word

    def norm(words):
        kept = [(normalize_word(w), e - s) for w, s, e in words]
        return [t for t, _ in kept if t], [d for t, d in kept if t]

    (a, da), (b, db) = norm(ref_words), norm(hyp_words)
    m = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return [(da[x.a + k], db[x.b + k]) for x in m.get_matching_blocks() for k in range(x.size)]


def score(item, ref, hyp, sr, asr, ref_asr_words):
    """All metrics of one reconstruction ``hyp`` of source ``ref`` (both ``(T,)`` at ``sr``)."""
    from taste_toolkit.metrics import (duration_ratio, f0_metrics, log_mel_distance,
                                       mel_cepstral_distortion, word_duration_consistency,
                                       word_error_rate)

    hyp_text = asr.transcribe(hyp, sr)
    hyp_words = asr.transcribe_words(hyp, sr)
    ref_words = ref_asr_words if ref_asr_words is not None else hyp_words
    meta_words = list(zip(item["words"], item["word_start"], item["word_end"]))
    c_asr = word_duration_consistency(ref_words, hyp_words, TOLERANCE)
    c_meta = word_duration_consistency(meta_words, hyp_words, TOLERANCE)
    f0 = f0_metrics(ref, hyp, sr)
    return {
        "duration_s": len(ref) / sr, "ref_text": item["text"], "hyp_text": hyp_text,
        "wer": word_error_rate([item["text"]], [hyp_text])["wer"],
        "log_mel_dist": log_mel_distance(ref, hyp, sr), "mcd_db": mel_cepstral_distortion(ref, hyp, sr),
        "f0_rmse_hz": f0["f0_rmse_hz"], "f0_corr": f0["f0_corr"], "voiced_frames": f0["voiced_frames"],
        "duration_ratio": duration_ratio(len(ref), len(hyp)),
        "consistency_asr": c_asr["consistency"], "consistent_asr": c_asr["consistent"], "words_asr": c_asr["total"],
        "consistency_meta": c_meta["consistency"], "consistent_meta": c_meta["consistent"],
        "words_meta": c_meta["total"], "asr_words": json.dumps(hyp_words),
    }


# ------------------------------------------------------------------ reconstruction


def reconstruct(row, tok, item, wav, sr, args):
    """Waveform of ``row`` for one utterance + decoding diagnostics."""
    import torch

    if row == TOPLINE:
        units_sr = tok.units.sample_rate
        x = torch.from_numpy(_resample(wav, sr, units_sr))
        units, lengths = tok.units(x[None], torch.tensor([x.numel()]))
        units = units[0, : int(lengths[0])]
        extra = {"speech_tokens": "", "hit_max_len": 0}
    else:
        tokens = tok.encode(wav, sr, item["text"])
        gen = torch.Generator().manual_seed(args.seed + zlib.crc32(f"{row}/{item['id']}".encode()))
        units = tok.decode_units(tokens, top_k=args.top_k, temperature=args.temperature, generator=gen,
                                 max_len_ratio=args.max_len_ratio)[0]
        limit = math.floor(args.max_len_ratio * tokens.text_ids.numel())
        extra = {"speech_tokens": tokens.num_speech_tokens, "hit_max_len": int(units.numel() >= limit)}
    out = tok.vocode([units])[0].numpy().astype(np.float32)
    out = _resample(out, tok.vocoder.sample_rate, sr)
    extra.update(units=int(units.numel()), longest_run_s=longest_run(units.tolist()) / tok.units.frame_rate)
    return out, extra


def _write_wav(path, wav, sr):
    import soundfile as sf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    sf.write(path, wav / peak * 0.99 if peak > 0.99 else wav, sr, subtype="PCM_16")


def run_rows(items, systems, toks, asr, args, csv_path, wav_dir):
    """Compute every missing (row, utterance) and append it to the CSV."""
    import soundfile as sf
    from tqdm import tqdm

    rows = [ORIGINAL, TOPLINE] + list(systems)
    done = read_done(csv_path)
    todo = [(r, it) for it in items for r in rows if (r, it["id"]) not in done]
    new_file = not os.path.isfile(csv_path) or os.path.getsize(csv_path) == 0
    first = toks[next(iter(systems))]
    with open(csv_path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        bar = tqdm(todo, desc="rows x utterances", disable=args.no_progress, dynamic_ncols=True)
        cache = {}
        for row, item in bar:
            bar.set_postfix_str(f"{row} {item['id']}")
            start = time.time()
            if item["id"] not in cache:
                cache.clear()
                wav, sr = sf.read(item["path"], dtype="float32", always_2d=True)
                cache[item["id"]] = (wav.mean(axis=1), sr)
            ref, sr = cache[item["id"]]
            if row == ORIGINAL:
                hyp, extra = ref, {"speech_tokens": "", "units": "", "hit_max_len": "", "longest_run_s": ""}
            else:
                hyp, extra = reconstruct(row, first if row == TOPLINE else toks[row], item, ref, sr, args)
                hyp = match_rms(ref, hyp)
            ref_words = None if row == ORIGINAL else json.loads(done[(ORIGINAL, item["id"])]["asr_words"])
            rec = {"row": row, "id": item["id"], **score(item, ref, hyp, sr, asr, ref_words), **extra}
            rec["seconds"] = round(time.time() - start, 3)
            writer.writerow(rec)
            f.flush()
            done[(row, item["id"])] = {k: str(v) for k, v in rec.items()}
            if items.index(item) < SAVE_WAVS:
                _write_wav(os.path.join(wav_dir, row, f"{item['id']}.wav"), hyp, sr)
    return done


# ------------------------------------------------------------------ summary


def _plain(obj):
    """JSON-safe copy: NaN/inf -> None, NumPy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def summarize(records, rows, rates):
    """Per-row summary: corpus WER, means of the signal metrics, pooled duration consistency."""
    from taste_toolkit.metrics import word_error_rate

    by_key = {(r["row"], r["id"]): r for r in records}
    out = []
    for row in rows:
        recs = [r for r in records if r["row"] == row]
        pairs = [p for r in recs if (ORIGINAL, r["id"]) in by_key
                 for p in matched_durations(json.loads(by_key[(ORIGINAL, r["id"])]["asr_words"]),
                                            json.loads(r["asr_words"]))]
        diffs = np.abs(np.diff(np.array(pairs, dtype=float).reshape(-1, 2), axis=1))
        if not recs:
            continue
        col = lambda k: np.array([_num(r[k]) for r in recs])  # noqa: E731
        mean = lambda k: float(np.nanmean(col(k))) if np.isfinite(col(k)).any() else float("nan")  # noqa: E731
        wer = word_error_rate([r["ref_text"] for r in recs], [r["hyp_text"] for r in recs])
        out.append({
            "row": row, "utterances": len(recs), **rates[row], "wer": wer["wer"], "wer_detail": wer,
            "log_mel_dist": mean("log_mel_dist"), "mcd_db": mean("mcd_db"), "f0_corr": mean("f0_corr"),
            "f0_rmse_hz": mean("f0_rmse_hz"),
            "consistency_asr": col("consistent_asr").sum() / max(col("words_asr").sum(), 1),
            "consistency_meta": col("consistent_meta").sum() / max(col("words_meta").sum(), 1),
            "duration_ratio": mean("duration_ratio"),
            # Among words the ASR found on both sides only: separates timing from intelligibility.
            "matched_words": len(pairs), "consistency_matched": float(np.mean(diffs <= TOLERANCE + 1e-9))
            if len(pairs) else float("nan"), "abs_word_dur_diff_ms": 1000 * float(np.mean(diffs)) if len(pairs)
            else float("nan"),
            "hit_max_len": int(np.nansum(col("hit_max_len"))), "longest_run_s": mean("longest_run_s"),
            "seconds": float(col("seconds").sum()),
        })
    return out


def token_rates(rows, systems, toks, records):
    """Speech-token rate (Hz) and bitrate (bps) of each row."""
    first = toks[next(iter(systems))]
    rates = {ORIGINAL: {"token_rate_hz": float("nan"), "bitrate_bps": float("nan")},
             TOPLINE: {"token_rate_hz": first.units.frame_rate,
                       "bitrate_bps": first.units.frame_rate * math.log2(first.units.num_units)}}
    for name in systems:
        recs = [r for r in records if r["row"] == name]
        seconds = sum(_num(r["duration_s"]) for r in recs)
        rate = sum(_num(r["speech_tokens"]) for r in recs) / seconds if seconds else float("nan")
        bits = toks[name].info()["bits_per_speech_token"]
        rates[name] = {"token_rate_hz": rate, "bitrate_bps": bits * rate}
    return rates


def markdown(summary, config, wall):
    f = lambda x, p=3: "—" if not np.isfinite(x) else f"{x:.{p}f}"  # noqa: E731
    head = ["row", "token rate (Hz)", "bitrate (bps)", "WER", "log-mel dist", "MCD (dB)", "F0 corr",
            "F0 RMSE (Hz)", "dur. consistency (ASR)", "dur. consistency (metadata)", "duration ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        lines.append("| " + " | ".join([
            s["row"], f(s["token_rate_hz"], 2), f(s["bitrate_bps"], 1), f(s["wer"]), f(s["log_mel_dist"]),
            f(s["mcd_db"], 2), f(s["f0_corr"]), f(s["f0_rmse_hz"], 1), f(s["consistency_asr"]),
            f(s["consistency_meta"]), f(s["duration_ratio"])]) + " |")
    dec = "greedy" if config["top_k"] == 0 else f"top-k {config['top_k']}, temperature {config['temperature']}"
    n = summary[0]["utterances"] if summary else 0
    notes = [
        "", f"{n} utterances of `{config['split_dir']}`; decoding: {dec}, seed {config['seed']}; ASR: Whisper "
        f"tiny.en (faster-whisper, {config['asr_compute_type']}, beam {config['asr_beam']}); reconstructions "
        "RMS-matched to the source. WER is corpus-level; spectral/F0/duration-ratio columns are means over "
        "utterances (F0 over utterances with >= 3 jointly voiced frames); duration consistency is the share of "
        "source words whose duration is within 25 ms, pooled over words (unmatched words count as inconsistent).",
        "", "Diagnostics: source words the ASR also found in the reconstruction (same word, sequence-aligned), "
        "the share of those within 25 ms and their mean absolute duration difference (timing without the "
        "intelligibility penalty); decoding failures; compute time.", "",
        "| row | matched words | consistency of matched | mean abs word dur. diff (ms) | utterances stopped "
        "at max length | mean longest unit run (s) | compute (s) |", "|---|---|---|---|---|---|---|",
    ]
    notes += [f"| {s['row']} | {s['matched_words']} | {f(s['consistency_matched'])} | "
              f"{f(s['abs_word_dur_diff_ms'], 0)} | {s['hit_max_len']} | {f(s['longest_run_s'], 2)} | "
              f"{s['seconds']:.0f} |" for s in summary]
    total = sum(s["seconds"] for s in summary)
    notes += ["", f"Compute summed over all rows x utterances: {total:.0f} s; wall time of the last "
              f"(possibly resumed) run: {wall:.0f} s."]
    return "\n".join(lines + notes) + "\n"


def plot(records, rows, systems, items, wav_dir, path):
    """Per-word duration scatter (source vs reconstruction) + log-mel of the first utterance per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    from taste_toolkit.metrics.signal import log_mel

    by_key = {(r["row"], r["id"]): r for r in records}
    names = list(systems)
    fig = plt.figure(figsize=(4.2 * max(len(names), 2), 3.6 + 1.9 * len(rows)))
    grid = fig.add_gridspec(1 + len(rows), len(names), height_ratios=[2.2] + [1] * len(rows))
    for k, name in enumerate(names):
        ax = fig.add_subplot(grid[0, k])
        pairs = []
        for it in items:
            src, rec = by_key.get((ORIGINAL, it["id"])), by_key.get((name, it["id"]))
            if src and rec:
                pairs += matched_durations(json.loads(src["asr_words"]), json.loads(rec["asr_words"]))
        if pairs:
            x, y = np.array(pairs).T
            ax.scatter(x, y, s=8, alpha=0.6)
            top = max(x.max(), y.max()) * 1.05
            ax.plot([0, top], [0, top], "k-", lw=0.8)
            ax.fill_between([0, top], [-TOLERANCE, top - TOLERANCE], [TOLERANCE, top + TOLERANCE],
                            color="k", alpha=0.12, label="±25 ms")
            ax.legend(loc="upper left", fontsize=8)
        ax.set(title=f"{name}: word durations ({len(pairs)} matched)", xlabel="source (s, ASR-aligned)",
               ylabel="reconstruction (s)")
    utt, axes, longest = items[0]["id"], [], 0.0
    for k, row in enumerate(rows):
        ax = fig.add_subplot(grid[1 + k, :])
        wav_path = os.path.join(wav_dir, row, f"{utt}.wav")
        if os.path.isfile(wav_path):
            wav, sr = sf.read(wav_path, dtype="float32")
            lm = log_mel(wav, sr)
            ax.imshow(lm, origin="lower", aspect="auto", cmap="magma", extent=(0, len(wav) / sr, 0, lm.shape[0]))
            longest = max(longest, len(wav) / sr)
        axes.append(ax)
        ax.set_ylabel("mel")
        ax.set_title(f"{row} — {utt}", fontsize=9, loc="left")
    for ax in axes:  # one time axis for every row, so lengths compare at a glance
        ax.set_xlim(0, longest or 1.0)
    ax.set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ main


def main(argv=None):
    """Run the evaluation; returns the summary (as written to ``summary.json``, NaN -> None)."""
    import torch

    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.errors import InputError, MissingResourceError
    from taste_toolkit.metrics import OfflineASR

    args = parse_args(argv)
    wall = time.time()
    torch.set_num_threads(max(1, args.threads))
    if args.top_k < 0 or args.temperature <= 0:
        raise InputError("--top-k must be >= 0 and --temperature > 0.")
    systems = parse_systems(args.system)
    items = load_split(args.split_dir, args.limit)
    if not items:
        raise InputError(f"No utterances in {args.split_dir}.")
    toks = {name: TasteTokenizer.from_pretrained(folder) for name, folder in systems.items()}
    for name, tok in toks.items():
        if tok.vocoder is None or tok.units is None:
            raise MissingResourceError(f"System {name!r} has no vocoder or unit extractor; export it with both.")
    os.makedirs(args.output, exist_ok=True)
    config = {"systems": systems, "fingerprints": {n: t.fingerprint for n, t in toks.items()},
              "split_dir": args.split_dir, "seed": args.seed, "top_k": args.top_k,
              "temperature": args.temperature, "max_len_ratio": args.max_len_ratio,
              "asr_compute_type": args.asr_compute_type, "asr_beam": args.asr_beam}
    check_config(args.output, config)
    asr = OfflineASR(compute_type=args.asr_compute_type, beam_size=args.asr_beam, cpu_threads=args.threads)
    csv_path, wav_dir = os.path.join(args.output, CSV_NAME), os.path.join(args.output, "wavs")
    with cached_pitch_tracks():
        done = run_rows(items, systems, toks, asr, args, csv_path, wav_dir)

    rows = [ORIGINAL, TOPLINE] + list(systems)
    ids = {it["id"] for it in items}
    records = [r for (_, i), r in done.items() if i in ids]
    summary = summarize(records, rows, token_rates(rows, systems, toks, records))
    wall = time.time() - wall
    with open(os.path.join(args.output, "summary.md"), "w", encoding="utf-8") as f:
        f.write(markdown(summary, config, wall))
    result = _plain({"config": config, "rows": summary, "wall_seconds": wall, "utterances": len(items)})
    with open(os.path.join(args.output, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    plot(records, rows, systems, items, wav_dir, os.path.join(args.output, "reconstruction.png"))
    return result


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    summary = main()
    with open(os.path.join(parse_args().output, "summary.md"), encoding="utf-8") as f:
        print(f.read())
