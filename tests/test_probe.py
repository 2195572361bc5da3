"""Linear probes on per-word vectors (taste_toolkit.evaluation.probe) on a tiny corpus with known facts."""

import json

import numpy as np
import pytest
import soundfile as sf

from taste_toolkit.api import TasteTokenizer
from taste_toolkit.errors import InputError, MissingResourceError
from taste_toolkit.evaluation.probe import collect, markdown_table, read_metadata, run_probes, text_duration_baseline

SR = 16000
WORDS = ["red", "green", "blue", "white", "black"]


def _corpus(root, split, n, seed):
    """``n`` utterances of 3 words; speaker A speaks at 140 Hz, B at 320 Hz; word lengths vary."""
    rng = np.random.default_rng(seed)
    folder = root / split
    folder.mkdir(parents=True)
    rows = []
    for i in range(n):
        speaker = 100 + i % 2
        f0 = 140.0 if speaker == 100 else 320.0
        words = list(rng.choice(WORDS, 3))
        durations = rng.uniform(0.2, 0.5, 3)
        pieces, starts, t = [], [], 0.0
        for d in durations:
            tt = np.arange(int(d * SR)) / SR
            pieces.append(0.3 * np.sin(2 * np.pi * f0 * tt) * np.hanning(tt.size))
            starts.append(t)
            t += tt.size / SR
        wav = np.concatenate(pieces).astype(np.float32)
        rel = f"{split}/{speaker}/u{i}.wav"
        (root / split / str(speaker)).mkdir(exist_ok=True)
        sf.write(root / rel, wav, SR)
        rows.append({"id": f"u{i}", "speaker": speaker, "audio": rel, "words": words,
                     "prosody": [None, "slow", None], "word_start": starts,
                     "word_end": starts[1:] + [t], "duration": t})
    with open(folder / "metadata.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_corpus")
    return _corpus(root, "train", 16, 0), _corpus(root, "test", 8, 1)


@pytest.fixture(scope="module")
def tokenizer(tiny_taste_model, tiny_whisper_dir, tmp_path_factory):
    model, text_tok = tiny_taste_model(tiny_whisper_dir, [" ".join(WORDS)] * 10, tmp_path_factory.mktemp("sp"))
    return TasteTokenizer(model, text_tok)


def test_features_targets_and_probe_scores(tokenizer, corpus):
    train_dir, test_dir = corpus
    train, test = read_metadata(str(train_dir)), read_metadata(str(test_dir), limit=6)
    assert len(train) == 16 and len(test) == 6
    feats, targets = collect(tokenizer, train, progress=False)
    assert set(feats) == {"tokens", "oracle_keys", "oracle_values", "attended_values"}
    assert feats["tokens"].shape == (48, tokenizer.model.aggregator.output_dim)
    assert feats["oracle_keys"].shape[0] == feats["oracle_values"].shape[0] == 48
    assert targets["prosody"].tolist()[:3] == ["none", "slow", "none"]
    assert targets["speaker"].tolist()[:4] == ["100", "100", "100", "101"]  # one row per word
    res = run_probes((feats, targets), collect(tokenizer, test, progress=False))
    # The encoder's taps inside the true word spans tell the 140 Hz voice from the 320 Hz one.
    assert res["oracle_values"]["speaker_accuracy"] == 1.0
    assert res["baselines"]["speaker_chance"] == 0.5 and res["baselines"]["prosody_chance"] == 0.5
    assert res["words"] == {"train": 48, "test": 18}
    table = markdown_table({"tiny": res})
    assert table.count("| tiny |") == 4 and "chance / text only" in table


def test_text_duration_baseline_is_the_word_mean():
    train_w, train_d = ["a", "a", "b"], [1.0, 3.0, 5.0]
    assert text_duration_baseline(train_w, train_d, ["a", "b"], [2.0, 5.0]) == pytest.approx(1.0)
    # An unseen word gets the overall mean: (1 + 3 + 5) / 3 = 3.
    r2 = text_duration_baseline(train_w, train_d, ["c", "b"], [3.0, 4.0])
    assert r2 == pytest.approx(1 - (0 + 1) / ((3 - 3.5) ** 2 + (4 - 3.5) ** 2))


def test_bad_metadata_is_reported(tmp_path):
    with pytest.raises(MissingResourceError, match="metadata.jsonl"):
        read_metadata(str(tmp_path))
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"id": "x", "words": ["a"]}) + "\n")
    with pytest.raises(InputError, match="lacks"):
        read_metadata(str(tmp_path))


def test_prosody_descriptor_probe_reads_the_voices_pitch_and_speaker_normalization_removes_it(corpus, tmp_path):
    """recipes/librispeech/probe_prosody_descriptors.py: speaker A speaks at 140 Hz, B at 320 Hz,
    so the absolute F0 descriptor tells them apart, and z-scoring within each speaker does not."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes", "librispeech",
                        "probe_prosody_descriptors.py")
    spec = importlib.util.spec_from_file_location("probe_prosody_descriptors", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "descriptors.json"
    res = script.main(["--corpus", str(corpus[0].parent), "--train_stride", "1", "--output", str(out)])
    assert json.loads(out.read_text()) == res
    assert res["words"] == {"train": 48, "test": 24} and res["speaker_chance"] == 0.5
    assert res["absolute"]["speaker_accuracy"] == 1.0
    assert res["speaker_normalized"]["speaker_accuracy"] <= 0.75
    for name in ("absolute", "utterance_relative", "speaker_normalized"):
        assert 0.0 <= res[name]["prosody_balanced_accuracy"] <= 1.0


def _capacity_script():
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "recipes", "librispeech", "probe_rvq_capacity.py")
    spec = importlib.util.spec_from_file_location("probe_rvq_capacity", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_rvq_capacity_word_means_leave_each_training_word_out():
    script = _capacity_script()
    x = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [10.0, 10.0]], dtype=np.float32)
    words = np.array(["a", "a", "b", "c"])
    loo = script.word_means(x, words, words, leave_one_out=True)
    overall = x.mean(0)
    # "a" rows see the other "a"; "b" and "c" occur once, so they get the overall mean (no self-leak).
    np.testing.assert_allclose(loo, [[3.0, 0.0], [1.0, 0.0], overall, overall])
    test = script.word_means(x, words, np.array(["a", "zzz"]), leave_one_out=False)
    np.testing.assert_allclose(test, [[2.0, 0.0], overall])


def test_rvq_capacity_whitened_pca_space_keeps_a_quiet_direction():
    """4 loud structureless dimensions hide a quiet binary label: plain PCA codes lose
    it, whitened ones keep it, and the reconstruction is mapped back to the input space."""
    script = _capacity_script()
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 1200)
    x = 0.05 * rng.standard_normal((1200, 12)).astype(np.float32)
    x[:, :4] += 10 * rng.standard_normal((1200, 4))
    x[:, 4] += label - 0.5
    a, b, la, lb = x[:800], x[800:], label[:800], label[800:]

    def accuracy(power):
        _, qb = script.pca_residual_kmeans(a, b, levels=1, codes=16, dims=8, power=power)
        assert qb.shape == b.shape
        return float(((qb[:, 4] > 0).astype(int) == lb).mean())

    plain, whitened = accuracy(0.0), accuracy(1.0)
    assert plain < 0.7 and whitened > 0.9, (plain, whitened)
