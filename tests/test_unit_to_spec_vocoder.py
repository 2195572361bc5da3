"""The ``unit_to_spec`` vocoder and its training/caching (taste_toolkit.training.unit_vocoder)."""

import csv
import math

import pytest
import torch

from taste_toolkit.errors import ConfigError, DataPreparationError, InputError, MissingResourceError
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
        crop_units, lengths, crops, _, _ = sampler.sample(1)
        start = next(s for s in range(units.numel() - 4) if torch.equal(units[s:s + 5], crop_units[0]))
        target = unit_vocoder._target(voc, crops, 20)[0]
        torch.testing.assert_close(target, whole[start * 4: start * 4 + 20], atol=1e-4, rtol=1e-4)


def test_context_crops_hold_real_neighbours_and_weight_only_the_crop():
    """With context, a window is crop + real neighbours; the loss weights cover the crop alone."""
    voc = tiny()
    units, wav = toy_pairs(count=1)[0]  # 20 units
    whole = voc.log_magnitude(wav[None])[0]
    sampler = unit_vocoder._CropSampler([(units, wav)], 5, 256, 128, seed=3, context=3)
    firsts = set()
    for _ in range(12):
        window, lengths, crops, _, weights = sampler.sample(1)
        n = int(lengths[0])
        assert window.shape == (1, 11) and weights.shape == (1, 11) and weights.sum() == 5
        first = next(f for f in range(units.numel() - n + 1) if torch.equal(units[f:f + n], window[0, :n]))
        firsts.add(first)
        on = weights[0].nonzero().flatten()
        start = first + int(on[0])
        assert on.tolist() == list(range(int(on[0]), int(on[0]) + 5))  # one contiguous crop
        assert int(on[0]) == min(3, start) and n == min(units.numel(), start + 8) - first  # neighbours where they exist
        assert weights[0, n:].sum() == 0 and torch.all(window[0, n:] == 0)
        target = unit_vocoder._target(voc, crops, n * 4)[0]
        torch.testing.assert_close(target, whole[first * 4: (first + n) * 4], atol=1e-4, rtol=1e-4)
    assert 0 in firsts and len(firsts) > 2  # utterance start (fewer neighbours) and the middle were drawn


def test_context_is_outside_the_loss():
    """Changing the audio of context units far from the crop leaves the loss unchanged."""
    voc = tiny()
    units, wav = toy_pairs(count=1)[0]
    window, lengths, crops, _, weights = unit_vocoder._CropSampler([(units, wav)], 4, 256, 128, seed=0,
                                                                    context=6).sample(1)
    on = weights[0].nonzero().flatten()
    loss = unit_vocoder.spectral_l1(voc, window, lengths, crops, weights=weights, mel_weight=1.0, delta_weight=1.0)
    far = crops.clone()
    lo, hi = int(on[0]) * 256, (int(on[-1]) + 1) * 256 + 256  # crop samples + n_fft of STFT reach
    far[0, :lo] = torch.randn(lo)
    far[0, hi:] = torch.randn(far.shape[1] - hi)
    again = unit_vocoder.spectral_l1(voc, window, lengths, far, weights=weights, mel_weight=1.0, delta_weight=1.0)
    torch.testing.assert_close(loss, again)
    unweighted = unit_vocoder.spectral_l1(voc, window, lengths, far, mel_weight=1.0, delta_weight=1.0)
    assert not torch.allclose(loss, unweighted)
    with pytest.raises(ConfigError, match="context_units"):
        train_unit_vocoder(voc, [(units, wav)], steps=1, crop_units=4, context_units=-1, progress=False)


