"""Tests of taste_toolkit.audio: conversion, layouts, resampling and every error branch."""

import logging
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from taste_toolkit.audio import is_silent, load_audio, prepare_waveform
from taste_toolkit.errors import InputError

RNG = np.random.default_rng(0)


def sine(freq, sr, seconds, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(wav, sr):
    x = wav.numpy() if isinstance(wav, torch.Tensor) else wav
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)]


# ---------------------------------------------------------------- dtypes


def test_int16_scaling():
    x = np.array([-32768, -16384, 0, 16384, 32767], dtype=np.int16)
    out = prepare_waveform(x, 16000)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), [-1.0, -0.5, 0.0, 0.5, 32767 / 32768], atol=1e-7)


def test_int32_and_uint8_scaling():
    x32 = np.array([-(2**31), 2**30, 0], dtype=np.int32)
    np.testing.assert_allclose(prepare_waveform(x32, 16000).numpy(), [-1.0, 0.5, 0.0])
    x8 = np.array([0, 64, 128, 192], dtype=np.uint8)
    np.testing.assert_allclose(prepare_waveform(x8, 16000).numpy(), [-1.0, -0.5, 0.0, 0.5])


def test_float64_numpy_and_torch_give_same_float32():
    x = RNG.uniform(-0.5, 0.5, 1000)
    a = prepare_waveform(x, 16000)
    b = prepare_waveform(torch.from_numpy(x), 16000)
    assert a.dtype == b.dtype == torch.float32
    assert torch.equal(a, b)
    np.testing.assert_allclose(a.numpy(), x, atol=1e-7)


def test_unsupported_dtype():
    with pytest.raises(InputError, match="dtype"):
        prepare_waveform(np.zeros(100, dtype=np.int64), 16000)


# ---------------------------------------------------------------- layouts


def test_stereo_layouts_both_ways():
    left = RNG.uniform(-0.5, 0.5, 2000).astype(np.float32)
    right = RNG.uniform(-0.5, 0.5, 2000).astype(np.float32)
    expected = (left + right) / 2
    s_c = prepare_waveform(np.stack([left, right], axis=1), 16000)  # (S, 2)
    c_s = prepare_waveform(np.stack([left, right], axis=0), 16000)  # (2, S)
    assert s_c.shape == c_s.shape == (2000,)
    np.testing.assert_allclose(s_c.numpy(), expected, atol=1e-7)
    np.testing.assert_allclose(c_s.numpy(), expected, atol=1e-7)


