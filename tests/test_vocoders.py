"""Vocoder plugins: griffin_lim (offline default) and cosyvoice (local weights only)."""

import logging
import math
import sys
import types

import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.plugins.units.mel_kmeans import MelKMeansUnits
from taste_toolkit.plugins.vocoder.cosyvoice import CosyVoiceVocoder
from taste_toolkit.plugins.vocoder.griffin_lim import GriffinLimVocoder
from taste_toolkit.registry import available, build

SR = 16000


def sine(freq, seconds=1.0, phase=0.0):
    t = torch.arange(int(seconds * SR)) / SR
    return 0.5 * torch.sin(2 * math.pi * freq * t + phase)


def noise(seconds=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(int(seconds * SR), generator=g)


def chirp(seconds=1.0):
    t = torch.arange(int(seconds * SR)) / SR
    return 0.4 * torch.sin(2 * math.pi * (300 * t + 1500 * t * t))


def fit_sounds():
    return [sine(220.0), sine(1000.0), sine(3500.0), noise(), chirp()]


def utterance():
    """Four steady 0.5-s segments: 2 s, 51 units of 640 samples."""
    return torch.cat([sine(220.0, 0.5), noise(0.5, seed=3), sine(3500.0, 0.5), sine(1000.0, 0.5)])


@pytest.fixture(scope="module")
def ext():
    extractor = MelKMeansUnits(num_units=8, kmeans_iters=20)
    extractor.fit(fit_sounds())
    return extractor


@pytest.fixture(scope="module")
def voc(ext):
    return GriffinLimVocoder.from_units_extractor(ext)


@pytest.fixture(scope="module")
def coded(ext):
    wav = utterance()
    units, lengths = ext(wav.unsqueeze(0), torch.tensor([wav.numel()]))
    return wav, units, lengths


# ---------------------------------------------------------------- griffin_lim


def test_registered_and_built_from_options():
    assert {"griffin_lim", "cosyvoice"} <= set(available("vocoder"))
    voc = build("vocoder", "griffin_lim", {"n_iter": 4}, num_units=16)
    assert voc.sample_rate == 16000 and voc.num_units == 16 and voc.samples_per_unit == 640
    assert voc.options["f_max"] == 8000.0 and voc.options["win_length"] == 1024
    with pytest.raises(ConfigError, match="n_iter must be >= 1"):
        GriffinLimVocoder(n_iter=0)


def test_log_mel_matches_extractor(ext, voc, coded):
    wav, _, lengths = coded
    feats, _ = ext.features(wav.unsqueeze(0), torch.tensor([wav.numel()]))
    ours = voc.log_mel(wav)
    assert ours.shape == (int(lengths[0]) * 2, 80)
    assert torch.allclose(ours, feats[0].reshape(-1, 80), atol=1e-5)


def test_length_convention(voc, coded):
    wav, units, lengths = coded
    wavs, wav_lengths = voc(units, lengths)
    assert int(lengths[0]) == 51 and wav_lengths.tolist() == [51 * 640]
    assert wavs.shape == (1, 51 * 640) and wavs.dtype == torch.float32
    assert wav.numel() < int(wav_lengths[0]) <= wav.numel() + 640  # at most one unit longer
    small = GriffinLimVocoder(num_units=3, n_mels=16, stack=1, n_fft=256, hop_length=64, n_iter=2)
    small.load_table(torch.full((3, 1, 16), -2.0))
    out, out_lengths = small(torch.tensor([[0, 1, 2, 0], [2, 2, 0, 0]]), torch.tensor([4, 2]))
    assert out.shape == (2, 256) and out_lengths.tolist() == [256, 128]
    assert (out[1, 128:] == 0).all() and out[1, :128].abs().sum() > 0


def test_vocoded_audio_follows_units(ext, voc, coded):
    wav, units, lengths = coded
    table = ext.unit_log_mels[units[0]].reshape(-1, 80)  # what the units ask for
    original = voc.log_mel(wav)
    frames = table.shape[0]
    out, out_lengths = voc(units, lengths)
    g = torch.Generator().manual_seed(0)
    shuffled, _ = voc(units[:, torch.randperm(units.shape[1], generator=g)], lengths)

    def dist(audio, ref):
        return float((voc.log_mel(audio)[:frames] - ref).abs().mean())

    assert dist(out[0], table) < 1.0  # natural-log units; shuffled is ~4.5
    assert dist(out[0], table) < 0.35 * dist(shuffled[0], table)
    assert dist(out[0], original) < 0.5 * dist(shuffled[0], original)
    # the extractor hears the same units again in the vocoded audio (~94 %)
    again, _ = ext(out, out_lengths)
    assert (again[0, : int(lengths[0])] == units[0]).float().mean() >= 0.85


def test_batch_equals_single_and_padding_ignored(ext, voc, coded):
    _, units, lengths = coded
    short = units[0, 10:30]
    batch = torch.full((2, 51), 9999)  # out-of-range padding must be ignored
    batch[0, :20] = short
    batch[1] = units[0]
    wavs, wav_lengths = voc(batch, torch.tensor([20, 51]))
    alone, alone_lengths = voc(short.unsqueeze(0), torch.tensor([20]))
    assert wav_lengths.tolist() == [20 * 640, 51 * 640]
    assert torch.equal(wavs[0, : 20 * 640], alone[0]) and (wavs[0, 20 * 640 :] == 0).all()
    assert torch.equal(wavs[1], voc(units, lengths)[0][0])


def test_zero_length_gives_empty_waveform(voc, coded):
    _, units, _ = coded
    wavs, wav_lengths = voc(units[:, :5].repeat(2, 1), torch.tensor([0, 5]))
    assert wav_lengths.tolist() == [0, 5 * 640] and (wavs[0] == 0).all()


def test_deterministic_phase(ext, voc, coded):
    _, units, lengths = coded
    first, _ = voc(units, lengths)
    assert torch.equal(first, voc(units, lengths)[0])
    other_seed, _ = GriffinLimVocoder.from_units_extractor(ext, seed=1)(units, lengths)
    assert not torch.allclose(first, other_seed, atol=1e-3)  # the seed does matter
    zero_phase = GriffinLimVocoder.from_units_extractor(ext, rand_init=False)
    assert torch.equal(zero_phase(units, lengths)[0], zero_phase(units, lengths)[0])


def test_state_dict_round_trip(voc, coded):
    _, units, lengths = coded
    state = voc.state_dict()
    assert set(state) == {"unit_log_mels", "fitted"}  # derived filters are not saved
    fresh = build("vocoder", "griffin_lim", dict(voc.options))
    with pytest.raises(MissingResourceError, match="no unit table"):
        fresh(units, lengths)
    fresh.load_state_dict(state)
    assert torch.equal(fresh(units, lengths)[0], voc(units, lengths)[0])


def test_unfitted_raises(coded):
    _, units, lengths = coded
    with pytest.raises(MissingResourceError, match="from_units_extractor"):
        GriffinLimVocoder(num_units=8)(units, lengths)
    with pytest.raises(MissingResourceError, match="not fitted"):
        GriffinLimVocoder.from_units_extractor(MelKMeansUnits(num_units=8))
    with pytest.raises(ConfigError, match="fit\\(units_list"):
        GriffinLimVocoder.from_units_extractor(types.SimpleNamespace(num_units=4096))


def test_bad_inputs(voc, coded):
    _, units, lengths = coded
    for bad in (8, -1):
        wrong = units.clone()
        wrong[0, 7] = bad
        with pytest.raises(InputError, match=r"unit ids must be in \[0, 8\)"):
            voc(wrong, lengths)
    with pytest.raises(InputError, match="integer ids"):
        voc(units.float(), lengths)
    with pytest.raises(InputError, match="units \\(B, S\\)"):
        voc(units[0], lengths)
    with pytest.raises(InputError, match="relative lengths"):
        voc(units, torch.tensor([1.0]))
    with pytest.raises(InputError, match=r"in \[0, 51\]"):
        voc(units, torch.tensor([52]))
    with pytest.raises(InputError, match=r"\(num_units, stack, n_mels\)"):
        GriffinLimVocoder(num_units=8).load_table(torch.zeros(8, 1, 80))


def test_fit_recovers_the_extractor_table(ext, caplog):
    fresh = GriffinLimVocoder(num_units=8)
    wavs = fit_sounds()
    units = [ext(w.unsqueeze(0), torch.tensor([w.numel()]))[0][0] for w in wavs]
    with caplog.at_level(logging.WARNING):
        counts = fresh.fit(units, [fresh.log_mel(w) for w in wavs])
    assert int(counts.sum()) == sum(u.numel() for u in units)
    seen = counts > 0
    # k-means centroids are the mean raw log-mel of their members: same table
    gap = (fresh.unit_log_mels[seen] - ext.unit_log_mels[seen]).abs().mean()
    assert gap < 0.3, gap
    assert bool(fresh.fitted)
    # a unit that never occurs is rendered as silence, with a warning
    partial = GriffinLimVocoder(num_units=8)
    partial.fit([units[0]], [partial.log_mel(wavs[0])])
    unseen = [u for u in range(8) if u not in set(units[0].tolist())]
    assert torch.allclose(partial.unit_log_mels[unseen], torch.tensor(math.log(1e-5)))
    assert any("never occur" in r.getMessage() for r in caplog.records) or not unseen
    with pytest.raises(InputError, match="unit rate does not match"):
        fresh.fit([units[0]], [fresh.log_mel(wavs[0])[::2]])
    with pytest.raises(InputError, match="no \\(units, log-mels\\) pairs"):
        fresh.fit([], [])


def test_smoothing_softens_unit_boundaries():
    voc = GriffinLimVocoder(num_units=2, n_mels=4, stack=1, smooth_frames=1)
    step = torch.tensor([[0.0] * 4] * 3 + [[3.0] * 4] * 3)  # (F=6, M=4)
    smoothed = voc._smooth(step)
    assert torch.allclose(smoothed[:, 0], torch.tensor([0.0, 0.0, 1.0, 2.0, 3.0, 3.0]))
    flat = torch.full((5, 4), -2.0)
    assert torch.allclose(voc._smooth(flat), flat)  # steady units are untouched


# ---------------------------------------------------------------- cosyvoice


def test_cosyvoice_missing_folder_and_files(tmp_path):
    with pytest.raises(MissingResourceError, match="needs model_dir.*FunAudioLLM/CosyVoice-300M"):
        build("vocoder", "cosyvoice")
    with pytest.raises(MissingResourceError, match="does not exist.*griffin_lim"):
        CosyVoiceVocoder(model_dir=str(tmp_path / "nope"))
    (tmp_path / "flow.pt").write_bytes(b"x")
    with pytest.raises(MissingResourceError, match="lacks cosyvoice.yaml, hift.pt"):
        CosyVoiceVocoder(model_dir=str(tmp_path))


def test_cosyvoice_missing_package(tmp_path, monkeypatch):
    for name in ("cosyvoice.yaml", "flow.pt", "hift.pt"):
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "cosyvoice", None)  # import now fails
    with pytest.raises(MissingResourceError, match="cosyvoice package.*git clone"):
        CosyVoiceVocoder(model_dir=str(tmp_path))


