#!/usr/bin/env python3
"""Vocoder topline: intelligibility of ground-truth units through each offline vocoder.

Trains (or reuses, cached by the units' fingerprint) the ``unit_to_spec``
vocoder on the training split, then transcribes test utterances with the
offline ASR (Whisper tiny.en, :mod:`taste_toolkit.metrics.asr`) and writes a
JSON with the WER of:

* ``original``: the source audio;
* ``gl_true_mel``: Griffin-Lim from the source's TRUE 80-band log-mel (the
  ``griffin_lim`` vocoder's inversion without the unit table);
* ``griffin_lim_units``: the current default vocoder from ground-truth units;
* ``unit_to_spec_units``: the trained ``unit_to_spec`` vocoder from ground-truth units;
* ``gl_true_linear``: Griffin-Lim (64 iterations) from the TRUE linear magnitude (n_fft 512,
  hop 160), the ceiling of every Griffin-Lim vocoder here; ``gl_true_envelope``: the same
  from the cepstrally smoothed magnitude (30 coefficients: the envelope without the
  harmonics, what a regression that cannot know the pitch can predict at best);
  ``gl_true_blur5``: from the magnitude averaged over 5 frames (50 ms, timing smeared);

also (S + D) / N and the median utterance WER (Whisper's repetition loops on
garbled audio inflate the corpus WER through insertions), plus each vocoder's
real-time factor (synthesis seconds / audio seconds, on ``--threads`` threads)
and the training time. Needs prepared data (manifests
and a unit cache, as ``recipes/librispeech/train.py`` writes them)::

    python recipes/librispeech/vocoder_topline.py --prep_folder results/prepared \\
        --out results/vocoder_topline.json
    python recipes/librispeech/vocoder_topline.py --prep_folder /tmp/voc_work/prepared \\
        --cache_dir /tmp/voc_work/vocoder --out /tmp/voc_work/topline.json --num_test 12
    # conditioned on the source's voice, with the Asterisk real voice added to the training audio:
    python recipes/librispeech/vocoder_topline.py --prep_folder results/prepared --speaker resemblyzer \\
        --train_options '{"extra_manifests": ["results/asterisk_train/train.csv"]}' --num_test 12
"""

import argparse
import glob
import json
import os
import sys
import time

import torch


def _find(prep_folder, split):
    hits = sorted(glob.glob(os.path.join(prep_folder, "manifests", "*", f"{split}.csv")))
    if not hits:
        sys.exit(f"No {split}.csv under {prep_folder}/manifests/*; run the recipe's data preparation first.")
    return hits[-1]


def _unit_file(units_dir, split):
    """The units file of ``split`` made by the extractor ``extractor.json`` points at."""
    from safetensors import safe_open

    with open(os.path.join(units_dir, "extractor.json"), encoding="utf-8") as f:
        state = json.load(f)["state"]
    for path in sorted(glob.glob(os.path.join(units_dir, f"units-{split}-*.safetensors"))):
        with safe_open(path, framework="pt") as f:
            if (f.metadata() or {}).get("extractor_state") == state:
                return path
    sys.exit(f"No units file of split {split!r} for the current extractor in {units_dir}.")


def gl_from_true_mel(vocoder, wav):
    """Griffin-Lim of a waveform's own log-mel through a ``griffin_lim`` vocoder's inversion."""
    import torchaudio

    opts = vocoder.options
    log_mel = vocoder.log_mel(wav)
    frames = log_mel.shape[0]
    log_mel = torch.cat([log_mel, log_mel[-1:]])
    spec = vocoder.inverse_mel(log_mel.exp().T.unsqueeze(0))[0]
    torch.manual_seed(opts["seed"])
    return torchaudio.functional.griffinlim(
        spec, vocoder.window, opts["n_fft"], opts["hop_length"], opts["win_length"], opts["power"],
        opts["n_iter"], opts["momentum"], frames * opts["hop_length"], opts["rand_init"],
    )  # fmt: skip


