"""Items 1 and 7: Whisper-tap encoding, unpadded vs the official 30-s padded window.

The ``whisper`` encoder plugin itself is timed (log-mel + encoder + taps), built
from a random-init ``WhisperConfig`` of the wanted geometry (random weights cost
the same as trained ones). Also here: how far the unpadded taps are from the
padded ones on real speech with the real pretrained Whisper tiny.en
(:func:`mode_difference`), the price of the fast path.
"""

import glob
import json
import os
import tempfile

import torch

from bench_common import Row, loglog_slope, measure

#: Encoder geometries (``WhisperConfig`` fields) and the shallow value tap of each.
GEOMETRIES = {
    # The paper's encoder (distil-large-v3 = large-v3 encoder), value tap = block 6.
    "large-v3": dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                     num_mel_bins=128, value_layer=6),
    # Whisper tiny(.en), the encoder of the embedded recipe.
    "tiny": dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536,
                 num_mel_bins=80, value_layer=1),
    # For the smoke test only.
    "micro": dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                  num_mel_bins=80, value_layer=1),
}

LENGTHS = [2, 5, 10, 20, 30]

#: (geometry, batch, lengths timed in both modes, lengths timed unpadded only, repeats).
#: Large-v3 on 2 CPU cores costs ~20-60 s per 30-s window, so its padded mode (one
#: full window per utterance whatever its length) is timed at batch 1 only; at batch
#: 16 only the unpadded mode runs, at the short lengths (see benchmarks/README.md).
FULL_PLAN = [
    ("tiny", 1, LENGTHS, [], 3),
    ("tiny", 4, [5], LENGTHS, 1),
    ("tiny", 16, LENGTHS, [], 1),
    ("large-v3", 1, [2, 5, 30], [10, 20], 1),
    ("large-v3", 4, [], [5], 1),
    ("large-v3", 16, [], [2, 5], 1),
]
QUICK_PLAN = [
    ("micro", 1, [2, 5], [], 1),
    ("micro", 2, [2], [5], 1),
]


def build_encoder(geometry, folder):
    """The ``whisper`` plugin with a random-init encoder of ``geometry`` (config in ``folder``)."""
    from transformers import WhisperConfig

    from taste_toolkit.plugins.encoder.whisper import WhisperTapEncoder

    geo = dict(GEOMETRIES[geometry])
    value_layer = geo.pop("value_layer")
    config = WhisperConfig(
        **geo, decoder_layers=1, decoder_attention_heads=geo["encoder_attention_heads"], decoder_ffn_dim=geo["encoder_ffn_dim"],
        vocab_size=1000, max_source_positions=1500, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=3,
    )
    config.save_pretrained(folder)
    torch.manual_seed(0)
    return WhisperTapEncoder(folder, value_layer=value_layer, init_weights=False).to(_device())


def _device():
    from bench_common import device

    return device()