class FakeFlow(torch.nn.Module):
    """Stand-in with MaskedDiffWithXvec.inference's signature (no real weights here)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(4096, 80)

    def inference(self, token, token_len, prompt_token, prompt_token_len, prompt_feat,
                  prompt_feat_len, embedding, flow_cache):  # fmt: skip
        assert token.shape[0] == 1 and token.dtype == torch.int32 and embedding.shape == (1, 192)
        assert prompt_token.shape == (1, 0) and prompt_feat.shape == (1, 0, 80)
        frames = int(token.shape[1] / 50 * 22050 / 256)  # CosyVoice's mel length
        mel = self.embed(token.long())[0].T + embedding[:, :1]  # (80, S)
        mel = torch.nn.functional.interpolate(mel[None], size=frames)
        return mel, flow_cache


class FakeHift(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(1))

    def inference(self, speech_feat, cache_source=None):
        wav = self.gain * speech_feat.mean(1).repeat_interleave(256, dim=1)  # (1, T * 256)
        return wav, torch.zeros(1, 1, wav.shape[1])


def test_cosyvoice_plumbing_with_stand_ins(tmp_path, monkeypatch):
    hyperpyyaml = pytest.importorskip("hyperpyyaml")
    (tmp_path / "cosyvoice.yaml").write_text("flow: {}\n")
    trained = FakeFlow()
    torch.save(trained.state_dict(), tmp_path / "flow.pt")
    torch.save({"generator.gain": torch.tensor([2.0])}, tmp_path / "hift.pt")
    monkeypatch.setitem(sys.modules, "cosyvoice", types.ModuleType("cosyvoice"))
    stand_ins = lambda f: {"flow": FakeFlow(), "hift": FakeHift()}  # noqa: E731
    monkeypatch.setattr(hyperpyyaml, "load_hyperpyyaml", stand_ins)
    voc = CosyVoiceVocoder(model_dir=str(tmp_path))
    assert voc.sample_rate == 22050
    assert torch.equal(voc.flow.embed.weight, trained.embed.weight)  # flow.pt loaded
    assert float(voc.hift.gain) == 2.0  # "generator." prefix stripped as CosyVoice does
    units = torch.tensor([[5, 6, 7, 8, 9] * 10, [1, 2, 3] * 5 + [4095] * 35])
    speaker = torch.randn(2, 192, generator=torch.Generator().manual_seed(0))
    wavs, lengths = voc(units, torch.tensor([50, 15]), speaker=speaker)
    assert lengths.tolist() == [86 * 256, 25 * 256] and wavs.shape == (2, 86 * 256)
    alone, _ = voc(units[1:, :15], torch.tensor([15]), speaker=speaker[1:])
    assert torch.equal(wavs[1, : 25 * 256], alone[0]) and (wavs[1, 25 * 256 :] == 0).all()
    with pytest.raises(InputError, match="speaker=\\(B, 192\\)"):
        voc(units, torch.tensor([50, 15]))
    with pytest.raises(InputError, match=r"\[0, 4096\)"):
        voc(units + 1, torch.tensor([50, 50]), speaker=speaker)
