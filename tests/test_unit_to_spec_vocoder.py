"""The ``unit_to_spec`` vocoder and its training/caching (taste_toolkit.training.unit_vocoder)."""

import csv
import math

import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.plugins.units.mel_kmeans import MelKMeansUnits
from taste_toolkit.plugins.vocoder.unit_to_spec import UnitToSpecVocoder
from taste_toolkit.registry import available, build
from taste_toolkit.training import unit_vocoder
from taste_toolkit.training.unit_vocoder import fit_unit_vocoder, train_unit_vocoder

SR = 16000
#: A tiny geometry: 4 STFT frames of hop 64 per unit of 256 samples.
TINY = dict(num_units=6, samples_per_unit=256, n_fft=256, hop_length=64, dim=16,
            unit_dilations=[1, 2], frame_dilations=[1], n_iter=4)


def tiny(**overrides):
    torch.manual_seed(0)
    return UnitToSpecVocoder(**{**TINY, **overrides}).eval()


def toy_pairs(count=6, steps=20, spu=256, seed=0):
    """Units and a waveform where every unit is a sine of its own pitch (learnable)."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(count):
        units = torch.randint(0, 6, (steps,), generator=g)
        t = torch.arange(spu) / SR
        wav = torch.cat([
            0.3 * torch.sin(2 * math.pi * (300 + 500 * int(u)) * t)
            + 0.02 * (int(u) + 1) * torch.randn(spu, generator=g)
            for u in units
        ])
        pairs.append((units, wav))
    return pairs


def test_registered():
    assert "unit_to_spec" in available("vocoder")
    voc = build("vocoder", "unit_to_spec", dict(TINY))
    assert voc.sample_rate == SR and voc.frames_per_unit == 4


def test_shapes_and_lengths():
    voc = tiny()
    units = torch.tensor([[1, 2, 3, 4], [5, 0, 1, 0], [2, 2, 0, 0]])
    lengths = torch.tensor([4, 3, 0])
    log_mag, frames = voc.spectrogram(units, lengths)
    assert log_mag.shape == (3, 16, 129) and frames.tolist() == [16, 12, 0]
    wavs, wav_lengths = voc(units, lengths)
    assert wavs.shape == (3, 4 * 256)
    assert wav_lengths.tolist() == [4 * 256, 3 * 256, 0]
    assert wavs[1, 3 * 256:].abs().max() == 0 and wavs[2].abs().max() == 0
    assert torch.isfinite(wavs).all()
    one, n = voc(torch.tensor([[3]]), torch.tensor([1]))  # shorter than n_fft // 2 after padding rules
    assert one.shape == (1, 256) and n.tolist() == [256]


def test_batch_invariance():
    voc = tiny()
    g = torch.Generator().manual_seed(1)
    units = torch.randint(0, 6, (3, 9), generator=g)
    lengths = torch.tensor([9, 5, 2])
    batch_spec, _ = voc.spectrogram(units, lengths)
    batch_wav, _ = voc(units, lengths)
    for i, n in enumerate(lengths.tolist()):
        other = units[i, :n].clone()
        alone_spec, _ = voc.spectrogram(other[None], torch.tensor([n]))
        torch.testing.assert_close(batch_spec[i, : n * 4], alone_spec[0], atol=1e-5, rtol=1e-5)
        alone_wav, _ = voc(other[None], torch.tensor([n]))
        assert torch.equal(batch_wav[i, : n * 256], alone_wav[0])
    garbage = units.clone()
    garbage[1, 5:] = 5  # padded ids never matter
    torch.testing.assert_close(voc.spectrogram(garbage, lengths)[0], batch_spec)


def test_synthesis_ignores_dropout():
    voc = tiny(dropout=0.5).train()
    units, lengths = torch.tensor([[1, 2, 3, 4]]), torch.tensor([4])
    assert torch.equal(voc(units, lengths)[0], voc(units, lengths)[0])
    assert voc.training  # the mode is restored


def test_bad_inputs():
    voc = tiny()
    with pytest.raises(InputError, match="trained for 6 units"):
        voc(torch.tensor([[1, 6]]), torch.tensor([2]))
    with pytest.raises(InputError, match="integer"):
        voc(torch.zeros(1, 3), torch.tensor([3]))
    with pytest.raises(InputError, match="relative"):
        voc(torch.zeros(1, 3, dtype=torch.long), torch.tensor([0.5]))
    with pytest.raises(ConfigError, match="divide"):
        UnitToSpecVocoder(samples_per_unit=640, hop_length=300)


def test_training_reduces_loss():
    voc = tiny()
    summary = train_unit_vocoder(voc, toy_pairs(), steps=60, batch_size=4, crop_units=8, lr=3e-3,
                                 warmup=5, progress=False)
    # first_loss already starts from the mean log-spectrum; the noise floor of the toy signal is irreducible.
    assert summary["final_loss"] < 0.85 * summary["first_loss"], summary
    again = tiny()
    assert train_unit_vocoder(again, toy_pairs(), steps=60, batch_size=4, crop_units=8, lr=3e-3,
                              warmup=5, progress=False)["final_loss"] == summary["final_loss"]


def test_target_crops_match_whole_utterance_stft():
    """The on-the-fly crop targets are exactly the frames of the whole utterance's centred STFT."""
    voc = tiny()
    units, wav = toy_pairs(count=1)[0]
    whole = voc.log_magnitude(wav[None])[0]  # (S * fpu, F)
    sampler = unit_vocoder._CropSampler([(units, wav)], 5, 256, 128, seed=3)
    for _ in range(4):
        crop_units, lengths, crops = sampler.sample(1)
        start = next(s for s in range(units.numel() - 4) if torch.equal(units[s:s + 5], crop_units[0]))
        target = unit_vocoder._target(voc, crops, 20)[0]
        torch.testing.assert_close(target, whole[start * 4: start * 4 + 20], atol=1e-4, rtol=1e-4)


