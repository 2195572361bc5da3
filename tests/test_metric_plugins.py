"""Metric plugins: known answers on synthetic signals, pooling in ``summarize``, skip reasons."""

import json
import math

import numpy as np
import pytest
from scipy.signal import resample_poly

from taste_toolkit.metrics.base import Sample
from taste_toolkit.registry import available, build

SR = 16000
DURATIONS = np.array([0.15, 0.2, 0.1, 0.25, 0.18, 0.12])


def phones(durations, seed=0):
    """Speech-like 'words': each its own F0 and harmonic envelope (fixed per index, any duration)."""
    rng = np.random.default_rng(seed)
    out = []
    for k, d in enumerate(durations):
        amps = 0.1 * rng.uniform(0, 1, 12) ** 2
        f0 = 100 + 15 * k
        t = np.arange(int(round(d * SR))) / SR
        out.append(sum(a * np.sin(2 * np.pi * f0 * (h + 1) * t) for h, a in enumerate(amps)))
    return np.concatenate(out).astype(np.float32)


def words_of(durations):
    ends = np.cumsum(durations)
    return [(f"w{k}", float(e - d), float(e)) for k, (d, e) in enumerate(zip(durations, ends))]


def sample(ref, hyp, utt="u1", extras=None, text="a b c"):
    return Sample(utt, "sys", ref, hyp, SR, text, words_of(DURATIONS), extras or {})


def score(name, s, **options):
    metric = build("metric", name, options)
    try:
        return metric.score(s)
    finally:
        metric.close()


def test_every_builtin_metric_is_registered():
    assert {"token_rate", "unit_accuracy", "codebook_usage", "mcd", "log_mel_distance", "f0", "duration_consistency",
            "duration_ratio", "wer", "speaker_similarity", "dnsmos", "utmos", "decode_stops"} <= set(available("metric"))


def test_decode_stops_counts_capped_decodes_and_out_of_range_lengths():
    from taste_toolkit.errors import ConfigError

    metric = build("metric", "decode_stops", {}, language="en")
    ref = np.zeros(1000, np.float32)
    rows = [metric.score(Sample("a", "taste", ref, np.zeros(n, np.float32), SR, extras=extras))
            for n, extras in [(1000, {"hit_max_len": 0}), (1500, {"hit_max_len": 0}), (3000, {"hit_max_len": 1}),
                              (700, {"hit_max_len": 0})]]
    assert [r["eos_reached"] for r in rows] == [1.0, 1.0, 0.0, 1.0]
    assert [r["duration_in_range"] for r in rows] == [1.0, 0.0, 0.0, 1.0]  # 1.5x and 3x are out, 0.7x is in
    assert metric.summarize(rows) == {"eos_reached": 0.75, "duration_in_range": 0.5}
    source = metric.score(Sample("a", "original", ref, ref, SR))  # no decoder: no EOS to report
    assert math.isnan(source["eos_reached"]) and source["duration_in_range"] == 1.0
    assert math.isnan(metric.summarize([source])["eos_reached"])
    narrow = build("metric", "decode_stops", {"low": 0.9, "high": 1.1}, language="en")
    assert narrow.score(Sample("a", "t", ref, np.zeros(1200, np.float32), SR))["duration_in_range"] == 0.0
    with pytest.raises(ConfigError, match="low <= high"):
        build("metric", "decode_stops", {"low": 1.5, "high": 1.0}, language="en")


def test_identical_signals_mcd_and_log_mel_zero_noise_positive():
    x = phones(DURATIONS)
    assert score("mcd", sample(x, x))["mcd_db"] == pytest.approx(0.0, abs=1e-9)
    assert score("log_mel_distance", sample(x, x))["log_mel_dist"] == pytest.approx(0.0, abs=1e-9)
    noisy = x + 0.05 * np.random.default_rng(0).standard_normal(x.size).astype(np.float32)
    assert score("mcd", sample(x, noisy))["mcd_db"] > 1.0


def test_ten_percent_stretch_gives_duration_ratio_1_1():
    x = phones(DURATIONS)
    stretched = resample_poly(x, 11, 10)
    assert score("duration_ratio", sample(x, stretched))["duration_ratio"] == pytest.approx(1.1, abs=1e-3)
    assert score("duration_ratio", sample(x, x))["duration_ratio"] == 1.0


def test_dtw_duration_consistency_known_answers():
    x = phones(DURATIONS)
    same = score("duration_consistency", sample(x, x), aligner="dtw")
    assert same["consistency"] == 1.0 and same["total"] == len(DURATIONS)
    # Every word 50% longer: differences 50-125 ms, none within 25 ms.
    slow = score("duration_consistency", sample(x, phones(DURATIONS * 1.5)), aligner="dtw")
    assert slow["consistency"] <= 1 / 6
    assert slow["mean_abs_diff_ms"] == pytest.approx(1000 * 0.5 * DURATIONS.mean(), abs=20)
    pairs = json.loads(slow["word_durations"])
    assert [p[0] for p in pairs] == pytest.approx(DURATIONS.tolist(), abs=1e-4)
    # 5% longer: differences 5-12 ms, all within 25 ms up to the 10 ms frame grid.
    near = score("duration_consistency", sample(x, phones(DURATIONS * 1.05)), aligner="dtw")
    assert near["consistency"] >= 5 / 6


