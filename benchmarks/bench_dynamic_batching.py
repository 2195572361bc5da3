#!/usr/bin/env python3
"""Dynamic batching vs fixed batches on LibriSpeech train-clean-100's length mix.

The embedded corpus (one grammar sentence per utterance, ~2-8 s) is too uniform for
dynamic batching to matter (benchmarks/README.md, item 5). This benchmark builds a
corpus whose utterance lengths follow LibriSpeech train-clean-100
(``generate_corpus(durations="librispeech-train-clean-100")``: mean ~12.7 s, 1.3-24.5 s;
the approximation and its sources are documented in
``taste_toolkit.data.synthetic_corpus.LIBRISPEECH_DURATIONS``) and measures, in one run:

1. **Padding (proxy, no training).** Over ``--proxy-epochs`` shuffled epochs, the
   padded audio of fixed batches of 8 (each padded to its longest utterance) and of
   SpeechBrain's ``DynamicBatchSampler`` with the recipe's settings (80 s per batch,
   10 buckets), on two length lists: the generated corpus' real durations, and
   28,539 durations drawn from the distribution (train-clean-100's size). Padding
   waste = padded / real - 1; "padded audio per second of speech" is the compute
   proxy, its ratio the speed-up that removing padding alone allows for a cost linear
   in the padded length; the ratio of batch size x longest^2 is the same for a
   quadratic cost (self-attention).
2. **Training throughput (real steps).** ``bench_training.stage1_benchmark`` on the
   generated corpus: ``TasteTokenizerBrain.fit_batch`` with the recipe's model
   (real Whisper tiny.en encoder, no encoder cache), dynamic batching vs fixed
   batches of 8 (and the official 30-s padded encoder on the fixed batches), each
   path trained until ``--audio-budget`` seconds of audio went through, after a
   warm-up batch. Ratio = (seconds per 100 s of audio, fixed) / (same, dynamic).

The corpus is written once to ``results/prepared/librispeech_mix_corpus`` (reused
when its options match). ``--quick`` skips synthesis: tone+noise utterances with
lengths drawn from the same distribution scaled by 0.1, the tiny model of the
suite's quick mode. Writes JSON (default ``benchmarks/measured/dynamic_batching.json``)::

    OMP_NUM_THREADS=2 python benchmarks/bench_dynamic_batching.py
    python benchmarks/bench_dynamic_batching.py --quick --output /tmp/d.json
"""

import argparse
import csv
import json
import os
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from bench_common import machine_description, report_json  # noqa: E402

DEFAULT_OUTPUT = os.path.join(HERE, "measured", "dynamic_batching.json")
CORPUS_ROOT = os.path.join(ROOT, "results/prepared/librispeech_mix_corpus")
TRAIN_CLEAN_100_UTTERANCES = 28539
TARGET = 1.5


# ------------------------------------------------------------------ padding proxy
def fixed_batches(num, batch_size, rng):
    order = rng.permutation(num)
    return [order[i : i + batch_size] for i in range(0, num, batch_size)]


def dynamic_batches(durations, epoch, max_batch_length=80.0, num_buckets=10):
    from speechbrain.dataio.sampler import DynamicBatchSampler

    sampler = DynamicBatchSampler(list(range(len(durations))), max_batch_length=max_batch_length,
                                  num_buckets=num_buckets, lengths_list=list(durations), shuffle=True,
                                  batch_ordering="random", epoch=epoch)
    return [[int(i) for i in b] for b in sampler]


def padding_stats(durations, batches):
    """Real audio, padded audio (each batch to its longest), waste, mean utterances per batch."""
    d = np.asarray(durations, dtype=float)
    real = float(sum(d[b].sum() for b in batches))
    padded = float(sum(d[b].max() * len(b) for b in batches))
    return {"real_s": round(real, 1), "padded_s": round(padded, 1), "padding_waste": round(padded / real - 1, 4),
            "batches": len(batches), "utterances_per_batch": round(sum(len(b) for b in batches) / len(batches), 2)}