def test_save_load_round_trip(tmp_path):
    voc = tiny(units_fingerprint="abc")
    train_unit_vocoder(voc, toy_pairs(), steps=3, batch_size=2, crop_units=4, progress=False)
    path = voc.save(str(tmp_path / "voc.safetensors"), metadata={"steps": 3})
    loaded = UnitToSpecVocoder.from_pretrained(path)
    assert loaded.options == voc.options and loaded.training_summary == {"steps": 3}
    units, lengths = torch.tensor([[1, 2, 3, 4, 5]]), torch.tensor([5])
    assert torch.equal(voc(units, lengths)[0], loaded(units, lengths)[0])
    assert UnitToSpecVocoder.from_pretrained(path, n_iter=2).options["n_iter"] == 2
    with pytest.raises(ConfigError, match="synthesis options"):
        UnitToSpecVocoder.from_pretrained(path, dim=8)
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(MissingResourceError, match="corrupt"):
        UnitToSpecVocoder.from_pretrained(str(tmp_path / "bad.safetensors"))


def test_standalone_checkpoint_round_trip(tmp_path):
    from taste_toolkit.pretrained.standalone import load_components, save_components

    voc = tiny(units_fingerprint="abc")
    save_components(tmp_path, {"vocoder": voc})
    loaded = load_components(tmp_path)[0]["vocoder"]
    units = torch.tensor([[0, 1, 2]])
    assert loaded.units_fingerprint == "abc"
    assert torch.equal(voc(units, torch.tensor([3]))[0], loaded(units, torch.tensor([3]))[0])


# ---------------------------------------------------------------- units identity and the cache


