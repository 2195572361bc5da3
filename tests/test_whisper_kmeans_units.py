"""``whisper_kmeans`` units: k-means over frozen Whisper encoder states."""

import json
import os

import pytest
import soundfile
import torch

from taste_toolkit.data.unit_cache import load_fitted_extractor, load_units, prepare_units
from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.kmeans import assign
from taste_toolkit.plugins.encoder.whisper import WhisperTapEncoder
from taste_toolkit.plugins.units.mel_kmeans import MelKMeansUnits
from taste_toolkit.plugins.units.whisper_kmeans import WhisperKMeansUnits
from taste_toolkit.plugins.vocoder.griffin_lim import GriffinLimVocoder
from taste_toolkit.pretrained.standalone import load_components, save_components
from taste_toolkit.registry import available, build

FIT_LENGTHS = [16000, 12000, 9000, 20000]


def fit_data(make_wavs, seed=0):
    wavs, lengths = make_wavs(FIT_LENGTHS, seed=seed)
    return [wavs[i, :n] for i, n in enumerate(lengths.tolist())]


@pytest.fixture(scope="module")
def fitted(tiny_whisper_dir, make_wavs):
    ext = build("units", "whisper_kmeans", {"source": tiny_whisper_dir, "num_units": 8, "kmeans_iters": 10})
    ext.fit(fit_data(make_wavs))
    return ext


def test_registry_build_and_geometry(tiny_whisper_dir):
    assert "whisper_kmeans" in available("units")
    ext = build("units", "whisper_kmeans", {"source": tiny_whisper_dir, "num_units": 16})
    assert isinstance(ext, MelKMeansUnits) and ext.needs_fit
    assert (ext.num_units, ext.frame_rate, ext.samples_per_unit) == (16, 25.0, 640)
    assert ext.centroids.shape == (16, 2 * 64) and ext.unit_log_mels.shape == (16, 2, 80)
    one = build("units", "whisper_kmeans", {"source": tiny_whisper_dir, "stack": 1, "num_units": 1024})
    assert (one.frame_rate, one.samples_per_unit, one.num_units) == (50.0, 320, 1024)
    # options are plain data (hashed by the unit cache, rebuild the plugin)
    assert json.loads(json.dumps(ext.options))["source"] == tiny_whisper_dir
    assert build("units", "whisper_kmeans", ext.options).options == ext.options