def test_receptive_field_units_is_the_networks_reach():
    torch.manual_seed(0)
    voc = UnitToSpecVocoder(**{**TINY, "unit_dilations": [1, 2, 4], "frame_dilations": [1, 2]}).eval()
    rf = voc.receptive_field_units
    assert rf == 7 + 1  # (1 + 2 + 4) units, then 3 frames (of 4 per unit) round up to one unit
    units = torch.randint(0, 6, (1, 30), generator=torch.Generator().manual_seed(1))
    base = voc.spectrogram(units, torch.tensor([30]))[0][0]
    for distance, changes in ((rf, True), (rf + 1, False)):
        moved = units.clone()
        moved[0, 10 + distance] = (moved[0, 10 + distance] + 1) % 6
        out = voc.spectrogram(moved, torch.tensor([30]))[0][0]
        assert (not torch.allclose(out[40:44], base[40:44])) == changes, distance


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
    with pytest.raises(AssertionError, match="reused"):  # context crops train other weights: another key
        fit_unit_vocoder(extractor, manifest, cache, vocoder_options=SMALL, steps=3, batch_size=2,
                         crop_units=4, progress=False, context_units=2)

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


# ---------------------------------------------------------------- speaker conditioning


def speaker_pairs(count=8, steps=16, spu=256, seed=0):
    """Two voices saying the same units: a unit sets the loudness, the voice the spectral tilt.

    Each unit is noise of the unit's own level, low-passed for voice 0 and
    high-passed for voice 1: units alone cannot tell the tilt, a speaker vector can.
    """
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(count):
        voice = i % 2
        units = torch.randint(0, 6, (steps,), generator=g)
        noise = torch.randn(steps * spu + 1, generator=g)
        shaped = noise[1:] - noise[:-1] if voice else noise[1:] + noise[:-1]
        wav = shaped * (0.02 * (units.repeat_interleave(spu) + 1))
        pairs.append((units, wav, torch.tensor([1.0, 0.0]) if voice == 0 else torch.tensor([0.0, 1.0])))
    return pairs