def _waves(batch, seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000
    tone = torch.sin(6.283 * 220 * t) * (0.5 + 0.5 * torch.sin(6.283 * 3 * t))
    wavs = 0.3 * tone[None] + 0.05 * torch.randn(batch, n, generator=g)
    return wavs.to(_device()), torch.full((batch,), n, dtype=torch.long, device=_device())


def encode_benchmark(quick=False, log=print):
    """Item 1 rows and the raw points item 7 fits.

    Returns
    -------
    rows : list of Row
    points : list of dict
        ``{geometry, mode, batch, seconds, time}`` for every timed encode.
    """
    plan = QUICK_PLAN if quick else FULL_PLAN
    rows, points = [], []
    encoders = {}
    with tempfile.TemporaryDirectory() as tmp:
        for geometry, batch, both, unpadded_only, repeats in plan:
            if geometry not in encoders:
                encoders.clear()  # one large model in memory at a time
                encoders[geometry] = build_encoder(geometry, os.path.join(tmp, geometry))
                enc = encoders[geometry]
                wavs, lens = _waves(1, 2)
                with torch.inference_mode():  # warm-up (allocator, kernels)
                    enc(wavs, lens)
            enc = encoders[geometry]
            for seconds in sorted(set(both) | set(unpadded_only)):
                wavs, lens = _waves(batch, seconds)
                timed = {}
                for mode in ("padded", "unpadded"):
                    if mode == "padded" and seconds not in both:
                        continue
                    enc.mode = mode

                    def run():
                        with torch.inference_mode():
                            return enc(wavs, lens)

                    m, _ = measure(run, repeats=repeats)
                    timed[mode] = m
                    points.append(dict(geometry=geometry, mode=mode, batch=batch, seconds=seconds, time=m.seconds))
                    log(f"  encode {geometry} b{batch} {seconds:>2} s {mode:>8}: {m.seconds:.3f} s")
                enc.mode = "unpadded"
                audio = batch * seconds
                rtf = {k: v.seconds / audio for k, v in timed.items()}
                note = " / ".join(f"RTF {k} {v:.3f}" for k, v in rtf.items())
                if "padded" not in timed:
                    note += "; padded skipped (cost of the full run, see README)"
                rows.append(Row("1 encode", f"{geometry} b{batch} {seconds} s", "padded 30-s", "unpadded",
                                timed.get("padded"), timed.get("unpadded"), note))
        encoders.clear()
    return rows, points


def growth_rows(points):
    """Item 7: log-log slopes of encode time vs utterance length and vs batch size.

    Returns
    -------
    list of dict
        ``{geometry, mode, varies, fixed, points, exponent}``.
    """
    out = []
    keys = sorted({(p["geometry"], p["mode"]) for p in points})
    for geometry, mode in keys:
        pts = [p for p in points if p["geometry"] == geometry and p["mode"] == mode]
        for batch in sorted({p["batch"] for p in pts}):
            sel = sorted((p["seconds"], p["time"]) for p in pts if p["batch"] == batch)
            if len(sel) >= 2:
                out.append(dict(geometry=geometry, mode=mode, varies="length (s)", fixed=f"batch {batch}",
                                points=", ".join(f"{x:g}" for x, _ in sel),
                                exponent=loglog_slope([x for x, _ in sel], [y for _, y in sel])))
        for seconds in sorted({p["seconds"] for p in pts}):
            sel = sorted((p["batch"], p["time"]) for p in pts if p["seconds"] == seconds)
            if len(sel) >= 2:
                out.append(dict(geometry=geometry, mode=mode, varies="batch", fixed=f"{seconds:g} s",
                                points=", ".join(f"{x:g}" for x, _ in sel),
                                exponent=loglog_slope([x for x, _ in sel], [y for _, y in sel])))
    return out


def growth_table(growth):
    lines = ["| geometry | mode | varies | fixed | points | exponent (log-log slope) |", "|---|---|---|---|---|---|"]
    for g in growth:
        lines.append(f"| {g['geometry']} | {g['mode']} | {g['varies']} | {g['fixed']} | {g['points']} | {g['exponent']:.2f} |")
    return "\n".join(lines)


# ------------------------------------------------------------- mode difference
def _real_clips(max_seconds=30.0):
    """Real speech clips ``[(name, wav (S,))]`` and a description of their source.

    Looks for ``results/real_speech/*.wav`` (LibriVox clips from the pocketsphinx
    sdist and Asterisk prompts, see shared offline-resources notes), then the
    embedded espeak corpus; the benchmark never downloads anything.
    """
    import soundfile as sf

    from taste_toolkit.audio import load_audio

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for pattern, source in [("results/real_speech/*.wav", "real speech (LibriVox + Asterisk prompts)"),
                            ("results/synthetic_corpus/test/*/*/*.flac", "espeak-ng embedded corpus (not real speech)")]:
        files = sorted(glob.glob(os.path.join(root, pattern)))
        files = [f for f in files if sf.info(f).duration <= max_seconds]
        if files:
            return [(os.path.basename(f), load_audio(f, 16000)) for f in files], source
    return [], "none found"


def mode_difference(quick=False, log=print):
    """Unpadded vs padded taps of the real Whisper tiny.en on real speech.

    Returns
    -------
    Row
        Timing of both modes over all clips (batch 1 each) with the differences in
        ``extra``: mean frame cosine similarity and relative L2 of keys and values.
    """
    from taste_toolkit.registry import build

    clips, source = _real_clips()
    if quick or not clips:
        g = torch.Generator().manual_seed(0)
        t = torch.arange(32000) / 16000
        clips = [("tone-2s", 0.3 * torch.sin(6.283 * 300 * t) + 0.02 * torch.randn(32000, generator=g))]
        source = "synthetic tone (quick mode)" if quick else "synthetic tone (no speech found)"
    enc = build("encoder", "whisper", {"source": "builtin:tiny.en", "value_layer": 1}).to(_device())
    outs = {}
    timings = {}
    for mode in ("padded", "unpadded"):
        enc.mode = mode

        def run():
            with torch.inference_mode():
                return [enc(w[None].to(_device()), torch.tensor([w.numel()], device=_device())) for _, w in clips]

        timings[mode], outs[mode] = measure(run)
    stats = {"keys_cos": [], "keys_rel_l2": [], "values_cos": [], "values_rel_l2": [], "seconds": []}
    for (name, w), a, b in zip(clips, outs["unpadded"], outs["padded"]):
        n = int(a.lengths[0])
        assert n == int(b.lengths[0])
        for tap in ("keys", "values"):
            x, y = getattr(a, tap)[0, :n].float(), getattr(b, tap)[0, :n].float()
            stats[f"{tap}_cos"].append(float(torch.nn.functional.cosine_similarity(x, y, dim=-1).mean()))
            stats[f"{tap}_rel_l2"].append(float((x - y).norm() / y.norm()))
        stats["seconds"].append(w.numel() / 16000)
    summary = {k: (sum(v) / len(v), min(v) if "cos" in k else max(v)) for k, v in stats.items() if k != "seconds"}
    per_clip = [dict(clip=name, seconds=round(s, 2), **{k: round(stats[k][i], 4) for k in stats if k != "seconds"})
                for i, ((name, _), s) in enumerate(zip(clips, stats["seconds"]))]
    note = (f"{len(clips)} clips, {source}; keys cos {summary['keys_cos'][0]:.4f} (min {summary['keys_cos'][1]:.4f}), "
            f"rel L2 {summary['keys_rel_l2'][0]:.3f} (max {summary['keys_rel_l2'][1]:.3f}); values cos "
            f"{summary['values_cos'][0]:.4f} (min {summary['values_cos'][1]:.4f}), rel L2 {summary['values_rel_l2'][0]:.3f} "
            f"(max {summary['values_rel_l2'][1]:.3f})")
    log("  tiny.en mode difference: " + note)
    log("  per clip: " + json.dumps(per_clip))
    total = sum(stats["seconds"])
    return Row("1b taps", f"real tiny.en, b1, {total:.0f} s of audio", "padded 30-s", "unpadded",
               timings["padded"], timings["unpadded"], note, extra={"summary": summary, "per_clip": per_clip})