def test_unit_count_matches_mel_kmeans(fitted):
    lengths = [1, 319, 320, 639, 640, 641, 1279, 16000, 16001]
    wavs = 0.1 * torch.randn(len(lengths), max(lengths), generator=torch.Generator().manual_seed(0))
    wav_lengths = torch.tensor(lengths)
    units, got = fitted(wavs, wav_lengths)
    expected = [n // 640 + 1 for n in lengths]
    assert got.tolist() == expected == MelKMeansUnits().num_frames(wav_lengths).tolist()
    assert fitted.num_frames(16000) == 26 and units.shape == (len(lengths), max(expected))
    feats, feat_lengths = fitted.cluster_features(wavs, wav_lengths)
    mels, mel_lengths = fitted.features(wavs, wav_lengths)
    assert feats.shape[:2] == mels.shape[:2] and torch.equal(feat_lengths, mel_lengths)


def test_features_are_whisper_states_of_the_zero_extended_audio(tiny_whisper_dir, make_wavs):
    wavs, lengths = make_wavs([7000], seed=4)  # 11 units -> 22 frames of 7040 samples
    for layer in (-1, 2):
        ext = WhisperKMeansUnits(source=tiny_whisper_dir, num_units=4, layer=layer)
        feats, _ = ext.cluster_features(wavs, lengths)
        tap = WhisperTapEncoder(tiny_whisper_dir, value_layer=-1, key_layer=layer)
        padded = torch.nn.functional.pad(wavs, (0, 7040 - 7000))
        keys = tap(padded, torch.tensor([7040])).keys
        assert keys.shape == (1, 22, 64)
        assert torch.equal(feats, keys.reshape(1, 11, 128))
    assert not torch.equal(feats, WhisperKMeansUnits(source=tiny_whisper_dir, layer=0).cluster_features(
        wavs, lengths)[0])


def test_batch_invariance_and_zero_padding(fitted, make_wavs):
    wavs, lengths = make_wavs([9000, 16000, 3000], seed=7)
    units, unit_lengths = fitted(wavs, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone, alone_lengths = fitted(wavs[i : i + 1, :n], torch.tensor([n]))
        valid = int(unit_lengths[i])
        assert valid == int(alone_lengths[0]) and torch.equal(units[i, :valid], alone[0])
        assert (units[i, valid:] == 0).all()
    # extra zero padding beyond the batch's longest utterance changes nothing
    more, _ = fitted(torch.nn.functional.pad(wavs, (0, 5000)), lengths)
    assert torch.equal(more[:, : units.shape[1]], units) and (more[:, units.shape[1] :] == 0).all()


def test_fit_is_deterministic(tiny_whisper_dir, make_wavs, fitted):
    again = WhisperKMeansUnits(source=tiny_whisper_dir, num_units=8, kmeans_iters=10)
    again.fit(fit_data(make_wavs))
    state, ref = again.state_dict(), fitted.state_dict()
    assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in ref)
    other = WhisperKMeansUnits(source=tiny_whisper_dir, num_units=8, kmeans_iters=10, seed=1)
    other.fit(fit_data(make_wavs))
    assert not torch.equal(other.centroids, fitted.centroids)
    # a fit subset (fit_frames) is deterministic too and bounded
    sub = [WhisperKMeansUnits(source=tiny_whisper_dir, num_units=8, fit_frames=40) for _ in range(2)]
    for ext in sub:
        ext.fit(fit_data(make_wavs))
    assert torch.equal(sub[0].centroids, sub[1].centroids)


def test_unit_log_mels_are_mean_log_mels_of_assigned_frames(fitted, make_wavs):
    # every fit vector is kept (fit_frames > frames), so the table is the exact mean
    table = torch.zeros(8, 2 * 80)
    counts = torch.zeros(8)
    for wav in fit_data(make_wavs):
        lengths = torch.tensor([wav.numel()])
        units, _ = fitted(wav.unsqueeze(0), lengths)
        mels, _ = fitted.features(wav.unsqueeze(0), lengths)
        table.index_add_(0, units[0], mels[0])
        counts += torch.bincount(units[0], minlength=8)
    assert fitted.unit_log_mels.shape == (8, 2, 80) and bool(fitted.fitted)
    used = counts > 0
    expected = (table[used] / counts[used, None]).reshape(-1, 2, 80)
    assert torch.allclose(fitted.unit_log_mels[used], expected, atol=1e-4)
    # the griffin_lim vocoder renders these units: 640 samples per unit
    vocoder = GriffinLimVocoder.from_units_extractor(fitted, n_iter=2)
    assert torch.equal(vocoder.unit_log_mels, fitted.unit_log_mels)
    wavs, wav_lengths = vocoder(torch.tensor([[0, 1, 2, 3]]), torch.tensor([4]))
    assert wav_lengths.tolist() == [4 * 640] and torch.isfinite(wavs).all()


def test_empty_cluster_takes_its_nearest_fit_vector(tiny_whisper_dir, make_wavs, monkeypatch):
    import taste_toolkit.plugins.units.whisper_kmeans as module

    def far_last_centroid(vectors, num_units, iters, seed):
        mean, std, centroids = real(vectors, num_units, iters, seed)
        centroids[-1] = 1e3  # nothing is assigned to it
        return mean, std, centroids

    real = module.standardized_kmeans
    monkeypatch.setattr(module, "standardized_kmeans", far_last_centroid)
    ext = WhisperKMeansUnits(source=tiny_whisper_dir, num_units=4, kmeans_iters=5)
    ext.fit(fit_data(make_wavs))
    feats, mels = [], []
    for wav in fit_data(make_wavs):  # every fit vector is kept (fit_frames > frames)
        lengths = torch.tensor([wav.numel()])
        feats.append(ext.cluster_features(wav.unsqueeze(0), lengths)[0][0])
        mels.append(ext.features(wav.unsqueeze(0), lengths)[0][0])
    feats, mels = torch.cat(feats), torch.cat(mels)
    assert (assign((feats - ext.mean) / ext.std, ext.centroids) != 3).all()
    nearest = assign(ext.centroids[3:], (feats - ext.mean) / ext.std)
    assert torch.allclose(ext.unit_log_mels[3].reshape(-1), mels[nearest[0]], atol=1e-5)


def test_bad_inputs(tiny_whisper_dir, fitted, make_wavs):
    with pytest.raises(ConfigError, match="fit the unit extractor first"):
        WhisperKMeansUnits(source=tiny_whisper_dir, num_units=4)(torch.zeros(1, 1000), torch.tensor([1000]))
    with pytest.raises(InputError, match=r"whisper_kmeans expects waveforms \(B, L\)"):
        fitted(torch.zeros(1000), torch.tensor([1000]))
    with pytest.raises(InputError, match="absolute sample counts"):
        fitted(torch.zeros(2, 1000), torch.tensor([1.0, 0.5]))
    with pytest.raises(InputError, match="at most 30 s"):
        fitted(torch.zeros(1, 480001), torch.tensor([480001]))
    with pytest.raises(InputError, match="at least num_units=64"):
        WhisperKMeansUnits(source=tiny_whisper_dir, num_units=64).fit([torch.zeros(16000)])
    with pytest.raises(InputError, match="whisper_kmeans.fit expects non-empty 1-D"):
        fitted.fit([torch.zeros(2, 16000)])
    with pytest.raises(ConfigError, match="layer=5 is outside -1.*0..4"):
        WhisperKMeansUnits(source=tiny_whisper_dir, layer=5)
    with pytest.raises(ConfigError, match="whisper_kmeans fit_frames"):
        WhisperKMeansUnits(source=tiny_whisper_dir, num_units=16, fit_frames=8)
    with pytest.raises(ConfigError, match="whisper_kmeans option stack must be >= 1"):
        WhisperKMeansUnits(source=tiny_whisper_dir, stack=0)
    with pytest.raises(ConfigError, match="init_weights=True"):
        WhisperKMeansUnits(source="builtin:tiny.en", init_weights=False)


def test_thirty_second_window_repeats_the_last_frame(fitted):
    n = 480000  # 751 units = 1502 frames; Whisper gives 1500 for the 30-s window
    wav = 0.1 * torch.randn(1, n, generator=torch.Generator().manual_seed(1))
    feats, lengths = fitted.cluster_features(wav, torch.tensor([n]))
    assert lengths.tolist() == [751] and feats.shape == (1, 751, 128)
    frames = feats.reshape(1502, 64)
    assert torch.equal(frames[-1], frames[-3]) and torch.equal(frames[-2], frames[-3])


def test_standalone_round_trip_stores_local_whisper_weights(fitted, make_wavs, tmp_path):
    state = fitted.state_dict()
    assert any(k.startswith("whisper.encoder.") for k in state)  # local source: weights in the state
    save_components(tmp_path / "tok", {"units": fitted})
    config = json.loads((tmp_path / "tok" / "taste_config.json").read_text())
    options = config["components"]["units"]["options"]
    assert options["source"] == "./" and options["init_weights"] is False
    assert (tmp_path / "tok" / "units" / "config.json").is_file()
    loaded = load_components(tmp_path / "tok")[0]["units"]
    assert isinstance(loaded, WhisperKMeansUnits)
    wavs, lengths = make_wavs([9000, 16000], seed=3)
    assert all(torch.equal(a, b) for a, b in zip(loaded(wavs, lengths), fitted(wavs, lengths)))


def test_unit_cache_round_trip(fitted, tiny_whisper_dir, make_wavs, tmp_path):
    rows = ["ID,duration,wav,spk_id,wrd"]
    wavs = fit_data(make_wavs, seed=5)
    for i, wav in enumerate(wavs):
        path = os.path.join(tmp_path, f"u{i}.wav")
        soundfile.write(path, wav.numpy(), 16000, subtype="FLOAT")
        rows.append(f"u{i},{wav.numel() / 16000},{path},spk,HI")
    manifest = tmp_path / "train.csv"
    manifest.write_text("\n".join(rows) + "\n")
    ext = WhisperKMeansUnits(source=tiny_whisper_dir, num_units=8, kmeans_iters=10)
    paths = prepare_units(ext, {"train": str(manifest)}, str(tmp_path / "cache"), batch_size=3)
    units = load_units(paths["train"])
    rebuilt = load_fitted_extractor(str(tmp_path / "cache"))
    assert isinstance(rebuilt, WhisperKMeansUnits) and torch.equal(rebuilt.centroids, ext.centroids)
    for i, wav in enumerate(wavs):
        direct, _ = rebuilt(wav.unsqueeze(0), torch.tensor([wav.numel()]))
        assert torch.equal(units[f"u{i}"], direct[0])


@pytest.mark.slow  # ~15-25 s: loads the real builtin Whisper tiny.en twice
def test_builtin_tiny_en(make_wavs, tmp_path):
    ext = build("units", "whisper_kmeans", {"num_units": 8, "kmeans_iters": 5})
    assert ext.options["source"] == "builtin:tiny.en" and ext.whisper_dim == 384
    ext.fit(fit_data(make_wavs))
    assert not any(k.startswith("whisper") for k in ext.state_dict())  # builtin weights are not stored
    ext.to("cpu")  # the encoder held outside the state follows the module
    save_components(tmp_path / "tok", {"units": ext})
    config = json.loads((tmp_path / "tok" / "taste_config.json").read_text())
    assert config["components"]["units"]["options"]["source"] == "builtin:tiny.en"
    assert config["weights_bytes"] < 2_000_000  # k-means state only, no Whisper
    loaded = load_components(tmp_path / "tok")[0]["units"]
    wavs, lengths = make_wavs([9000, 16000], seed=3)
    units, unit_lengths = ext(wavs, lengths)
    assert unit_lengths.tolist() == [15, 26]
    assert all(torch.equal(a, b) for a, b in zip(loaded(wavs, lengths), (units, unit_lengths)))