def padding_proxy(durations, epochs=10, batch_size=8, max_batch_length=80.0, num_buckets=10, seed=0):
    """Padding of fixed vs dynamic batches over ``epochs`` shuffles of ``durations``."""
    rng = np.random.default_rng(seed)
    fixed = [b for _ in range(epochs) for b in fixed_batches(len(durations), batch_size, rng)]
    dynamic = [b for e in range(epochs) for b in dynamic_batches(durations, e, max_batch_length, num_buckets)]
    f, d = padding_stats(durations, fixed), padding_stats(durations, dynamic)
    # A cost quadratic in the padded length (self-attention): batch size x longest^2 per batch.
    lengths = np.asarray(durations, dtype=float)
    squared = [sum(len(b) * float(lengths[b].max()) ** 2 for b in batches) for batches in (fixed, dynamic)]
    # Every batch holds each utterance once per epoch: padded/real is the compute per second of speech.
    return {"utterances": len(durations), "epochs": epochs, "fixed": dict(f, batch_size=batch_size),
            "dynamic": dict(d, max_batch_length=max_batch_length, num_buckets=num_buckets),
            "padded_audio_ratio_fixed_over_dynamic": round((1 + f["padding_waste"]) / (1 + d["padding_waste"]), 3),
            "padded_length_squared_ratio_fixed_over_dynamic": round(squared[0] / squared[1], 3)}


def describe_durations(d):
    d = np.asarray(d, dtype=float)
    return {"count": int(d.size), "mean_s": round(float(d.mean()), 2), "median_s": round(float(np.median(d)), 2),
            "min_s": round(float(d.min()), 2), "max_s": round(float(d.max()), 2),
            "share_10_to_16_s": round(float(((d >= 10) & (d <= 16)).mean()), 3)}


# ------------------------------------------------------------------ corpora
def synthesized_manifest(root, speakers, per_speaker, workers, log=print):
    """Generate (or reuse) the LibriSpeech-mix corpus; its train manifest and durations."""
    from taste_toolkit.data.synthetic_corpus import generate_corpus

    summary = generate_corpus(root, seed=2024, num_speakers=speakers, utterances_per_split={"train": per_speaker},
                              num_workers=workers, durations="librispeech-train-clean-100", progress=False)
    log(f"  corpus: {summary['total_utterances']} utterances, {summary['total_hours'] * 60:.1f} min of audio "
        f"({summary['seconds_taken']:.0f} s to synthesize, or reused)")
    with open(os.path.join(root, "train", "metadata.jsonl")) as f:
        records = [json.loads(line) for line in f]
    manifest = os.path.join(root, "train.csv")
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "duration", "wav", "spk_id", "wrd"])
        for r in records:
            w.writerow([r["id"], r["duration"], os.path.join(root, r["audio"]), r["speaker"], r["text"]])
    targets = [r.get("target_duration") for r in records]
    return manifest, [r["duration"] for r in records], targets


def quick_manifest(folder, count=12, scale=0.1, seed=0):
    """Tone+noise utterances, lengths from the LibriSpeech approximation x ``scale`` (no synthesis)."""
    import soundfile as sf

    from taste_toolkit.data.synthetic_corpus import librispeech_durations

    durations = librispeech_durations(np.random.default_rng(seed), count) * scale
    g = torch.Generator().manual_seed(seed)
    words = "the cat sat on a red mat near big old trees by the river".split()
    path = os.path.join(folder, "train.csv")
    real = []
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "duration", "wav", "spk_id", "wrd"])
        for i, seconds in enumerate(durations):
            n = max(1600, int(16000 * seconds))
            t = torch.arange(n) / 16000
            wav = 0.2 * torch.sin(6.283 * (150 + 30 * i) * t) + 0.03 * torch.randn(n, generator=g)
            file = os.path.join(folder, f"utt{i}.flac")
            sf.write(file, wav.numpy(), 16000)
            text = " ".join(words[j % len(words)] for j in range(i, i + max(2, int(n / 16000 * 3)))).upper()
            w.writerow([f"utt{i}", n / 16000, file, "spk", text])
            real.append(n / 16000)
    return path, real


