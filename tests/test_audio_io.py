"""The one audio reader and resampler (:mod:`taste_toolkit.audio`), and who uses them."""

import numpy as np
import pytest
import soundfile as sf
import torch

from taste_toolkit.audio import load_audio, read_audio, resample
from taste_toolkit.errors import InputError


def test_read_audio_keeps_the_rate_and_averages_channels(tmp_path):
    t = np.arange(2205) / 22050
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * np.ones_like(t)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 22050, subtype="FLOAT")
    wav, sr = read_audio(path)
    assert sr == 22050 and wav.dtype == np.float32 and wav.shape == (2205,)
    np.testing.assert_allclose(wav, (left + right) / 2, atol=1e-6)
    # load_audio is read_audio + validation + resampling
    assert load_audio(path, target_sr=16000).shape == (1600,)


def test_read_audio_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="nope.wav' does not exist"):
        read_audio(tmp_path / "nope.wav")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....not audio")
    with pytest.raises(InputError, match=r"Cannot read audio file .*broken.wav.*Convert it to WAV or FLAC"):
        read_audio(broken)


def test_resample_numpy_matches_the_tensor_path():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4410).astype(np.float64)
    out = resample(x, 44100, 16000)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (1600,)
    expected = resample(torch.from_numpy(x.astype(np.float32)), 44100, 16000).numpy()
    np.testing.assert_array_equal(out, expected)
    same = resample(x, 16000, 16000)
    assert same.dtype == np.float32 and np.array_equal(same, x.astype(np.float32))
    tensor = torch.zeros(10)
    assert resample(tensor, 16000, 16000) is tensor  # tensors at the target rate are returned as is


def test_resample_keeps_a_tone_at_its_frequency_from_numpy():
    t = np.arange(22050) / 22050
    out = resample(np.sin(2 * np.pi * 1000 * t), 22050, 16000)
    assert out.shape == (16000,)
    assert np.argmax(np.abs(np.fft.rfft(out))) == 1000  # 1 Hz bins over one second


def test_harness_and_metric_plugins_use_the_one_resampler_and_reader():
    import taste_toolkit.audio as audio
    import taste_toolkit.evaluation.harness as harness

    assert harness.resample is audio.resample and harness.read_audio is audio.read_audio