def test_duration_consistency_pools_words_and_rejects_bad_options():
    metric = build("metric", "duration_consistency", {"aligner": "dtw"})
    rows = [{"consistent": "3", "total": "4", "consistency": "0.75", "word_durations": "[[0.1, 0.1]]"},
            {"consistent": "0", "total": "6", "consistency": "0", "word_durations": "[[0.1, 0.2]]"}]
    out = metric.summarize(rows)
    assert out["consistency"] == pytest.approx(0.3)  # 3 / 10 words, not the mean of 0.75 and 0
    assert out["mean_abs_diff_ms"] == pytest.approx(50.0)
    from taste_toolkit.errors import ConfigError, InputError

    with pytest.raises(ConfigError, match="aligner"):
        build("metric", "duration_consistency", {"aligner": "mfa"})
    x = phones(DURATIONS)
    no_words = Sample("u", "s", x, x, SR, "a b", None, {})
    with pytest.raises(InputError, match="word times"):
        metric.score(no_words)


def test_decoder_duration_consistency_compares_word_slots_with_no_aligner():
    """aligner=decoder: the decoder's own word spans vs the metadata, as start-to-next-start slots."""
    from taste_toolkit.errors import InputError

    x = np.zeros(int(SR * (DURATIONS.sum() + 0.3)), dtype=np.float32)  # 0.3 s of silence after the last word
    words = words_of(DURATIONS)
    slots = [b - a for a, b in zip([0.0] + [s for _, s, _ in words[1:]], [s for _, s, _ in words[1:]] + [len(x) / SR])]
    exact = [[sum(slots[:k]), sum(slots[: k + 1])] for k in range(len(slots))]
    out = score("duration_consistency", sample(x, x, extras={"word_spans": exact}), aligner="decoder")
    assert out["consistency"] == 1.0 and out["total"] == 6
    assert [p[0] for p in json.loads(out["word_durations"])] == pytest.approx(slots, abs=1e-4)
    assert slots[-1] == pytest.approx(DURATIONS[-1] + 0.3, abs=1e-3)  # the trailing pause is the last word's
    # Word 2 gets 40 ms more and word 3 40 ms less (one 25 Hz unit each): 4 of 6 consistent.
    moved = [list(s) for s in exact]
    moved[2][1] += 0.04
    moved[3][0] += 0.04
    out = score("duration_consistency", sample(x, x, extras={"word_spans": moved}), aligner="decoder")
    assert out["consistent"] == 4 and out["mean_abs_diff_ms"] == pytest.approx(80 / 6, abs=0.1)
    with pytest.raises(InputError, match="word_spans"):
        score("duration_consistency", sample(x, x), aligner="decoder")
    with pytest.raises(InputError, match="5 word spans for 6"):
        score("duration_consistency", sample(x, x, extras={"word_spans": exact[:5]}), aligner="decoder")


def test_f0_identical_is_exact_and_source_track_is_computed_once(monkeypatch):
    from taste_toolkit.metrics import signal

    calls = []
    real = signal.pitch_track
    monkeypatch.setattr(signal, "pitch_track", lambda w, sr: calls.append(1) or real(w, sr))
    metric = build("metric", "f0", {})
    x = phones(DURATIONS)
    out = metric.score(sample(x, x))
    assert out["f0_rmse_hz"] == pytest.approx(0.0, abs=1e-6) and out["f0_corr"] == pytest.approx(1.0)
    metric.score(sample(x, 0.5 * x))  # same utterance, another system: the source track is reused
    assert len(calls) == 3


def test_token_rate_and_bitrate():
    metric = build("metric", "token_rate", {})
    x = np.zeros(SR * 2, dtype=np.float32)
    discrete = [metric.score(sample(x, x, extras={"speech_tokens": 5, "bits_per_token": 32.0})) for _ in range(2)]
    out = metric.summarize(discrete)
    assert out == {"token_rate_hz": pytest.approx(2.5), "bitrate_bps": pytest.approx(80.0)}
    continuous = metric.summarize([metric.score(sample(x, x, extras={"speech_tokens": 5, "bits_per_token": None}))])
    assert continuous == {"token_rate_hz": pytest.approx(2.5), "bitrate_bps": "continuous"}
    original = metric.summarize([metric.score(sample(x, x))])
    assert math.isnan(original["token_rate_hz"]) and math.isnan(original["bitrate_bps"])


def test_unit_accuracy_is_pooled_over_units():
    metric = build("metric", "unit_accuracy", {})
    rows = [metric.score(sample(None, None, extras={"tf_top1": 1, "tf_top5": 9, "tf_total": 10})),
            metric.score(sample(None, None, extras={"tf_top1": 29, "tf_top5": 30, "tf_total": 30})),
            metric.score(sample(None, None))]  # a system without a decoder: NaN, left out
    assert metric.summarize(rows) == {"unit_top1": pytest.approx(0.75), "unit_top5": pytest.approx(39 / 40)}


