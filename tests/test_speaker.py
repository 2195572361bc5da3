"""Speaker plugins: resemblyzer d-vectors on espeak-ng voices, CAM++ error paths and plumbing.

CAM++ has no weights available on this machine, so its tests cover the error
paths (no/missing/invalid file, no onnxruntime) and the feature/batching
plumbing with a stand-in ONNX session; the real model is not exercised.
"""

import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from taste_toolkit.audio import load_audio
from taste_toolkit.errors import MissingResourceError
from taste_toolkit.plugins.speaker import campplus
from taste_toolkit.registry import build

SENTENCE_A = "The quick brown fox jumps over the lazy dog near the river bank."
SENTENCE_B = "Please call Stella and ask her to bring these things with her from the store."


# ---------------------------------------------------------------- resemblyzer


@pytest.fixture(scope="module")
def resemblyzer_speaker():
    try:
        return build("speaker", "resemblyzer")
    except MissingResourceError as exc:
        pytest.skip(f"resemblyzer cannot be used here ({exc})")


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    """``{(voice, sentence): (S,) tensor at 16 kHz}`` from espeak-ng (22.05 kHz output)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("espeak")
    out = {}
    for voice in ("en-us+m1", "en+f3"):
        for key, text in (("a", SENTENCE_A), ("b", SENTENCE_B)):
            path = root / f"{voice.replace('+', '_')}_{key}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
            out[voice, key] = load_audio(path, target_sr=16000)
    return out


def embed(spk, wav):
    return spk(wav[None], torch.tensor([wav.numel()]))[0]


@pytest.fixture(scope="module")
def embeddings(resemblyzer_speaker, voices):
    """Each utterance embedded alone (computed once: ~1 s per utterance on a busy CPU)."""
    return {k: embed(resemblyzer_speaker, v) for k, v in voices.items()}


def test_resemblyzer_same_speaker_closer_than_different(resemblyzer_speaker, embeddings):
    assert resemblyzer_speaker.embedding_dim == 256
    e = embeddings
    for vec in e.values():
        assert vec.shape == (256,) and vec.dtype == torch.float32
        assert abs(vec.norm().item() - 1.0) < 1e-5
    same = [
        float(e["en-us+m1", "a"] @ e["en-us+m1", "b"]),
        float(e["en+f3", "a"] @ e["en+f3", "b"]),
    ]
    different = [
        float(e["en-us+m1", x] @ e["en+f3", y]) for x in ("a", "b") for y in ("a", "b")
    ]
    # measured: same 0.86 / 0.91, different 0.57-0.64
    assert min(same) > max(different) + 0.1, (same, different)


def test_resemblyzer_padding_invariance_and_no_grad(resemblyzer_speaker, voices, embeddings):
    spk = resemblyzer_speaker
    short = voices["en-us+m1", "a"]
    long = voices["en+f3", "b"]
    assert long.numel() > short.numel() + 2000  # 0.18 s of padding
    gen = torch.Generator().manual_seed(3)
    batch = 0.3 * torch.randn(2, long.numel(), generator=gen)  # loud noise in the padding
    batch[0, : short.numel()] = short
    batch[1] = long
    batch.requires_grad_(True)
    out = spk(batch, torch.tensor([short.numel(), long.numel()]))
    assert out.shape == (2, 256)
    assert not out.requires_grad
    torch.testing.assert_close(out[0], embeddings["en-us+m1", "a"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], embeddings["en+f3", "b"], atol=1e-5, rtol=0)
    # the encoder's weights come from the package: nothing to checkpoint
    assert len(spk.state_dict()) == 0


def test_resemblyzer_fallbacks(resemblyzer_speaker, caplog):
    spk = resemblyzer_speaker
    gen = torch.Generator().manual_seed(0)
    wavs = torch.zeros(3, 800)
    wavs[2] = torch.randn(800, generator=gen) * 1e-3  # 50 ms of faint noise: VAD keeps nothing
    with caplog.at_level(logging.WARNING, logger="taste_toolkit.plugins.speaker.resemblyzer"):
        out = spk(wavs, torch.tensor([0, 800, 800]))
    assert torch.equal(out[0], torch.zeros(256))  # no samples
    assert torch.equal(out[1], torch.zeros(256))  # digital silence
    assert abs(out[2].norm().item() - 1.0) < 1e-5  # untrimmed fallback
    messages = " ".join(r.message for r in caplog.records)
    assert "no samples" in messages and "only zero samples" in messages
    assert "untrimmed" in messages


def test_resemblyzer_missing_package(monkeypatch):
    from taste_toolkit.plugins.speaker import resemblyzer as plugin

    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # makes the import fail
    with pytest.raises(MissingResourceError, match=r'pip install resemblyzer "setuptools<81"'):
        plugin.ResemblyzerSpeaker()


# ---------------------------------------------------------------- campplus (no weights here)


def test_campplus_requires_model_path():
    with pytest.raises(MissingResourceError, match=r"model_path \(campplus\.onnx\).*CosyVoice"):
        build("speaker", "campplus")


def test_campplus_missing_file(tmp_path):
    path = str(tmp_path / "campplus.onnx")
    with pytest.raises(MissingResourceError, match=r"campplus\.onnx.*does not exist.*CosyVoice"):
        build("speaker", "campplus", {"model_path": path})


def test_campplus_invalid_file(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    path = tmp_path / "campplus.onnx"
    path.write_bytes(b"not an onnx model")
    with pytest.raises(MissingResourceError, match="cannot load"):
        build("speaker", "campplus", {"model_path": str(path)})


def test_campplus_without_onnxruntime(tmp_path, monkeypatch):
    path = tmp_path / "campplus.onnx"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingResourceError, match="pip install onnxruntime"):
        build("speaker", "campplus", {"model_path": str(path)})


def test_campplus_features_match_cosyvoice_recipe():
    import torchaudio.compliance.kaldi as kaldi

    gen = torch.Generator().manual_seed(1)
    wav = torch.randn(16000, generator=gen) * 0.1
    feat = campplus.campplus_features(wav)
    assert feat.shape == (98, 80)  # (16000 - 400) // 160 + 1 frames
    torch.testing.assert_close(feat.mean(0), torch.zeros(80), atol=1e-4, rtol=0)
    raw = kaldi.fbank(wav[None], num_mel_bins=80, dither=0, sample_frequency=16000)
    torch.testing.assert_close(feat, raw - raw.mean(0, keepdim=True))


class _FakeSession:
    """Stand-in for an onnxruntime session: 'embedding' = per-bin std of the input, tiled."""

    class _Node:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    def __init__(self):
        self.calls = []

    def get_inputs(self):
        return [self._Node("feats", [1, "T", 80])]

    def get_outputs(self):
        return [self._Node("embs", [1, 192])]

    def run(self, _outputs, feeds):
        x = feeds["feats"]
        self.calls.append(x)
        return [np.tile(x[0].std(0), 3)[None, :192].astype(np.float32) + 0.01]


def test_campplus_batching_with_stand_in_session(monkeypatch, caplog):
    fake = _FakeSession()
    monkeypatch.setattr(campplus, "load_session", lambda path: fake)
    spk = build("speaker", "campplus", {"model_path": "stand-in.onnx"})
    assert spk.embedding_dim == 192
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(8000, generator=gen) * 0.1
    b = torch.randn(12000, generator=gen) * 0.1
    batch = torch.full((3, 12000), 0.7)  # padding filled with garbage
    batch[0, :8000] = a
    batch[1] = b
    with caplog.at_level(logging.WARNING, logger="taste_toolkit.plugins.speaker.campplus"):
        out = spk(batch, torch.tensor([8000, 12000, 399]))
    assert out.shape == (3, 192) and out.dtype == torch.float32
    # session fed (1, T, 80) float32 of the valid samples only
    assert fake.calls[0].shape == (1, 48, 80) and fake.calls[0].dtype == np.float32
    assert len(fake.calls) == 2  # the 399-sample utterance never reaches the model
    torch.testing.assert_close(out[0], spk(a[None], torch.tensor([8000]))[0])
    assert torch.equal(out[2], torch.zeros(192))
    assert "at least 400 samples" in caplog.text
    normed = build("speaker", "campplus", {"model_path": "x.onnx", "normalize": True})
    assert abs(normed(b[None], torch.tensor([12000]))[0].norm().item() - 1) < 1e-5