def test_speaker_vector_changes_the_spectrum_and_is_checked():
    voc = tiny(speaker_dim=2)
    units, lengths = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
    a, _ = voc.spectrogram(units, lengths, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    b, _ = voc.spectrogram(units, lengths, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    assert (a - b).abs().max() > 1e-3
    # batch invariance holds with speakers too
    alone, _ = voc.spectrogram(units[1:, :2], torch.tensor([2]), torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(b[1, :8], alone[0], atol=1e-5, rtol=1e-5)
    wavs, wav_lengths = voc(units, lengths, speaker=torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert wav_lengths.tolist() == [768, 512] and torch.isfinite(wavs).all()
    with pytest.raises(InputError, match="speaker vectors: pass|2-d speaker vectors"):
        voc(units, lengths)
    with pytest.raises(InputError, match=r"\(2, 2\) float"):
        voc(units, lengths, speaker=torch.zeros(2, 3))
    with pytest.raises(InputError, match="NaN"):
        voc(units, lengths, speaker=torch.full((2, 2), float("nan")))
    with pytest.raises(ConfigError, match="speaker_dim"):
        UnitToSpecVocoder(speaker_dim=-1)
    # a vocoder without speaker conditioning ignores a vector, as griffin_lim does
    plain = tiny()
    assert torch.equal(plain(units, lengths)[0], plain(units, lengths, speaker=torch.zeros(2, 2))[0])


def test_speaker_conditioning_learns_what_units_cannot_tell():
    """Same units, two voices: only the speaker-conditioned vocoder fits both."""
    kwargs = dict(steps=150, batch_size=4, crop_units=8, lr=3e-3, warmup=5, unit_noise=0.0, progress=False)
    with_speaker = train_unit_vocoder(tiny(speaker_dim=2), speaker_pairs(), **kwargs)
    without = train_unit_vocoder(tiny(), [(u, w) for u, w, _ in speaker_pairs()], **kwargs)
    assert with_speaker["final_loss"] < 0.8 * without["final_loss"], (with_speaker, without)


def test_fit_with_speaker_vectors(extractor, manifest, tmp_path):
    vectors = {f"u{i}": torch.tensor([float(i), 1.0]) for i in range(4)}
    cache = str(tmp_path / "voc")
    with pytest.raises(ConfigError, match="needs speaker vectors exactly"):
        fit_unit_vocoder(extractor, manifest, cache, vocoder_options={**SMALL, "speaker_dim": 2}, steps=2,
                         batch_size=2, crop_units=4, progress=False)
    with pytest.raises(ConfigError, match="needs speaker vectors exactly"):
        fit_unit_vocoder(extractor, manifest, cache, vocoder_options=SMALL, steps=2, batch_size=2, crop_units=4,
                         progress=False, speaker_vectors=vectors)
    with pytest.raises(ConfigError, match="widths"):
        fit_unit_vocoder(extractor, manifest, cache, vocoder_options={**SMALL, "speaker_dim": 3}, steps=2,
                         batch_size=2, crop_units=4, progress=False, speaker_vectors=vectors)
    options = dict(vocoder_options={**SMALL, "speaker_dim": 2}, steps=2, batch_size=2, crop_units=4, progress=False)
    path = fit_unit_vocoder(extractor, manifest, cache, speaker_vectors=vectors, **options)
    voc = UnitToSpecVocoder.from_pretrained(path)
    assert voc.speaker_dim == 2
    assert fit_unit_vocoder(extractor, manifest, cache, speaker_vectors=vectors, **options) == path
    other = {k: v + 1.0 for k, v in vectors.items()}  # another speaker model: other weights
    assert fit_unit_vocoder(extractor, manifest, cache, speaker_vectors=other, **options) != path
    missing = {k: v for k, v in vectors.items() if k != "u2"}

    with pytest.raises(DataPreparationError, match="u2"):
        fit_unit_vocoder(extractor, manifest, str(tmp_path / "voc2"), speaker_vectors=missing, **options)


def test_tokenizer_feeds_the_source_speaker_to_the_vocoder(extractor, tiny_taste_model, tiny_whisper_dir, tmp_path):
    """encode computes the speaker vector for a speaker-conditioned vocoder; decode passes it on."""
    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.data.unit_cache import extractor_fingerprint

    try:
        speaker = build("speaker", "resemblyzer")
    except Exception as exc:  # pragma: no cover - resemblyzer is installed by scripts/install.sh
        pytest.skip(f"resemblyzer cannot be used here ({exc})")
    model, text_tok = tiny_taste_model(tiny_whisper_dir, ["the cat sat on the mat"] * 5, tmp_path / "sp",
                                       num_units=4)
    assert model.decoder.speaker_dim == 0  # only the vocoder wants the voice
    voc = UnitToSpecVocoder(num_units=4, units_fingerprint=extractor_fingerprint(extractor),
                            speaker_dim=speaker.embedding_dim, **SMALL)
    tok = TasteTokenizer(model, text_tok, units=extractor, speaker=speaker, vocoder=voc)
    wav = sounds(3)[0][:8000] + 0.01 * torch.randn(8000, generator=torch.Generator().manual_seed(0))
    tokens = tok.encode(wav, SR, "the cat")
    assert tokens.speaker is not None and tokens.speaker.shape == (speaker.embedding_dim,)
    torch.testing.assert_close(tokens.speaker, speaker(wav[None], torch.tensor([8000]))[0])
    out = tok.decode(tokens, max_len_ratio=2.0)
    units = out.units[0]
    expected = voc(units[None], torch.tensor([units.numel()]), speaker=tokens.speaker[None])[0][0]
    assert torch.equal(out.waveforms[0], expected)
    # the folder keeps the pairing: the decoder without a speaker prefix, the vocoder with the voice
    tok.save_pretrained(tmp_path / "tok")
    loaded = TasteTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.vocoder.speaker_dim == speaker.embedding_dim and loaded.model.decoder.speaker_dim == 0
    again = loaded.encode(wav, SR, "the cat")
    torch.testing.assert_close(again.speaker, tokens.speaker)
    assert torch.equal(loaded.decode(again, max_len_ratio=2.0).units[0], units)
    with pytest.raises(InputError, match="speaker vector"):
        tok.decode(type(tokens)(**{**tokens.__dict__, "speaker": None}))
    with pytest.raises(InputError, match="speaker vectors"):  # vocode without the voice: the vocoder says so
        tok.vocode([units])
    assert torch.equal(tok.vocode([units], tokens.speaker[None])[0], expected)
    with pytest.raises(ConfigError, match="speaker plugin gives none"):
        TasteTokenizer(model, text_tok, units=extractor, vocoder=voc)
    wrong = UnitToSpecVocoder(num_units=4, units_fingerprint=extractor_fingerprint(extractor), speaker_dim=3, **SMALL)
    with pytest.raises(ConfigError, match="3-d speaker vectors"):
        TasteTokenizer(model, text_tok, units=extractor, speaker=speaker, vocoder=wrong)


def test_recipe_vocoder_follows_the_speaker_plugin(extractor, manifest, tmp_path):
    """The recipe's vocoder block: trained with the speaker plugin's vectors unless speaker_dim: 0."""
    from types import SimpleNamespace

    from taste_toolkit.training.export import build_vocoder
    from taste_toolkit.training.unit_vocoder import fit_recipe_vocoder

    vectors = {f"u{i}": torch.tensor([float(i), 1.0]) for i in range(4)}
    hparams = {"units": extractor, "speaker": None, "prep_folder": str(tmp_path),
               "vocoder_options": {"unit_to_spec": {**SMALL, "n_iter": 3}},
               "unit_vocoder_training": {"steps": 2, "batch_size": 2, "crop_units": 4, "progress": False}}
    block = fit_recipe_vocoder(hparams, manifest, None)
    assert set(block) == {"n_iter", "checkpoint"}  # only what build_vocoder may set on trained weights
    plain = build_vocoder("unit_to_spec", {"unit_to_spec": block}, extractor)
    assert plain.speaker_dim == 0 and plain.options["n_iter"] == 3 and plain.options["dim"] == 16

    hparams["speaker"] = SimpleNamespace(embedding_dim=2)
    voc = build_vocoder("unit_to_spec", {"unit_to_spec": fit_recipe_vocoder(hparams, manifest, None, vectors)},
                        extractor)
    assert voc.speaker_dim == 2
    hparams["vocoder_options"]["unit_to_spec"]["speaker_dim"] = 0
    assert build_vocoder("unit_to_spec", {"unit_to_spec": fit_recipe_vocoder(hparams, manifest, None, vectors)},
                         extractor).speaker_dim == 0
    hparams["vocoder_options"]["unit_to_spec"]["speaker_dim"] = 3
    with pytest.raises(ConfigError, match="speaker plugin gives 2"):
        fit_recipe_vocoder(hparams, manifest, None, vectors)


def test_fit_with_extra_training_audio(extractor, manifest, tmp_path):
    """Extra manifests (a real voice) add training audio; their units come from the extractor."""
    import soundfile as sf

    extra = tmp_path / "extra.csv"
    with open(extra, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "duration", "wav", "spk_id", "wrd"])
        for i, wav in enumerate(sounds(5)[:2]):
            sf.write(tmp_path / f"x{i}.wav", wav.numpy(), SR)
            writer.writerow([f"x{i}", 1.0, str(tmp_path / f"x{i}.wav"), "r", "y"])
    options = dict(vocoder_options=SMALL, steps=2, batch_size=2, crop_units=4, progress=False)
    base = fit_unit_vocoder(extractor, manifest, str(tmp_path / "voc"), **options)
    more = fit_unit_vocoder(extractor, manifest, str(tmp_path / "voc"), extra_manifests=[str(extra)], **options)
    assert more != base  # other training data, other cache key
    summary = UnitToSpecVocoder.from_pretrained(more).training_summary
    assert summary["utterances"] == 6 and summary["extra_manifests"] == [str(extra)]
    vectors = {f"u{i}": torch.ones(2) for i in range(4)}
    with pytest.raises(DataPreparationError, match="x0"):  # the extra audio needs speaker vectors too
        fit_unit_vocoder(extractor, manifest, str(tmp_path / "voc"), extra_manifests=[str(extra)],
                         speaker_vectors=vectors, **{**options, "vocoder_options": {**SMALL, "speaker_dim": 2}})


def test_delta_loss_penalizes_smeared_timing_not_offsets(monkeypatch):
    """``delta_weight`` adds an L1 on frame-to-frame changes: blind to a constant offset, not to a blur."""
    voc = tiny()
    units, wav = toy_pairs(count=1)[0]
    crop_units, lengths, crops, _, _ = unit_vocoder._CropSampler([(units, wav)], 8, 256, 128, seed=1).sample(1)
    frames = int(lengths[0]) * voc.frames_per_unit
    target = unit_vocoder._target(voc, crops, frames)
    blurred = torch.nn.functional.avg_pool1d(target.transpose(1, 2), 5, stride=1, padding=2,
                                             count_include_pad=False).transpose(1, 2)

    def loss(pred, weight):
        monkeypatch.setattr(voc, "spectrogram", lambda *a: (pred, torch.tensor([frames])))
        return float(unit_vocoder.spectral_l1(voc, crop_units, lengths, crops, delta_weight=weight))

    assert loss(target, 1.0) == pytest.approx(0.0, abs=1e-6)
    assert loss(target + 0.5, 1.0) == pytest.approx(loss(target + 0.5, 0.0)) == pytest.approx(0.5)
    plain, with_delta = loss(blurred, 0.0), loss(blurred, 1.0)
    assert with_delta > 1.5 * plain > 0, (plain, with_delta)  # a blur changes the frame-to-frame steps a lot


def test_mel_loss_weighs_formant_bands_over_high_bands(monkeypatch):
    """``mel_weight`` adds a log-mel L1: zero for the truth, and an error below 2 kHz costs far
    more than the same error over as many linear bins at 4-6 kHz (the linear L1 cannot tell them apart)."""
    voc = UnitToSpecVocoder(num_units=8, dim=8, unit_dilations=[1], frame_dilations=[1], n_iter=2)
    units, wav = toy_pairs(count=1, spu=640)[0]
    crop_units, lengths, crops, _, _ = unit_vocoder._CropSampler([(units, wav)], 6, 640, 256, seed=1).sample(1)
    frames = int(lengths[0]) * voc.frames_per_unit
    target = unit_vocoder._target(voc, crops, frames)

    def loss(pred, weight):
        monkeypatch.setattr(voc, "spectrogram", lambda *a: (pred, torch.tensor([frames])))
        return float(unit_vocoder.spectral_l1(voc, crop_units, lengths, crops, mel_weight=weight))

    low, high = target.clone(), target.clone()
    low[..., 1:65] += 1.0     # 31-2000 Hz
    high[..., 129:193] += 1.0  # 4-6 kHz
    assert loss(target, 1.0) == pytest.approx(0.0, abs=1e-5)
    assert loss(low, 0.0) == pytest.approx(loss(high, 0.0))  # the linear L1 alone: the same
    mel_low, mel_high = loss(low, 1.0) - loss(low, 0.0), loss(high, 1.0) - loss(high, 0.0)
    assert mel_low > 2 * mel_high > 0, (mel_low, mel_high)


def test_delta_weight_keys_the_vocoder_cache(extractor, manifest, tmp_path):
    plain = fit_unit_vocoder(extractor, manifest, str(tmp_path), vocoder_options=dict(dim=8, n_iter=2),
                             steps=3, batch_size=2, crop_units=4, progress=False)
    sharp = fit_unit_vocoder(extractor, manifest, str(tmp_path), vocoder_options=dict(dim=8, n_iter=2),
                             steps=3, batch_size=2, crop_units=4, progress=False, delta_weight=0.5)
    assert plain != sharp
    assert UnitToSpecVocoder.from_pretrained(sharp).training_summary["delta_weight"] == 0.5
    mel = fit_unit_vocoder(extractor, manifest, str(tmp_path), vocoder_options=dict(dim=8, n_iter=2),
                           steps=3, batch_size=2, crop_units=4, progress=False, mel_weight=1.0)
    assert mel not in (plain, sharp)
    assert UnitToSpecVocoder.from_pretrained(mel).training_summary["mel_weight"] == 1.0
    with pytest.raises(ConfigError, match="mel_weight >= 0"):
        fit_unit_vocoder(extractor, manifest, str(tmp_path), vocoder_options=dict(dim=8, n_iter=2),
                         steps=3, batch_size=2, crop_units=4, progress=False, mel_weight=-1.0)