def test_int16_stereo_and_mono_column():
    x = np.array([[32767 // 2, -32768], [0, 16384]], dtype=np.int16).T  # (2 samples, 2 ch)
    # tie (2x2) -> (S, C): average each row
    out = prepare_waveform(x, 16000)
    np.testing.assert_allclose(out.numpy(), [(16383 / 32768 + 0) / 2, (-1 + 0.5) / 2], atol=1e-6)
    col = prepare_waveform(np.ones((50, 1), dtype=np.float32) * 0.1, 16000)
    assert col.shape == (50,)


def test_ambiguous_and_too_many_dims():
    with pytest.raises(InputError, match="channels"):
        prepare_waveform(np.zeros((100, 9), dtype=np.float32), 16000)
    with pytest.raises(InputError, match="3 dimensions"):
        prepare_waveform(np.zeros((2, 2, 100), dtype=np.float32), 16000)
    with pytest.raises(InputError, match="scalar"):
        prepare_waveform(np.float32(0.1) * np.ones(()), 16000)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("rate", [0, -16000, float("nan"), 16000.5])
def test_bad_sample_rate(rate):
    with pytest.raises(InputError, match="sample_rate"):
        prepare_waveform(np.zeros(10, dtype=np.float32), rate)


@pytest.mark.parametrize("shape", [(0,), (0, 2), (2, 0)])
def test_empty(shape):
    with pytest.raises(InputError, match="empty"):
        prepare_waveform(np.zeros(shape, dtype=np.float32), 16000)


def test_nan_counted():
    x = sine(440, 16000, 0.1)
    x[[3, 10, 50]] = np.nan
    with pytest.raises(InputError, match=r"3 NaN and 0 inf samples out of 1600.*nan_to_num"):
        prepare_waveform(x, 16000)


def test_inf_counted():
    x = torch.from_numpy(sine(440, 16000, 0.1))
    x[7] = float("inf")
    x[8] = float("-inf")
    with pytest.raises(InputError, match=r"0 NaN and 2 inf"):
        prepare_waveform(x, 16000)


def test_too_long_is_rejected_not_truncated():
    x = np.zeros(16000 * 3, dtype=np.float32) + 0.1
    with pytest.raises(InputError, match=r"3\.00 s long.*limit of 2\.5 s.*Split"):
        prepare_waveform(x, 16000, max_seconds=2.5)
    # exactly at the limit is accepted, whole
    assert prepare_waveform(x, 16000, max_seconds=3.0).shape == (48000,)


# ---------------------------------------------------------------- warnings


def test_clipping_warns_not_raises(caplog):
    x = sine(440, 16000, 0.5, amp=1.5).clip(-1, 1)
    with caplog.at_level(logging.WARNING, logger="taste_toolkit.audio"):
        out = prepare_waveform(x, 16000)
    assert out.shape == (8000,)
    assert any("clipped" in r.message for r in caplog.records)


def test_silence_warns_and_clean_audio_does_not(caplog):
    with caplog.at_level(logging.WARNING, logger="taste_toolkit.audio"):
        prepare_waveform(np.zeros(1600, dtype=np.float32), 16000)
    assert any("silent" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="taste_toolkit.audio"):
        prepare_waveform(sine(440, 16000, 0.1), 16000)
    assert not caplog.records


# ---------------------------------------------------------------- resampling


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resample_to_16k_keeps_length_and_frequency(sr):
    freq, seconds = 1000.0, 1.0
    x = sine(freq, sr, seconds)
    out = prepare_waveform(x, sr, target_sr=16000)
    assert out.shape == (math.ceil(len(x) * 16000 / sr),)
    assert abs(out.numel() - 16000 * seconds) <= 1
    # 1 s at 16 kHz -> 1 Hz FFT bins
    assert abs(peak_frequency(out, 16000) - freq) <= 1.0
    # amplitude preserved away from the edges (resampler has a 0.99 rolloff, 1 kHz is far below)
    assert abs(out[1000:-1000].abs().max().item() - 0.5) < 0.01


def test_same_rate_is_identity():
    x = sine(300, 16000, 0.2)
    np.testing.assert_array_equal(prepare_waveform(x, 16000).numpy(), x)


# ---------------------------------------------------------------- files


def test_load_audio_stereo_int16_wav(tmp_path):
    sr = 44100
    left = sine(500, sr, 0.5, amp=0.4)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, sr, subtype="PCM_16")
    out = load_audio(path)
    assert out.dtype == torch.float32 and out.dim() == 1
    assert out.numel() == math.ceil(len(left) * 16000 / sr)
    assert abs(peak_frequency(out, 16000) - 500) <= 2.0
    # averaged with a silent channel: half the amplitude
    assert abs(out[500:-500].abs().max().item() - 0.2) < 0.01


def test_load_audio_flac_same_rate(tmp_path):
    x = sine(250, 16000, 0.3)
    path = tmp_path / "a.flac"
    sf.write(path, x, 16000, subtype="PCM_24")
    np.testing.assert_allclose(load_audio(str(path)).numpy(), x, atol=1e-6)


def test_load_audio_errors_name_the_path(tmp_path):
    bad = tmp_path / "garbage.wav"
    bad.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(InputError, match=r"garbage\.wav.*Cannot read|Cannot read.*garbage\.wav"):
        load_audio(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(InputError, match=r"empty\.wav.*empty"):
        load_audio(empty)
    long = tmp_path / "long.wav"
    sf.write(long, np.full(32000, 0.1, dtype=np.float32), 16000)
    with pytest.raises(InputError, match=r"long\.wav.*2\.00 s long"):
        load_audio(long, max_seconds=1)


# ---------------------------------------------------------------- is_silent


def test_is_silent():
    assert is_silent(np.zeros(100, dtype=np.float32))
    assert is_silent(np.zeros(0, dtype=np.float32))
    assert not is_silent(sine(440, 16000, 0.1, amp=0.5))
    # sine at amplitude a has RMS a / sqrt(2): -70 dB RMS is silent at -60, not at -80
    quiet = sine(440, 16000, 0.1, amp=math.sqrt(2) * 10 ** (-70 / 20))
    assert is_silent(quiet, threshold_db=-60)
    assert not is_silent(quiet, threshold_db=-80)
    assert not is_silent(np.full(100, 1000, dtype=np.int16))  # about -30 dBFS
    assert is_silent(torch.zeros(2, 50))