def gl_from_true_linear(wav, variant="linear", n_fft=512, hop=160, n_iter=64):
    """Griffin-Lim of a waveform's own linear magnitude, or of a degraded copy of it.

    ``variant``: ``linear`` (as is), ``envelope`` (cepstral lifter keeping 30
    coefficients: no harmonics) or ``blur5`` (moving average over 5 frames).
    """
    import torchaudio

    window = torch.hann_window(n_fft)
    mag = torch.stft(wav, n_fft, hop, n_fft, window, return_complex=True).abs()  # (F, T)
    if variant == "envelope":
        cep = torch.fft.irfft(mag.clamp(min=1e-5).log().T, dim=-1)  # (T, 2 (F - 1))
        cep[:, 30:-29] = 0
        mag = torch.fft.rfft(cep, dim=-1).real.T.exp()
    elif variant == "blur5":
        mag = torch.nn.functional.avg_pool1d(mag[None], 5, 1, 2, count_include_pad=False)[0]
    torch.manual_seed(0)
    return torchaudio.functional.griffinlim(mag, window, n_fft, hop, n_fft, 1.0, n_iter, 0.99, wav.numel(), True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prep_folder", default="results/prepared")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--test_split", default="test")
    parser.add_argument("--cache_dir", default=None, help="vocoder cache (default <prep_folder>/vocoder)")
    parser.add_argument("--out", default="results/vocoder_topline.json")
    parser.add_argument("--num_test", type=int, default=40, help="test utterances (evenly spaced)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--vocoder_options", default="{}", help="JSON options of unit_to_spec")
    parser.add_argument("--train_options", default="{}", help="JSON options of fit_unit_vocoder")
    parser.add_argument("--conditions", default="original,gl_true_mel,griffin_lim_units,unit_to_spec_units")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save_wavs", default=None, help="folder for the vocoded wavs (optional)")
    parser.add_argument("--speaker", default="none",
                        help="speaker plugin whose vectors condition unit_to_spec (none, resemblyzer, ...); "
                             "the test utterances use their own source's vector")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from taste_toolkit.audio import load_audio
    from taste_toolkit.data.manifest import read_manifest
    from taste_toolkit.data.unit_cache import load_fitted_extractor, load_units
    from taste_toolkit.metrics.asr import OfflineASR, word_error_rate
    from taste_toolkit.plugins.vocoder.griffin_lim import GriffinLimVocoder
    from taste_toolkit.plugins.vocoder.unit_to_spec import UnitToSpecVocoder
    from taste_toolkit.training.unit_vocoder import fit_unit_vocoder

    units_dir = os.path.join(args.prep_folder, "units")
    extractor = load_fitted_extractor(units_dir)
    conditions = [c for c in args.conditions.split(",") if c]
    known = {"original", "gl_true_mel", "griffin_lim_units", "unit_to_spec_units", "gl_true_linear",
             "gl_true_envelope", "gl_true_blur5"}
    if set(conditions) - known:
        sys.exit(f"Unknown conditions {sorted(set(conditions) - known)}; choose from {sorted(known)}.")
    result = {"prep_folder": os.path.abspath(args.prep_folder), "threads": args.threads, "wer": {}, "rtf": {}}
    vocoders = {}
    if "griffin_lim_units" in conditions or "gl_true_mel" in conditions:
        vocoders["griffin_lim_units"] = GriffinLimVocoder.from_units_extractor(extractor, n_iter=32)
    speakers = {}
    if args.speaker != "none":
        from taste_toolkit.registry import build
        from taste_toolkit.training.data import compute_speaker_vectors

        speaker = build("speaker", args.speaker, {})
        splits = {s: _find(args.prep_folder, s) for s in (args.train_split, args.test_split)}
        for i, path in enumerate(json.loads(args.train_options).get("extra_manifests", [])):
            splits[f"extra{i}"] = path  # e.g. the Asterisk real voice (taste_toolkit.data.asterisk)
        speakers = compute_speaker_vectors(speaker, splits, os.path.join(args.prep_folder, "speaker"))
        result["speaker"] = {"plugin": args.speaker, "embedding_dim": int(speaker.embedding_dim)}
    if "unit_to_spec_units" in conditions:
        train_options = json.loads(args.train_options)
        vocoder_options = json.loads(args.vocoder_options)
        if speakers:
            vocoder_options["speaker_dim"] = result["speaker"]["embedding_dim"]
            train_options["speaker_vectors"] = speakers
        started = time.time()
        path = fit_unit_vocoder(
            extractor, _find(args.prep_folder, args.train_split),
            args.cache_dir or os.path.join(args.prep_folder, "vocoder"),
            unit_file=_unit_file(units_dir, args.train_split), vocoder_options=vocoder_options,
            steps=args.steps, **train_options,
        )  # fmt: skip
        vocoder = UnitToSpecVocoder.from_pretrained(path)
        vocoder.check_units(extractor)
        vocoders["unit_to_spec_units"] = vocoder
        result["unit_to_spec"] = {
            "path": os.path.abspath(path), "options": vocoder.options, "parameters": vocoder.num_parameters(),
            "training": vocoder.training_summary, "wall_seconds_this_run": round(time.time() - started, 1),
        }  # fmt: skip

    rows = read_manifest(_find(args.prep_folder, args.test_split))
    rows = rows[:: max(1, len(rows) // args.num_test)][: args.num_test]
    test_units = load_units(_unit_file(units_dir, args.test_split))
    asr = OfflineASR(cpu_threads=args.threads)
    refs = [row["wrd"] for row in rows]
    for name in conditions:
        hyps, synth_seconds, audio_seconds = [], 0.0, 0.0
        for row in rows:
            wav = load_audio(row["wav"], extractor.sample_rate)
            units = test_units[row["ID"]]
            started = time.time()
            if name == "original":
                out = wav
            elif name == "gl_true_mel":
                out = gl_from_true_mel(vocoders["griffin_lim_units"], wav)
            elif name.startswith("gl_true_"):
                out = gl_from_true_linear(wav, name[len("gl_true_"):])
            elif getattr(vocoders[name], "speaker_dim", 0):
                spk = speakers[row["ID"]][None]
                out = vocoders[name](units[None], torch.tensor([units.numel()]), speaker=spk)[0][0]
            else:
                out = vocoders[name](units[None], torch.tensor([units.numel()]))[0][0]
            synth_seconds += time.time() - started
            audio_seconds += out.numel() / extractor.sample_rate
            if args.save_wavs:
                import soundfile as sf

                os.makedirs(os.path.join(args.save_wavs, name), exist_ok=True)
                peak = float(out.abs().max()) or 1.0
                sf.write(os.path.join(args.save_wavs, name, row["ID"] + ".wav"),
                         (out / max(peak, 1.0)).numpy(), extractor.sample_rate)
            hyps.append(asr.transcribe(out.numpy(), extractor.sample_rate))
        result["wer"][name] = scores = word_error_rate(refs, hyps)
        # Whisper sometimes loops on garbled audio ("the red and the red and ..."), and a
        # few such utterances dominate the corpus WER through insertions: also report
        # (S + D) / N and the median utterance WER, which a loop cannot inflate.
        scores["sub_del_rate"] = (scores["substitutions"] + scores["deletions"]) / scores["ref_words"]
        scores["median_utterance_wer"] = float(torch.tensor(
            [word_error_rate([r], [h])["wer"] for r, h in zip(refs, hyps)]).median())
        if name != "original":
            result["rtf"][name] = round(synth_seconds / audio_seconds, 4)
        print(f"{name:22s} WER {scores['wer']:.3f}  (S+D)/N {scores['sub_del_rate']:.3f}  median utt WER "
              f"{scores['median_utterance_wer']:.3f}  RTF {result['rtf'].get(name, 0):.3f}", flush=True)
        result.setdefault("hypotheses", {})[name] = {row["ID"]: hyp for row, hyp in zip(rows, hyps)}
    result["references"] = {row["ID"]: ref for row, ref in zip(rows, refs)}
    result["test_utterances"] = len(rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, sort_keys=True, default=str)
    print(json.dumps({k: v["wer"] for k, v in result["wer"].items()}))
    return result


if __name__ == "__main__":
    main()