def sounds(seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(SR) / SR
    tones = [0.4 * torch.sin(2 * math.pi * f * t) for f in (220.0, 1000.0, 3000.0)]
    return tones + [0.2 * torch.randn(SR, generator=g)]


@pytest.fixture(scope="module")
def extractor():
    ext = MelKMeansUnits(num_units=4, kmeans_iters=5, fit_frames=400)
    ext.fit(sounds(0))
    return ext


@pytest.fixture()
def manifest(tmp_path):
    import soundfile as sf

    path = tmp_path / "train.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "duration", "wav", "spk_id", "wrd"])
        for i, wav in enumerate(sounds(1)):
            wav_path = tmp_path / f"u{i}.wav"
            sf.write(wav_path, wav.numpy(), SR)
            writer.writerow([f"u{i}", 1.0, str(wav_path), "s", "x"])
    return str(path)


SMALL = dict(dim=16, unit_dilations=[1], frame_dilations=[1], n_fft=256, hop_length=160, n_iter=2)


def test_fit_caches_by_fingerprint_and_refuses_other_units(extractor, manifest, tmp_path, monkeypatch):
    cache = str(tmp_path / "voc")
    path = fit_unit_vocoder(extractor, manifest, cache, vocoder_options=SMALL, steps=3, batch_size=2,
                            crop_units=4, progress=False)
    voc = UnitToSpecVocoder.from_pretrained(path)
    voc.check_units(extractor)  # its own units pass
    assert voc.num_units == 4 and voc.samples_per_unit == 640

    def no_training(*args, **kwargs):
        raise AssertionError("the cached vocoder should have been reused")

    monkeypatch.setattr(unit_vocoder, "train_unit_vocoder", no_training)
    assert fit_unit_vocoder(extractor, manifest, cache, vocoder_options=SMALL, steps=3, batch_size=2,
                            crop_units=4, progress=False) == path

    other_count = MelKMeansUnits(num_units=5, kmeans_iters=5, fit_frames=400)
    other_count.fit(sounds(0))
    with pytest.raises(ConfigError, match="trained for 4 units but the unit extractor has 5"):
        voc.check_units(other_count)
    other_fit = MelKMeansUnits(num_units=4, kmeans_iters=5, fit_frames=400, seed=1)
    other_fit.fit(sounds(2))
    with pytest.raises(ConfigError, match="fingerprint"):
        voc.check_units(other_fit)
    with pytest.raises(AssertionError, match="reused"):  # other units: another cache key, retrains
        fit_unit_vocoder(other_fit, manifest, cache, vocoder_options=SMALL, steps=3, batch_size=2,
                         crop_units=4, progress=False)

    from taste_toolkit.training.export import build_vocoder

    assert build_vocoder("unit_to_spec", {"unit_to_spec": {"checkpoint": path, "n_iter": 3}}, extractor).options["n_iter"] == 3
    with pytest.raises(ConfigError, match="fingerprint"):
        build_vocoder("unit_to_spec", {"unit_to_spec": {"checkpoint": path}}, other_fit)
    with pytest.raises(ConfigError, match="checkpoint"):
        build_vocoder("unit_to_spec", {}, extractor)


def test_tokenizer_refuses_a_vocoder_for_other_units(extractor, tiny_taste_model, tiny_whisper_dir, tmp_path):
    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.data.unit_cache import extractor_fingerprint

    model, text_tok = tiny_taste_model(tiny_whisper_dir, ["the cat sat on the mat"] * 5, tmp_path / "sp",
                                       num_units=4)
    voc = UnitToSpecVocoder(num_units=4, units_fingerprint=extractor_fingerprint(extractor), **SMALL)
    assert TasteTokenizer(model, text_tok, units=extractor, vocoder=voc).vocoder is voc
    other_fit = MelKMeansUnits(num_units=4, kmeans_iters=5, fit_frames=400, seed=1)
    other_fit.fit(sounds(2))
    with pytest.raises(ConfigError, match="trained for other units"):
        TasteTokenizer(model, text_tok, units=other_fit, vocoder=voc)
