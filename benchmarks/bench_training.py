"""Item 5: stage-1 training throughput, dynamic batching vs fixed-size padded batches.

The model is the recipe's own (``hparams/taste.yaml``: real Whisper tiny.en encoder,
4-layer cross-attention aggregator, RVQ, unit decoder) and every step is
``TasteTokenizerBrain.fit_batch`` (forward, loss, backward, optimizer step), fed by
SpeechBrain dataloaders over the embedded corpus' training manifest
(``results/prepared/manifests/synthetic_corpus/train.csv``). The encoder-output
cache is off: every step pays the encoder, as the first epoch does (and every
epoch of the official code, which has no cache, or of a run with augmentation).

Targets are random units of the right length (the step's cost depends on the
lengths only), so no unit extraction is needed.

Paths compared (same model, same data, each measured until ``audio_budget``
seconds of real audio went through; the first batch of each is a warm-up):

* ``dynamic``: SpeechBrain's ``DynamicBatchSampler`` with the recipe's settings
  (80 s of audio per batch, 10 length buckets), unpadded encoder;
* ``fixed``: ``batch_size: 8``, shuffled (the recipe's non-dynamic loader), each
  batch padded to its longest utterance, unpadded encoder;
* ``fixed + padded 30-s``: the same batches with the official 30-s padded encoder.
"""

import csv
import os
import tempfile
import time

import torch

from bench_common import Measurement, Row, device, measure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "results/prepared/manifests/synthetic_corpus/train.csv")
WORDS = "the cat sat on a red mat near big old trees by the river".split()


