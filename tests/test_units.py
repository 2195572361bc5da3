"""Units plugins (mel_kmeans, s3), k-means and the on-disk unit cache."""

import logging
import math
import os
import sys
import types

import pytest
import soundfile
import torch

from taste_toolkit.data.unit_cache import (
    load_audio,
    load_fitted_extractor,
    load_units,
    prepare_units,
)
from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.kmeans import assign, kmeans
from taste_toolkit.plugins.units.mel_kmeans import MelKMeansUnits
from taste_toolkit.plugins.units.s3 import S3Units, whisper_log_mel
from taste_toolkit.registry import available, build

SR = 16000


def sine(freq, seconds=2.0, phase=0.0):
    t = torch.arange(int(seconds * SR)) / SR
    return 0.5 * torch.sin(2 * math.pi * freq * t + phase)


def noise(seconds=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(int(seconds * SR), generator=g)


def sounds():
    return {"low": sine(220.0), "mid": sine(1000.0), "high": sine(3500.0), "noise": noise()}


@pytest.fixture(scope="module")
def fitted():
    ext = MelKMeansUnits(num_units=8, kmeans_iters=20)
    ext.fit(list(sounds().values()))
    return ext


# ---------------------------------------------------------------- k-means


def blobs(seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[0.0, 0, 0], [20, 0, 0], [0, 20, 0], [0, 0, 20]])
    x = torch.cat([m + torch.randn(100, 3, generator=g) for m in means])
    return x, means


def test_kmeans_recovers_separated_clusters():
    x, means = blobs()
    centroids = kmeans(x, 4, seed=0)
    labels = assign(x, centroids)
    for b in range(4):  # each blob is exactly one cluster
        assert labels[b * 100 : (b + 1) * 100].unique().numel() == 1
    assert labels.unique().numel() == 4
    # each true mean has a centroid within 0.5
    assert torch.cdist(means, centroids).min(dim=1).values.max() < 0.5


def test_kmeans_deterministic_and_chunked_assign():
    x, _ = blobs(1)
    a = kmeans(x, 6, iters=10, seed=3)
    b = kmeans(x, 6, iters=10, seed=3)
    assert torch.equal(a, b)
    assert torch.equal(assign(x, a, chunk_size=7), assign(x, a))


def test_kmeans_duplicates_and_errors():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]).repeat(10, 1)
    c = kmeans(x, 5, seed=0)  # fewer distinct points than k: no crash, no NaN
    assert c.shape == (5, 2) and torch.isfinite(c).all()
    assert assign(x, c).unique().numel() == 3
    with pytest.raises(InputError, match="at least k=5"):
        kmeans(torch.zeros(3, 2), 5)


# ---------------------------------------------------------------- mel_kmeans


def test_registered_and_rates():
    assert {"mel_kmeans", "s3"} <= set(available("units"))
    ext = build("units", "mel_kmeans", {"num_units": 16})
    assert ext.needs_fit and ext.num_units == 16 and ext.frame_rate == 25.0
    assert build("units", "mel_kmeans", {"stack": 1}).frame_rate == 50.0


def test_forward_before_fit():
    with pytest.raises(ConfigError, match="fit the unit extractor first"):
        MelKMeansUnits(num_units=4)(torch.zeros(1, 1000), torch.tensor([1000]))


def test_units_distinguish_sounds(fitted):
    interior = {}
    for name, wav in sounds().items():
        units, lengths = fitted(wav.unsqueeze(0), torch.tensor([wav.numel()]))
        interior[name] = set(units[0, 3 : int(lengths[0]) - 3].tolist())
    for name in interior:  # a steady sound uses few of the 8 units
        assert len(interior[name]) <= 2, interior
    names = list(interior)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not interior[a] & interior[b], (a, b, interior)
    # the same sound (other phase, other length, unseen) maps to the same unit
    again, n = fitted(sine(1000.0, 1.3, phase=1.0).unsqueeze(0), torch.tensor([int(1.3 * SR)]))
    assert set(again[0, 3 : int(n[0]) - 3].tolist()) <= interior["mid"]
    other_noise, n = fitted(noise(1.0, seed=11).unsqueeze(0), torch.tensor([SR]))
    assert set(other_noise[0, 3 : int(n[0]) - 3].tolist()) <= interior["noise"]


@pytest.mark.parametrize("n", [1, 319, 640, 641, 16000, 16123])
def test_unit_count_formula(fitted, n):
    units, lengths = fitted(torch.zeros(1, n), torch.tensor([n]))
    assert int(lengths[0]) == n // 640 + 1 == units.shape[1]
    assert fitted.num_frames(n) == n // 640 + 1


def test_padding_invariance(fitted):
    short = torch.cat([sine(440.0, 0.7), noise(0.4, seed=5)])
    long = torch.cat([noise(1.0, seed=6), sine(2000.0, 1.5)])
    alone, n_alone = fitted(short.unsqueeze(0), torch.tensor([short.numel()]))
    batch = torch.full((2, long.numel()), 0.7)  # garbage padding must not matter
    batch[0, : short.numel()] = short
    batch[1] = long
    units, lengths = fitted(batch, torch.tensor([short.numel(), long.numel()]))
    assert int(lengths[0]) == int(n_alone[0])
    assert torch.equal(units[0, : int(lengths[0])], alone[0])
    assert (units[0, int(lengths[0]) :] == 0).all()
    long_alone, _ = fitted(long.unsqueeze(0), torch.tensor([long.numel()]))
    assert torch.equal(units[1], long_alone[0])


