"""``unit_hifigan`` vocoder: contract, training companions, learning, and its recipe (slow)."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import Vocoder
from taste_toolkit.plugins.vocoder.unit_hifigan import (
    MultiResolutionSTFTLoss,
    UnitHifiGAN,
    build_discriminator,
)
from taste_toolkit.registry import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPU = 640
#: A tiny generator (same architecture, few channels) for fast tests.
TINY = dict(
    num_units=16,
    embedding_dim=16,
    upsample_initial_channel=32,
    resblock_kernel_sizes=[3],
    resblock_dilation_sizes=[[1, 3, 5]],
)


def tiny(**overrides):
    torch.manual_seed(0)
    return UnitHifiGAN(**{**TINY, **overrides})


# ---------------------------------------------------------------- contract


def test_registered_and_rebuilt_from_its_options():
    voc = build("vocoder", "unit_hifigan", TINY)
    assert isinstance(voc, Vocoder) and voc.sample_rate == 16000 and voc.samples_per_unit == SPU
    again = build("vocoder", "unit_hifigan", json.loads(json.dumps(voc.options)))  # plain data
    again.load_state_dict(voc.state_dict())
    units = torch.randint(0, 16, (1, 4))
    assert torch.equal(voc(units)[0], again(units)[0])


def test_default_upsampling_matches_default_units():
    from taste_toolkit.plugins.units.mel_kmeans import MelKMeansUnits

    units = MelKMeansUnits()
    voc = UnitHifiGAN()
    assert voc.samples_per_unit == units.samples_per_unit == units.sample_rate / units.frame_rate == 640
    assert math.prod(voc.options["upsample_factors"]) == 640
    assert voc.num_units == units.num_units


def test_shapes_and_length_convention():
    voc = tiny().eval()
    units = torch.randint(0, 16, (3, 7))
    wavs, wav_lengths = voc(units, torch.tensor([7, 4, 1]))
    assert wavs.shape == (3, 7 * SPU) and wavs.dtype == torch.float32
    assert wav_lengths.tolist() == [7 * SPU, 4 * SPU, 1 * SPU]  # unit_lengths * samples_per_unit
    assert torch.isfinite(wavs).all() and wavs.abs().max() <= 1.0  # tanh output
    for i, n in enumerate(wav_lengths.tolist()):
        assert wavs[i, :n].abs().sum() > 0 and not wavs[i, n:].any()
    full, full_lengths = voc(units)  # no lengths: every unit is valid
    assert full.shape == (3, 7 * SPU) and full_lengths.tolist() == [7 * SPU] * 3


def test_forward_backward_reaches_every_part():
    voc = tiny()
    wavs, _ = voc(torch.randint(0, 16, (2, 3)), torch.tensor([3, 3]))
    wavs.pow(2).mean().backward()
    gen = voc.generator
    for name, param in (("embedding", gen.unit_embedding.weight), ("last conv", next(gen.conv_post.parameters()))):
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


def test_padding_does_not_change_valid_output():
    voc = tiny().eval()
    g = torch.Generator().manual_seed(1)
    lengths = [6, 3, 1, 3]
    alone = [torch.randint(0, 16, (1, n), generator=g) for n in lengths]
    batch = torch.full((4, 6), 10**6, dtype=torch.long)  # padded ids are out of range: ignored
    batch[1, 3:] = -7
    for i, u in enumerate(alone):
        batch[i, : u.shape[1]] = u
    with torch.no_grad():
        wavs, wav_lengths = voc(batch, torch.tensor(lengths))
        for i, u in enumerate(alone):
            ref, _ = voc(u)
            n = int(wav_lengths[i])
            assert n == ref.shape[1]
            torch.testing.assert_close(wavs[i, :n], ref[0], atol=1e-5, rtol=0)
            assert not wavs[i, n:].any()


@pytest.mark.parametrize(
    "units, lengths, match",
    [
        (torch.rand(1, 4), None, "integer"),
        (torch.tensor([[0, 3, 16, 1]]), None, r"\[0, 16\)"),
        (torch.tensor([[0, -1, 2]]), None, r"\[0, 16\)"),
        (torch.tensor([0, 1, 2]), None, r"\(B, S\)"),
        (torch.zeros(0, 4, dtype=torch.long), None, "empty"),
        (torch.zeros(2, 4, dtype=torch.long), torch.tensor([1.0, 0.5]), "absolute"),
        (torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 4]), "absolute"),
        (torch.zeros(2, 4, dtype=torch.long), torch.tensor([5, 4]), "absolute"),
        (torch.zeros(2, 4, dtype=torch.long), torch.tensor([4]), r"\(2,\)"),
    ],
)
def test_bad_units_raise_input_error(units, lengths, match):
    with pytest.raises(InputError, match=match):
        tiny()(units, lengths)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(samples_per_unit=320), "multiply to 640"),
        (dict(upsample_factors=[8, 5, 4, 2]), "multiply to 320"),
        (dict(upsample_kernel_sizes=[16, 10, 8, 8]), "even"),
        (dict(upsample_kernel_sizes=[16, 11, 8]), "one upsample kernel per"),
        (dict(resblock_dilation_sizes=[[1, 3]]), "3 values"),
        (dict(resblock_type="3"), "'1' or '2'"),
        (dict(upsample_initial_channel=8), "at least 16"),
        (dict(num_units=0), "num_units"),
    ],
)
def test_bad_options_raise_config_error(options, match):
    with pytest.raises(ConfigError, match=match):
        build("vocoder", "unit_hifigan", {**TINY, **options})


def test_other_unit_rates_and_resblock_type_2():
    voc = tiny(upsample_factors=[8, 5, 4, 2], upsample_kernel_sizes=[16, 11, 8, 4], samples_per_unit=320,
               resblock_type="2", resblock_dilation_sizes=[[1, 3]])
    wavs, lengths = voc(torch.randint(0, 16, (1, 5)))
    assert wavs.shape == (1, 5 * 320) and lengths.tolist() == [1600]


# ---------------------------------------------------------------- training companions


def test_discriminator_builder_reproduces_speechbrain_layout():
    from speechbrain.lobes.models.HifiGAN import DiscriminatorP, DiscriminatorS

    full = build_discriminator(periods=[3], num_scales=1)  # SpeechBrain's widths
    ref_p, ref_s = DiscriminatorP(3), DiscriminatorS(use_spectral_norm=True)
    for mine, ref in ((full.mpd.discriminators[0], ref_p), (full.msd.discriminators[0], ref_s)):
        assert {k: v.shape for k, v in mine.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    small = build_discriminator(periods=[2, 3], period_channels=[4, 8, 8, 8, 8], num_scales=2, scale_width=1 / 32)
    scores, feats = small(torch.randn(2, 1, 3 * SPU))
    assert len(scores) == len(feats) == 4  # 2 periods + 2 scales
    assert all(s.shape[0] == 2 and torch.isfinite(s).all() for s in scores)
    assert [len(f) for f in feats] == [6, 6, 8, 8]  # 5 convs + post; 7 convs + post
    with pytest.raises(ConfigError):
        build_discriminator(periods=[])


def test_stft_loss_zero_on_identical_and_drop_in_for_generator_loss():
    from speechbrain.lobes.models.HifiGAN import GeneratorLoss

    g = torch.Generator().manual_seed(0)
    y = 0.3 * torch.randn(2, 1, 4000, generator=g)
    loss = MultiResolutionSTFTLoss()
    mag, sc = loss(y, y)
    assert float(mag) == 0.0 and float(sc) == 0.0
    mag, sc = loss(0.5 * y, y)
    assert float(mag) == pytest.approx(math.log(2), rel=1e-3)  # |log(a) - log(a / 2)| away from the floor
    assert float(sc) == pytest.approx(0.5, rel=1e-3)
    out = GeneratorLoss(stft_loss=loss, stft_loss_weight=1.0)(None, 0.5 * y, y)
    assert float(out["G_loss"]) == pytest.approx(float(mag + sc), rel=1e-5)


def test_one_gan_step_updates_both_networks():
    from speechbrain.lobes.models import HifiGAN as H

    voc = tiny()
    disc = build_discriminator(periods=[2, 3], period_channels=[4, 8, 8, 8, 8], num_scales=1, scale_width=1 / 32)
    g_loss = H.GeneratorLoss(mseg_loss=H.MSEGLoss(), mseg_loss_weight=1, feat_match_loss=H.MelganFeatureLoss(),
                             feat_match_loss_weight=10, l1_spec_loss=H.L1SpecLoss(sample_rate=16000, hop_length=160,
                             win_length=640, mel_fmax=8000.0), l1_spec_loss_weight=45)
    d_loss = H.DiscriminatorLoss(msed_loss=H.MSEDLoss())
    opt_g, opt_d = torch.optim.AdamW(voc.parameters(), 1e-3), torch.optim.AdamW(disc.parameters(), 1e-3)
    before_g = [p.detach().clone() for p in voc.parameters()]
    before_d = [p.detach().clone() for p in disc.parameters()]
    y = 0.1 * torch.randn(2, 1, 4 * SPU, generator=torch.Generator().manual_seed(0))
    y_hat = voc(torch.randint(0, 16, (2, 4)))[0].unsqueeze(1)
    scores_fake, _ = disc(y_hat.detach())
    scores_real, _ = disc(y)
    loss_d = d_loss(scores_fake, scores_real)["D_loss"]
    opt_d.zero_grad(), loss_d.backward(), opt_d.step()
    scores_fake, feats_fake = disc(y_hat)
    _, feats_real = disc(y)
    losses = g_loss(None, y_hat, y, scores_fake, feats_fake, feats_real)
    opt_g.zero_grad(), losses["G_loss"].backward(), opt_g.step()
    assert all(torch.isfinite(losses[k]) for k in ("G_loss", "G_l1_spec_loss", "G_mse_fake_loss", "G_feat_match_loss"))
    assert all(not torch.equal(a, b) for a, b in zip(before_d, disc.parameters()) if b.requires_grad)
    assert sum(not torch.equal(a, b) for a, b in zip(before_g, voc.parameters())) >= len(before_g) - 1


# ---------------------------------------------------------------- learning


def sine_batch(g, num_units=8, batch=4, steps=8):
    """Units in runs of 2; unit ``u`` is a sine at ``200 (u + 1)`` Hz (a deterministic target)."""
    units = torch.randint(0, num_units, (batch, steps // 2), generator=g).repeat_interleave(2, dim=1)
    freqs = (200.0 * (1 + torch.arange(num_units)))[units].repeat_interleave(SPU, dim=1)
    return units, 0.5 * torch.sin(2 * math.pi * torch.cumsum(freqs, dim=1) / 16000)


def test_generator_learns_a_unit_to_sound_mapping():
    from speechbrain.lobes.models.HifiGAN import L1SpecLoss

    torch.manual_seed(0)
    voc = UnitHifiGAN(num_units=8, embedding_dim=32, upsample_initial_channel=64, resblock_kernel_sizes=[3],
                      resblock_dilation_sizes=[[1, 3, 5]])
    mel = L1SpecLoss(sample_rate=16000, hop_length=160, win_length=640, n_fft=1024, n_mel_channels=64, mel_fmax=8000.0)
    opt = torch.optim.Adam(voc.parameters(), 2e-3, betas=(0.8, 0.99))
    held_units, held_wavs = sine_batch(torch.Generator().manual_seed(123))

    def held_out():
        with torch.no_grad():
            return float(mel(voc(held_units)[0], held_wavs))

    start = held_out()
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        units, wavs = sine_batch(g)
        out, _ = voc(units)
        loss = mel(out, wavs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = held_out()
    print(f"held-out mel L1 {start:.3f} -> {end:.3f}")
    assert end < 0.7 * start, (start, end)


# ---------------------------------------------------------------- recipe (slow)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from taste_toolkit.data.synthetic_corpus import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(root, seed=7, num_speakers=2, utterances_per_split={"train": 6, "dev": 2, "test": 2}, num_workers=0, progress=False)
    return root


DEBUG = [
    "--num_units=16",
    "--number_of_epochs=2",
    "--batch_size=4",
    "--segment_units=6",
    "--discriminator_start_step=1",  # step 1: reconstruction only; then GAN steps
    "--vocoder_options={unit_hifigan: {embedding_dim: 16, upsample_initial_channel: 32, resblock_kernel_sizes: [3], resblock_dilation_sizes: [[1, 3, 5]]}}",
    "--disc_periods=[2,3]",
    "--disc_period_channels=[4,8,8,8,8]",
    "--disc_num_scales=1",
    "--disc_scale_width=0.03125",
]


def run_vocoder_recipe(corpus, prep, out, *extra, check=True):
    cmd = [sys.executable, os.path.join(ROOT, "recipes", "librispeech", "train_vocoder.py"),
           "hparams/vocoder/unit_hifigan.yaml", f"--data_folder={corpus}", f"--prep_folder={prep}",
           f"--output_folder={out}", *DEBUG, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    return proc


@pytest.mark.slow
def test_recipe_end_to_end(tiny_corpus, tmp_path):
    import soundfile

    from taste_toolkit.data.unit_cache import load_fitted_extractor

    out, prep = tmp_path / "out", tmp_path / "prep"
    proc = run_vocoder_recipe(tiny_corpus, prep, out)
    results = json.loads((out / "test_results.json").read_text())["test"]
    assert results["num_utterances"] == 4 and 0.0 < results["mel_l1"] < 20.0
    assert "[test] mel_l1=" in proc.stdout
    lines = [line for line in (out / "train_log.txt").read_text().splitlines() if line.startswith("epoch:")]
    assert len(lines) == 2 and all("D_loss" in line and "valid mel_l1" in line for line in lines)
    ckpt = sorted((out / "save").glob("CKPT+*"))[-1]
    for name in ("vocoder", "discriminator", "optimizer_g", "optimizer_d", "scheduler_g", "scheduler_d"):
        assert (ckpt / f"{name}.ckpt").exists(), name
    # Three test utterances: original and vocoded wavs of equal length (whole units), and the plot.
    wavs = sorted((out / "samples").glob("*.wav"))
    assert len(wavs) == 6
    for original in (w for w in wavs if w.name.endswith("_original.wav")):
        a, sr = soundfile.read(original)
        b, _ = soundfile.read(str(original).replace("_original", "_vocoded"))
        assert sr == 16000 and len(a) == len(b) and len(a) % SPU == 0
    assert (out / "samples" / "mels.png").stat().st_size > 5000
    # The vocoder rebuilds from vocoder.json + its checkpoint; it reads the shared unit cache.
    spec = json.loads((out / "vocoder.json").read_text())
    voc = build(spec["kind"], spec["name"], spec["options"])
    voc.load_state_dict(torch.load(ckpt / "vocoder.ckpt", weights_only=True))
    extractor = load_fitted_extractor(str(prep / "units"))
    assert extractor.num_units == voc.num_units == 16
    assert voc.samples_per_unit == extractor.samples_per_unit


@pytest.mark.slow
def test_recipe_rejects_a_vocoder_at_another_unit_rate(tiny_corpus, tmp_path):
    proc = run_vocoder_recipe(
        tiny_corpus, tmp_path / "prep", tmp_path / "out", "--samples_per_unit=320",
        "--vocoder_options={unit_hifigan: {upsample_factors: [8, 5, 4, 2], upsample_kernel_sizes: [16, 11, 8, 4]}}",
        check=False,
    )
    assert proc.returncode != 0
    assert "ConfigError" in proc.stdout + proc.stderr and "320 samples per unit" in proc.stdout + proc.stderr
