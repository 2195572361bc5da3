#!/usr/bin/env python3
"""Real-time factor of ``taste resynthesize``, split by stage.

Runs the CLI verb itself (``taste_toolkit.cli.main(["resynthesize", ...])``, in this
process) on real speech (the five LibriVox clips of ``results/real_speech/``, with
their transcripts; an espeak-ng sentence when that folder is absent) and times
each stage inside it by wrapping, on the loaded tokenizer:

* ``load``: reading the tokenizer folder (``load_tokenizer``), once per command;
* ``encode``: the Whisper encoder (``TasteModel.encode_audio``);
* ``aggregate``: aggregator + RVQ (``TasteModel.tokenize``);
* ``decode units``: the unit decoder's KV-cached ``generate``;
* ``vocode``: the vocoder (units -> waveform);
* ``other``: the rest of the command (audio reading, text tokenization, checks,
  writing the wav, JSON).

RTF = seconds / seconds of input audio. The headline RTF excludes ``load`` (a
server loads once); the JSON also has the command's whole RTF.

Tokenizer: ``--model DIR`` (a trained export, e.g. ``results/taste/1986/tokenizer``)
when given or present at that default path; otherwise one is built here from
``hparams/taste.yaml`` with the real pretrained Whisper tiny.en encoder
(``builtin:tiny.en``, offline), the recipe's aggregator, RVQ and unit decoder with
random weights, mel k-means units fitted on the clips, and the recipe's
Griffin-Lim vocoder, then saved with ``save_pretrained`` and loaded by the CLI
like any export. A random decoder does not know when to stop, so there each
decode is held to the number of units the input lasts (duration x the units'
frame rate, as a trained decoder gives) through ``min_len_ratio = max_len_ratio``.

Timing: ``--threads`` torch threads (default 2, "on 2 cores"), one untimed
warm-up command, then per clip the fastest of ``--repeats`` commands. Writes
JSON (default ``benchmarks/measured/resynthesize_rtf.json``)::

    python benchmarks/bench_resynthesize.py
    python benchmarks/bench_resynthesize.py --quick --output /tmp/r.json   # tiny model, one clip
"""

import argparse
import contextlib
import functools
import inspect
import io
import json
import os
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from bench_common import machine_description, report_json  # noqa: E402

DEFAULT_OUTPUT = os.path.join(HERE, "measured", "resynthesize_rtf.json")
DEFAULT_EXPORT = os.path.join(ROOT, "results/taste/1986/tokenizer")
REAL_SPEECH = os.path.join(ROOT, "results/real_speech")
STAGES = ("encode", "aggregate", "decode units", "vocode")
QUICK_OVERRIDES = {"aggregator_options": {"cross_attention": {"num_layers": 1}},
                   "decoder_options": {"unit_transformer": {"d_model": 32, "num_layers": 1, "num_heads": 2,
                                                            "ffn_dim": 64}},  # see build_tokenizer
                   "num_units": 16, "codebook_size": 8}


# ------------------------------------------------------------------ inputs
def clips(folder, quick, scratch):
    """``[(wav path, transcript, seconds)]``: the LibriVox clips, or one espeak-ng sentence."""
    import soundfile as sf

    out = []
    meta = os.path.join(folder, "metadata.jsonl")
    if os.path.isfile(meta):
        with open(meta) as f:
            for line in f:
                rec = json.loads(line)
                if rec["id"].startswith("librivox"):
                    path = os.path.join(folder, rec["audio"])
                    out.append((path, rec["text"], sf.info(path).duration))
    if not out:
        from taste_toolkit.data.synthetic_corpus import SAMPLE_RATE, synthesize_utterance

        words = "THE TEACHER FOUND A WOODEN VIOLIN INSIDE THE QUIET LIBRARY NEAR THE RIVER".split()
        audio, _, _ = synthesize_utterance(words, [None] * len(words), "en-us+m1", 165, 42)
        path = os.path.join(scratch, "espeak.wav")
        sf.write(path, audio, SAMPLE_RATE)
        out.append((path, " ".join(words).lower(), len(audio) / SAMPLE_RATE))
    if quick:
        out = sorted(out, key=lambda c: c[2])[:1]
    return out