def test_bad_lengths(fitted):
    with pytest.raises(InputError, match="absolute sample counts"):
        fitted(torch.zeros(2, 100), torch.tensor([0.5, 1.0]))


def test_state_dict_round_trip_and_log_mels(fitted):
    wav = torch.cat([sine(300.0, 1.0), noise(1.0, seed=2)]).unsqueeze(0)
    n = torch.tensor([wav.shape[1]])
    fresh = MelKMeansUnits(num_units=8, kmeans_iters=20)
    fresh.load_state_dict(fitted.state_dict())
    assert torch.equal(fresh(wav, n)[0], fitted(wav, n)[0])
    assert fitted.unit_log_mels.shape == (8, 2, 80)
    # raw centroids are the mean log-mel of each cluster's vectors
    feats, lengths = fitted.features(sounds()["mid"].unsqueeze(0), torch.tensor([2 * SR]))
    unit = fitted(sounds()["mid"].unsqueeze(0), torch.tensor([2 * SR]))[0][0, 10]
    dist = (feats[0, 10].reshape(2, 80) - fitted.unit_log_mels[unit]).abs().mean()
    assert dist < 1.0  # a steady tone sits close to its own centroid (log units)
    assert fitted.unit_log_mels.min() >= math.log(1e-5) - 1e-4


def test_fit_needs_enough_frames():
    with pytest.raises(InputError, match="at least num_units=64"):
        MelKMeansUnits(num_units=64).fit([sine(200.0, 0.5)])


# ---------------------------------------------------------------- s3


def test_s3_missing_model_messages(tmp_path):
    with pytest.raises(MissingResourceError, match="speech_tokenizer_v1.onnx.*CosyVoice-300M"):
        build("units", "s3")
    with pytest.raises(MissingResourceError, match="not found at"):
        S3Units(model_path=str(tmp_path / "nope.onnx"))


def test_s3_missing_onnxruntime(tmp_path, monkeypatch):
    model = tmp_path / "speech_tokenizer_v1.onnx"
    model.write_bytes(b"not a model")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now fails
    with pytest.raises(MissingResourceError, match="pip install onnxruntime"):
        S3Units(model_path=str(model))


def test_s3_corrupt_model(tmp_path):
    pytest.importorskip("onnxruntime")
    model = tmp_path / "speech_tokenizer_v1.onnx"
    model.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="cannot load"):
        S3Units(model_path=str(model))