# ------------------------------------------------------------------ run
def run(quick=False, speakers=8, per_speaker=16, workers=2, audio_budget=800.0, proxy_epochs=10,
        corpus_root=CORPUS_ROOT, padded_30s=True, log=print):
    from bench_training import stage1_benchmark

    from taste_toolkit.data.synthetic_corpus import LIBRISPEECH_DURATIONS, librispeech_durations

    with tempfile.TemporaryDirectory() as tmp:
        if quick:
            manifest, durations = quick_manifest(tmp)
            targets, source = None, "12 tone utterances, LibriSpeech lengths x 0.1 (quick mode)"
            budget, sizes = None, dict(batch_size=2, max_batch_length=6.0, num_buckets=2)
        else:
            manifest, durations, targets = synthesized_manifest(corpus_root, speakers, per_speaker, workers, log)
            source, budget = "LibriSpeech-length synthetic corpus", audio_budget
            sizes = dict(batch_size=8, max_batch_length=80.0, num_buckets=10)
        drawn = librispeech_durations(np.random.default_rng(0), 1000 if quick else TRAIN_CLEAN_100_UTTERANCES)
        if quick:
            drawn = drawn * 0.1
        proxy = {"corpus": padding_proxy(durations, proxy_epochs, **sizes),
                 "drawn_train_clean_100_size": padding_proxy(drawn, 1 if not quick else 2, **sizes)}
        for name, p in proxy.items():
            log(f"  padding proxy ({name}): fixed waste {p['fixed']['padding_waste']:.0%}, dynamic waste "
                f"{p['dynamic']['padding_waste']:.0%}, padded-audio ratio {p['padded_audio_ratio_fixed_over_dynamic']:.2f}x")
        paths = ("dynamic", "fixed") if quick or not padded_30s else ("dynamic", "fixed", "fixed + padded 30-s")
        rows, stats = stage1_benchmark(quick=quick, log=log, audio_budget=budget, manifest=manifest, source=source,
                                       paths=paths, return_stats=True)
    training = {}
    dyn = stats["dynamic"]
    for name, st in stats.items():
        training[name] = {"audio_s": round(st["audio"], 1), "padded_audio_s": round(st["padded"], 1),
                          "padding_waste": round(st["padded"] / st["audio"] - 1, 4), "steps": st["steps"],
                          "utterances": st["utterances"], "seconds": round(st["seconds"], 2),
                          "seconds_per_100_s_audio": round(st["seconds"] / st["audio"] * 100, 3)}
    ratios = {name: round(training[name]["seconds_per_100_s_audio"] / training["dynamic"]["seconds_per_100_s_audio"], 2)
              for name in training if name != "dynamic"}
    main_ratio = ratios.get("fixed")
    return {
        "benchmark": "dynamic batching vs fixed batches on LibriSpeech train-clean-100's length mix",
        "command": "python benchmarks/bench_dynamic_batching.py" + (" --quick" if quick else
                                                                    f" --audio-budget {audio_budget:g}"
                                                                    + ("" if padded_30s else " --no-padded-30s")),
        "machine": machine_description(),
        "duration_distribution": {"name": "librispeech-train-clean-100", "parameters": LIBRISPEECH_DURATIONS,
                                  "drawn": describe_durations(drawn)},
        "corpus": {"source": source, "durations": describe_durations(durations),
                   "target_durations": describe_durations([t for t in targets if t is not None]) if targets else None},
        "padding_proxy": proxy,
        "training": {"settings": {"audio_budget_s_per_path": budget or 3.0,
                                  "fixed_batch_size": dyn["fixed_batch_size"],
                                  "dynamic": dyn["dynamic_options"],
                                  "timing": "one warm-up batch per path, then wall time until the audio budget"},
                     "paths": training,
                     "throughput_ratio_dynamic_over": ratios},
        "target": {"throughput_ratio_at_least": TARGET, "measured": main_ratio,
                   "met": bool(main_ratio is not None and main_ratio >= TARGET) and not quick},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="no synthesis, tiny model, 3 s of audio per path")
    parser.add_argument("--speakers", type=int, default=8)
    parser.add_argument("--per-speaker", type=int, default=16, help="train utterances per speaker")
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes")
    parser.add_argument("--audio-budget", type=float, default=800.0, help="seconds of audio trained per path")
    parser.add_argument("--proxy-epochs", type=int, default=10)
    parser.add_argument("--corpus-root", default=CORPUS_ROOT)
    parser.add_argument("--no-padded-30s", action="store_true",
                        help="skip the fixed batches with the official 30-s padded encoder (the slowest path)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    result = run(args.quick, args.speakers, args.per_speaker, args.workers, args.audio_budget, args.proxy_epochs,
                 args.corpus_root, not args.no_padded_30s)
    report_json(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