def build_tokenizer(folder, audio_clips, quick=False, log=print):
    """Build the recipe's tokenizer (real tiny.en encoder, the rest random) and save it in ``folder``."""
    import soundfile as sf

    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.hparams_loader import load_hparams
    from taste_toolkit.training.export import build_vocoder

    # The setup its measurements were made with (mel k-means units, untrained Griffin-Lim
    # vocoder, no speaker vector); the default unit_to_spec vocoder would need a training run.
    # The autoregressive unit_transformer: a random one is held to the input's length below, which
    # times the decoder as a trained one would run; a random duration_transformer's length is noise.
    overrides = {"output_folder": os.path.join(folder, "exp"), "units_name": "mel_kmeans",
                 "vocoder_name": "griffin_lim", "speaker_name": "none", "decoder_name": "unit_transformer"}
    if quick:
        overrides.update(QUICK_OVERRIDES)
    cwd = os.getcwd()
    os.chdir(ROOT)  # the YAML's relative paths are relative to the repository
    try:
        hparams, _, _ = load_hparams(os.path.join(ROOT, "hparams/taste.yaml"), overrides)
    finally:
        os.chdir(cwd)
    units = hparams["units"]
    wavs = [torch.as_tensor(sf.read(path, dtype="float32")[0]) for path, _, _ in audio_clips]
    units.fit(wavs * max(1, int(30 // sum(w.numel() / 16000 for w in wavs)) + 1))  # >= ~30 s of audio
    vocoder = build_vocoder(hparams.get("vocoder_name") or "griffin_lim", hparams.get("vocoder_options", {}), units)
    model = hparams["model"].eval()
    tokenizer = TasteTokenizer(model, hparams["text_tokenizer"], units, hparams["speaker"], vocoder)
    out = os.path.join(folder, "tokenizer")
    tokenizer.save_pretrained(out)
    log(f"  built tokenizer: {hparams['whisper_source']} encoder + random recipe aggregator/RVQ/decoder, "
        f"{units.num_units} mel k-means units at {units.frame_rate:g} Hz, vocoder {type(vocoder).__name__}")
    return out


# ------------------------------------------------------------------ timing
class StageTimer:
    """Wraps the stages of a loaded tokenizer; ``seconds[stage]`` accumulates wall time."""

    def __init__(self, hold_units=False):
        self.seconds = {}
        self.hold_units = hold_units
        self.duration = None  # seconds of the input being processed (for hold_units)
        self.units_generated = 0
        self.frame_rate = None  # of the tokenizer's units

    def _timed(self, stage, fn):
        @functools.wraps(fn)  # keeps the signature: the API inspects generate's options
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0
        return wrapper

    def instrument(self, tokenizer):
        model = tokenizer.model
        self.frame_rate = float(tokenizer.units.frame_rate) if tokenizer.units is not None else None
        model.encode_audio = self._timed("encode", model.encode_audio)
        model.tokenize = self._timed("aggregate", model.tokenize)
        decoder, timer = model.decoder, self
        generate = decoder.generate

        @functools.wraps(generate)
        def held(tokens, token_lengths, *args, **kwargs):
            # Only decoders that stop on end-of-speech take min_len_ratio; a trained
            # duration_transformer export sets its own length from its durations.
            if timer.hold_units and "min_len_ratio" in inspect.signature(generate).parameters:
                units = round(timer.duration * tokenizer.units.frame_rate)
                ratio = units / float(torch.as_tensor(token_lengths).max())
                kwargs.update(min_len_ratio=ratio, max_len_ratio=ratio)
            out = generate(tokens, token_lengths, *args, **kwargs)
            timer.units_generated += int(out[1].sum())
            return out

        decoder.generate = self._timed("decode units", held)
        if tokenizer.vocoder is not None:
            tokenizer.vocoder.forward = self._timed("vocode", tokenizer.vocoder.forward)
        if getattr(tokenizer, "speaker", None) is not None:
            tokenizer.speaker.forward = self._timed("speaker", tokenizer.speaker.forward)
        return tokenizer


@contextlib.contextmanager
def instrumented_cli(timer):
    """Patch the CLI's tokenizer loading so every loaded tokenizer is timed by ``timer``."""
    import taste_toolkit.commands.speech as speech

    original = speech.load_tokenizer

    def load(args):
        t0 = time.perf_counter()
        tokenizer = original(args)
        timer.seconds["load"] = timer.seconds.get("load", 0.0) + time.perf_counter() - t0
        return timer.instrument(tokenizer)

    speech.load_tokenizer = load
    try:
        yield
    finally:
        speech.load_tokenizer = original


def resynthesize_once(model_dir, clip, out_wav, hold_units):
    """Run ``taste resynthesize`` on one clip; ``(total seconds, {stage: seconds}, units, frame rate)``."""
    from taste_toolkit.cli import main as cli_main

    path, text, duration = clip
    timer = StageTimer(hold_units)
    timer.duration = duration
    buf = io.StringIO()
    with instrumented_cli(timer), contextlib.redirect_stdout(buf):
        t0 = time.perf_counter()
        code = cli_main(["resynthesize", "--model", model_dir, "--audio", path, "--text", text, "--output", out_wav])
        total = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"taste resynthesize exited with {code}: {buf.getvalue()[-2000:]}")
    return total, dict(timer.seconds), timer.units_generated, timer.frame_rate


def run(model_dir=None, quick=False, repeats=3, threads=2, log=print):
    """Build (or use) a tokenizer, time the verb on the clips; the JSON-ready result."""
    if threads:
        torch.set_num_threads(threads)
    if quick:
        repeats = 1
    with tempfile.TemporaryDirectory() as scratch:
        audio_clips = clips(REAL_SPEECH, quick, scratch)
        if model_dir is None and not quick and os.path.isfile(os.path.join(DEFAULT_EXPORT, "taste_config.json")):
            model_dir = DEFAULT_EXPORT
        trained = model_dir is not None
        if not trained:
            model_dir = build_tokenizer(scratch, audio_clips, quick, log)
        out_wav = os.path.join(scratch, "out.wav")
        resynthesize_once(model_dir, audio_clips[0], out_wav, not trained)  # warm-up
        per_clip = []
        for clip in audio_clips:
            runs = [resynthesize_once(model_dir, clip, out_wav, not trained) for _ in range(max(1, repeats))]
            total, stages, units, frame_rate = min(runs, key=lambda r: r[0] - r[1].get("load", 0.0))
            stages = {k: round(v, 4) for k, v in stages.items()}
            processing = sum(v for k, v in stages.items() if k != "load")
            stages["other"] = round(max(0.0, total - stages.get("load", 0.0) - processing), 4)
            per_clip.append({"audio": os.path.basename(clip[0]), "seconds_of_audio": round(clip[2], 3),
                             "words": len(clip[1].split()), "units": units, "unit_frame_rate": frame_rate,
                             "command_seconds": round(total, 4),
                             "stage_seconds": stages})
            log(f"  {os.path.basename(clip[0])} ({clip[2]:.1f} s): " +
                ", ".join(f"{k} {v:.3f}" for k, v in stages.items()))
    audio = sum(c["seconds_of_audio"] for c in per_clip)
    totals = {}
    for c in per_clip:
        for k, v in c["stage_seconds"].items():
            totals[k] = totals.get(k, 0.0) + v
    processing = sum(v for k, v in totals.items() if k != "load")
    rtf = {k: round(v / audio, 4) for k, v in totals.items()}
    compute = {k: totals.get(k, 0.0) for k in STAGES}
    dominant = max(compute, key=compute.get)
    return {
        "benchmark": "taste resynthesize real-time factor by stage",
        "command": "python benchmarks/bench_resynthesize.py" + (" --quick" if quick else ""),
        "machine": machine_description(),
        "tokenizer": "trained export " + model_dir if trained else
                     ("hparams/taste.yaml: real Whisper tiny.en encoder (builtin:tiny.en), random aggregator/RVQ/"
                      "unit decoder, mel k-means units fitted on the clips, Griffin-Lim vocoder; decodes held to "
                      "the input's unit count" + (" (quick: tiny aggregator/decoder)" if quick else "")),
        "settings": {"threads": torch.get_num_threads(), "repeats": repeats, "warmup": 1,
                     "timing": "per clip the fastest of the repeats (by processing time), after one warm-up command"},
        "clips": per_clip,
        "seconds_of_audio": round(audio, 3),
        "rtf_processing": round(processing / audio, 4),
        "rtf_command_with_load": round((processing + totals.get("load", 0.0)) / audio, 4),
        "rtf_by_stage": rtf,
        "share_of_processing": {k: round(totals.get(k, 0.0) / processing, 3) for k in list(STAGES) + ["other"]},
        "dominant_stage": dominant,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="tokenizer folder (default: results/taste/1986/tokenizer "
                        "when it exists, else one built from hparams/taste.yaml)")
    parser.add_argument("--quick", action="store_true", help="tiny aggregator/decoder, one clip, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    result = run(args.model, args.quick, args.repeats, args.threads)
    report_json(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