def test_codebook_usage_and_perplexity():
    metric = build("metric", "codebook_usage", {})
    # Layer 0 uses 4 codes of 8 uniformly; layer 1 one code only (collapsed).
    rows = [metric.score(sample(None, None, extras={"codes": [[c, 5] for c in (0, 1)], "codebook_size": 8})),
            metric.score(sample(None, None, extras={"codes": [[c, 5] for c in (2, 3)], "codebook_size": 8}))]
    out = metric.summarize(rows)
    assert out["per_layer"][0] == {"usage": 0.5, "perplexity": pytest.approx(4.0)}
    assert out["per_layer"][1] == {"usage": 0.125, "perplexity": pytest.approx(1.0)}
    assert out["usage"] == pytest.approx(0.3125) and out["perplexity"] == pytest.approx(2.5)
    assert math.isnan(metric.summarize([metric.score(sample(None, None))])["usage"])
    # Without a reported codebook size, the largest code seen bounds it (codes 0..3 -> 4, all used).
    unsized = metric.summarize([metric.score(sample(None, None, extras={"codes": [[0], [1], [2], [3]]}))])
    assert unsized["usage"] == 1.0 and unsized["perplexity"] == pytest.approx(4.0)


def test_wer_summary_is_corpus_level_and_unavailable_models_give_reasons(tmp_path):
    metric = build("metric", "wer", {})
    rows = [{"ref_text": "the cat sat", "hyp_text": "the cat"}, {"ref_text": "a dog", "hyp_text": "a dog"}]
    assert metric.summarize(rows)["wer"] == pytest.approx(1 / 5)
    assert metric.unavailable() is None
    assert "model.bin" in build("metric", "wer", {"model": str(tmp_path)}).unavailable()
    assert "not in the local cache" in build("metric", "wer", {"model": "no-such/whisper-model"}).unavailable()
    assert "no UTMOS model" in build("metric", "utmos", {}).unavailable()
    assert "could not be loaded" in build("metric", "utmos", {"model": str(tmp_path)}).unavailable()


def test_speaker_similarity_identical_is_one():
    pytest.importorskip("resemblyzer")
    x = phones(np.tile(DURATIONS, 4))
    assert score("speaker_similarity", sample(x, x))["spk_sim"] == pytest.approx(1.0, abs=1e-5)


@pytest.fixture(scope="module")
def espeak_utterance(tmp_path_factory):
    """One espeak-ng utterance of the embedded corpus: ``(waveform, rate)``."""
    import soundfile as sf

    from taste_toolkit.data.synthetic_corpus import generate_corpus

    root = str(tmp_path_factory.mktemp("corpus"))
    generate_corpus(root, seed=5, num_speakers=1, utterances_per_split={"test": 1}, num_workers=0, progress=False)
    item = json.loads(open(f"{root}/test/metadata.jsonl", encoding="utf-8").readline())
    wav, sr = sf.read(f"{root}/{item['audio']}", dtype="float32")
    return wav, sr


def test_dnsmos_scores_are_mos_values_and_noise_scores_lower(espeak_utterance):
    pytest.importorskip("speechmos")
    x, sr = espeak_utterance
    noise = 0.1 * np.random.default_rng(1).standard_normal(x.size).astype(np.float32)
    clean = score("dnsmos", Sample("u", "s", x, x, sr))
    noisy = score("dnsmos", Sample("u", "s", x, x + noise, sr))
    for r in (clean, noisy):
        assert all(1.0 <= r[k] <= 5.0 for k in ("ovrl", "sig", "bak", "p808"))
    assert noisy["bak"] < clean["bak"] - 0.5 and noisy["ovrl"] < clean["ovrl"]


def test_wer_capped_column_keeps_one_asr_loop_from_dominating():
    from taste_toolkit.registry import build

    wer = build("metric", "wer")
    rows = [{"ref_text": "the cat sat down", "hyp_text": "the cat sat down", "utt_wer": 0.0},
            {"ref_text": "red hat", "hyp_text": "the red and the red and the red and", "utt_wer": 4.0},
            {"ref_text": "a b c d", "hyp_text": "a b x d", "utt_wer": 0.25}]
    summary = wer.summarize(rows)
    # Corpus WER: (0 + 8 + 1) / (4 + 2 + 4); capped: (0 + 2 + 1) / 10.
    assert summary["wer"] == pytest.approx(0.9)
    assert summary["wer_capped"] == pytest.approx(0.3)
    assert list(wer.columns) == ["wer", "wer_capped"]
    # The paired bootstrap sees the same weighted means.
    pairs = [wer.paired_values(r) for r in rows]
    for key in ("wer", "wer_capped"):
        num = sum(v * w for v, w in (p[key] for p in pairs))
        assert num / sum(w for _, w in (p[key] for p in pairs)) == pytest.approx(summary[key])
    assert "caps each utterance" in wer.describe()