def _synthetic_manifest(folder, count=8, seed=0):
    """A few noise+tone utterances (1-4 s) with transcripts: the quick mode's corpus."""
    import soundfile as sf

    g = torch.Generator().manual_seed(seed)
    path = os.path.join(folder, "train.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "duration", "wav", "spk_id", "wrd"])
        for i in range(count):
            n = int(16000 * (1.0 + 3.0 * float(torch.rand(1, generator=g))))
            t = torch.arange(n) / 16000
            wav = 0.2 * torch.sin(6.283 * (150 + 50 * i) * t) + 0.03 * torch.randn(n, generator=g)
            file = os.path.join(folder, f"utt{i}.flac")
            sf.write(file, wav.numpy(), 16000)
            words = " ".join(WORDS[j % len(WORDS)] for j in range(i, i + max(2, int(n / 16000 * 2)))).upper()
            w.writerow([f"utt{i}", n / 16000, file, "spk", words])
    return path


def _random_units(manifest, num_units, frame_rate, seed=0):
    g = torch.Generator().manual_seed(seed)
    with open(manifest) as f:
        rows = list(csv.DictReader(f))
    return {r["ID"]: torch.randint(0, num_units, (max(1, int(float(r["duration"]) * frame_rate)),), generator=g)
            for r in rows}


def _even_word_starts(manifest):
    """``{ID: [start seconds of each whitespace word]}``, the words evenly spread over the audio."""
    with open(manifest) as f:
        rows = list(csv.DictReader(f))
    out = {}
    for r in rows:
        n = max(1, len(r["wrd"].split()))
        out[r["ID"]] = [float(r["duration"]) * i / n for i in range(n)]
    return out


def _run(brain, loader, audio_budget, log, name):
    """Train on ``loader`` until ``audio_budget`` s of audio; time after a warm-up batch."""
    import speechbrain as sb

    brain.modules.train()
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    it = iter(loader)
    brain.fit_batch(next(it))  # warm-up: first-call allocations, RVQ k-means init
    stats = dict(audio=0.0, padded=0.0, utterances=0, steps=0)
    start = time.perf_counter()
    for batch in it:
        brain.fit_batch(batch)
        durations = [float(d) for d in batch.duration]
        stats["audio"] += sum(durations)
        stats["padded"] += max(durations) * len(durations)
        stats["utterances"] += len(durations)
        stats["steps"] += 1
        if stats["audio"] >= audio_budget:
            break
    stats["seconds"] = time.perf_counter() - start
    log(f"  stage-1 {name}: {stats['steps']} steps, {stats['utterances']} utt, {stats['audio']:.0f} s audio "
        f"in {stats['seconds']:.1f} s")
    return stats


def stage1_benchmark(quick=False, log=print, audio_budget=None, manifest=None, source=None,
                     paths=("dynamic", "fixed", "fixed + padded 30-s"), return_stats=False):
    """Rows of item 5 (throughput normalized to seconds per 100 s of audio).

    ``audio_budget``: seconds of audio timed per path (default 400; 3 in quick mode).
    ``manifest``: train on this manifest (``ID, duration, wav, spk_id, wrd``) instead of
    the embedded corpus, described as ``source`` (with ``quick``, the tiny model runs on
    it). ``paths``: which loaders to time (``dynamic`` always runs). With
    ``return_stats`` also returns ``{path: stats}`` (audio, padded audio, utterances,
    steps and seconds of each path).
    """
    import speechbrain as sb
    from speechbrain.dataio.dataloader import make_dataloader
    from speechbrain.dataio.sampler import DynamicBatchSampler

    from taste_toolkit.hparams_loader import load_hparams
    from taste_toolkit.training.data import build_datasets
    from taste_toolkit.training.tokenizer_brain import TasteTokenizerBrain

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"output_folder": os.path.join(tmp, "exp"), "cache_encoder_outputs": False}
        if manifest is not None:
            source = source or os.path.basename(manifest)
        if quick or manifest is None and not os.path.isfile(CORPUS):
            if manifest is None:
                manifest, source = _synthetic_manifest(tmp), "8 synthetic utterances (quick mode)"
                if not quick:
                    source = "8 synthetic utterances (embedded corpus not prepared)"
            overrides.update({"aggregator_options": {"cross_attention": {"num_layers": 1}},
                              "decoder_options": {name: {"d_model": 32, "num_layers": 1, "num_heads": 2, "ffn_dim": 64}
                                                  for name in ("unit_transformer", "duration_transformer")},
                              "num_units": 16, "codebook_size": 8})
            dyn_opts, fixed_bs, budget = dict(max_batch_length=6.0, num_buckets=2), 2, 3.0
        else:
            if manifest is None:
                manifest, source = CORPUS, "embedded corpus train split"
            dyn_opts, fixed_bs, budget = dict(max_batch_length=80.0, num_buckets=10), 8, 400.0
        cwd = os.getcwd()
        os.chdir(ROOT)  # the YAML's relative paths (results/...) are relative to the repository
        try:
            hparams, _, _ = load_hparams(os.path.join(ROOT, "hparams/taste.yaml"), overrides)
        finally:
            os.chdir(cwd)
        units_plugin = hparams["units"]
        units = {"train": _random_units(manifest, hparams["num_units"], units_plugin.frame_rate)}
        # Decoders that train on the word of every unit (the default duration_transformer) get
        # evenly spread word starts, as the units are random anyway: the cost is the same.
        word_starts = None
        if getattr(hparams["decoder"], "needs_unit_word_ids", False):
            word_starts = {"train": _even_word_starts(manifest)}
        datasets = build_datasets({"train": manifest}, hparams["text_tokenizer"], units, None, 16000,
                                  unit_word_starts=word_starts, unit_frame_rate=units_plugin.frame_rate)
        ds = datasets["train"]
        model = hparams["model"]
        brain = TasteTokenizerBrain(modules={"model": model}, opt_class=hparams["opt_class"],
                                    hparams={"cache_encoder_outputs": False, "seed": 1986},
                                    run_opts={"device": str(device())})
        brain.init_optimizers()

        def fixed_loader():
            return make_dataloader(ds, batch_size=fixed_bs, shuffle=True, generator=torch.Generator().manual_seed(0))

        def dynamic_loader():
            sampler = DynamicBatchSampler(ds, length_func=lambda x: float(x["duration"]), shuffle=True,
                                          batch_ordering="random", **dyn_opts)
            return make_dataloader(ds, batch_sampler=sampler)

        budget = audio_budget or budget
        # One untimed step first: optimizer states, RVQ k-means init and the allocator's
        # pools then belong to no path's time or memory.
        brain.modules.train()
        brain.on_stage_start(sb.Stage.TRAIN, 1)
        brain.fit_batch(next(iter(fixed_loader())))
        results = {}
        for name, loader, mode in [("dynamic", dynamic_loader, "unpadded"), ("fixed", fixed_loader, "unpadded"),
                                   ("fixed + padded 30-s", fixed_loader, "padded")]:
            if name != "dynamic" and name not in paths:
                continue
            model.encoder.mode = mode
            m, stats = measure(lambda: _run(brain, loader(), budget, log, name))
            per100 = stats["seconds"] / stats["audio"] * 100.0
            results[name] = (Measurement(per100, m.peak_mb, m.growth_mb, m.exact_peak), stats)
        model.encoder.mode = "unpadded"
        del brain, hparams, model

    def describe(stats):
        return (f"{stats['audio'] / stats['seconds']:.1f} audio-s/s, {stats['utterances'] / stats['seconds']:.2f} utt/s, "
                f"{stats['utterances'] / stats['steps']:.1f} utt/batch, padding {1 - stats['audio'] / stats['padded']:.0%}")

    dyn, dyn_stats = results["dynamic"]
    rows = []
    for name in ("fixed", "fixed + padded 30-s"):
        if name not in results:
            continue
        slow, stats = results[name]
        rows.append(Row("5 stage-1 training", f"{source}; s per 100 s of audio", f"{name} b{fixed_bs}",
                        "dynamic batching", slow, dyn,
                        f"{name}: {describe(stats)} / dynamic: {describe(dyn_stats)}"))
    if return_stats:
        return rows, {name: dict(stats, fixed_batch_size=fixed_bs, dynamic_options=dyn_opts)
                      for name, (_, stats) in results.items()}
    return rows