def test_s3_plumbing_with_fake_session(tmp_path, monkeypatch):
    """No real weights here: a fake session checks inputs/outputs and the 30 s limit."""
    calls = []

    class FakeSession:
        def __init__(self, path, sess_options=None, providers=None):
            pass

        def get_inputs(self):
            return [types.SimpleNamespace(name="feats"), types.SimpleNamespace(name="feats_length")]

        def run(self, _, feeds):
            calls.append(feeds)
            frames = int(feeds["feats_length"][0])
            return [(torch.arange(frames // 2) % 4096).numpy()[None]]

    fake = types.SimpleNamespace(InferenceSession=FakeSession, SessionOptions=types.SimpleNamespace)
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    model = tmp_path / "speech_tokenizer_v1.onnx"
    model.write_bytes(b"x")
    ext = S3Units(model_path=str(model))
    wavs = torch.zeros(2, 32000)
    wavs[0] = noise(2.0)
    units, lengths = ext(wavs, torch.tensor([32000, 16000]))
    assert lengths.tolist() == [100, 50] and units.shape == (2, 100)
    assert calls[0]["feats"].shape == (1, 128, 200) and calls[1]["feats"].shape == (1, 128, 100)
    assert (units[1, 50:] == 0).all()
    with pytest.raises(InputError, match="at most 30 s"):
        ext(torch.zeros(1, 30 * SR + 1), torch.tensor([30 * SR + 1]))


def test_whisper_log_mel_matches_transformers():
    from transformers import WhisperFeatureExtractor

    wav = noise(1.0, seed=9) * torch.linspace(0, 1, SR)
    ours = whisper_log_mel(wav)
    ref = WhisperFeatureExtractor(feature_size=128)(wav.numpy(), sampling_rate=SR, return_tensors="pt")
    ref = ref["input_features"][0, :, : ours.shape[1]]
    assert ours.shape == (128, 100)
    # edge frames differ (transformers pads the waveform to 30 s); the rest match
    assert torch.allclose(ours[:, 1:-1], ref[:, 1:-1], atol=1e-4)


# ---------------------------------------------------------------- cache


def write_corpus(root, specs, name):
    """specs: {ID: (waveform, sample_rate)} -> SpeechBrain CSV path."""
    lines = ["ID,duration,wav,spk_id,wrd"]
    for utt, (wav, rate) in specs.items():
        path = os.path.join(root, f"{utt}.flac")
        soundfile.write(path, wav.numpy(), rate)
        lines.append(f"{utt},{wav.shape[0] / rate:.3f},{path},spk1,HELLO")
    csv_path = os.path.join(root, f"{name}.csv")
    with open(csv_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return csv_path


@pytest.fixture
def corpus(tmp_path):
    s = sounds()
    train = write_corpus(
        tmp_path, {f"tr{i}": (w, SR) for i, w in enumerate(s.values())}, "train"
    )
    tone = 0.5 * torch.sin(2 * math.pi * 1000.0 * torch.arange(22050) / 22050)
    stereo = torch.stack([tone, 0.5 * tone], dim=1)  # (L, 2), 1 s at 22.05 kHz
    test = write_corpus(
        tmp_path, {"te0": (sine(220.0, 1.5), SR), "te1": (stereo, 22050)}, "test"
    )
    return {"train": train, "test": test}


class Counting(MelKMeansUnits):
    """Counts fits and forward calls (registered under the same name)."""

    registry_name = "mel_kmeans"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.fits = self.forwards = 0

    def fit(self, waveforms):
        self.fits += 1
        return super().fit(waveforms)

    def forward(self, wavs, wav_lengths):
        self.forwards += 1
        return super().forward(wavs, wav_lengths)


def test_load_audio_downmix_resample(corpus, tmp_path):
    wav = load_audio(str(tmp_path / "te1.flac"), SR)
    assert wav.dim() == 1 and wav.numel() == SR
    # downmix = channel mean (0.75 x 0.5 peak); resampling keeps the 1 kHz tone
    assert abs(float(wav[1000:-1000].abs().max()) - 0.375) < 0.01
    spectrum = torch.fft.rfft(wav).abs()
    assert int(spectrum.argmax()) == 1000  # 1 Hz bins for a 1 s signal


def test_cache_reuse_invalidation_corruption(corpus, tmp_path, caplog):
    cache = str(tmp_path / "cache")
    ext = Counting(num_units=8, kmeans_iters=10)
    paths = prepare_units(ext, corpus, cache, batch_size=3)
    assert ext.fits == 1 and ext.forwards == 3  # 4 train in 2 batches + 1 test batch
    units = {split: load_units(p) for split, p in paths.items()}
    assert sorted(units["test"]) == ["te0", "te1"]
    assert units["test"]["te0"].numel() == 24000 // 640 + 1
    assert units["test"]["te1"].numel() == 16000 // 640 + 1
    te0 = load_audio(str(tmp_path / "te0.flac"), SR)  # 16-bit FLAC, not the float sine
    direct, _ = ext(te0.unsqueeze(0), torch.tensor([te0.numel()]))
    assert torch.equal(units["test"]["te0"], direct[0])

    # unchanged inputs: nothing recomputed, a fresh extractor gets the fitted state
    again = Counting(num_units=8, kmeans_iters=10)
    assert prepare_units(again, corpus, cache, batch_size=3) == paths
    assert again.fits == 0 and again.forwards == 0
    assert torch.equal(again.centroids, ext.centroids)

    # the fitted extractor can be rebuilt from the cache dir or a units file
    for source in (cache, paths["test"]):
        rebuilt = load_fitted_extractor(source)
        assert type(rebuilt) is MelKMeansUnits and torch.equal(rebuilt.centroids, ext.centroids)

    # changed test manifest: test recomputed, train reused, no refit
    with open(corpus["test"], "a") as f:
        f.write(f"te2,1.0,{tmp_path / 'te0.flac'},spk1,HI\n")
    changed = Counting(num_units=8, kmeans_iters=10)
    new_paths = prepare_units(changed, corpus, cache, batch_size=3)
    assert changed.fits == 0 and changed.forwards == 1
    assert new_paths["train"] == paths["train"] and new_paths["test"] != paths["test"]
    assert len(load_units(new_paths["test"])) == 3

    # changed options: refit and recompute everything
    other = Counting(num_units=6, kmeans_iters=10)
    other_paths = prepare_units(other, corpus, cache, batch_size=3)
    assert other.fits == 1 and set(other_paths.values()).isdisjoint(new_paths.values())
    assert max(int(u.max()) for u in load_units(other_paths["train"]).values()) < 6

    # corruption: truncated units file and flipped bytes are rebuilt with a warning
    expected = load_units(new_paths["train"])
    with open(new_paths["train"], "r+b") as f:
        f.truncate(os.path.getsize(new_paths["train"]) - 10)
    with open(new_paths["test"], "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\xff\x7f\xff\x7f")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fixed = Counting(num_units=8, kmeans_iters=10)
        assert prepare_units(fixed, corpus, cache, batch_size=3) == new_paths
    assert sum("corrupt" in r.getMessage() for r in caplog.records) == 2
    assert fixed.fits == 0 and fixed.forwards == 3
    rebuilt = load_units(new_paths["train"])
    assert rebuilt.keys() == expected.keys()
    assert all(torch.equal(rebuilt[k], expected[k]) for k in expected)
