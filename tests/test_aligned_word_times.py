"""Word times by forced alignment with the frozen Whisper aligner (corpora without word times)."""

import json
import os

import numpy as np
import pytest

from taste_toolkit.data import aligned_word_times as awt
from taste_toolkit.data import synthetic_corpus as sc
from taste_toolkit.data.librispeech import prepare_librispeech
from taste_toolkit.data.manifest import read_manifest
from taste_toolkit.data.word_alignment import read_word_starts
from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.registry import build


def test_word_starts_take_each_words_first_token():
    first = np.array([4, 2, 10, 11, 30])  # token 1 starts before token 0 of the same word
    assert awt.word_starts_from_spans(first, [0, 0, 1, 1, 2], 50.0) == [0.04, 0.2, 0.6]


def test_word_starts_never_decrease_and_every_word_needs_a_token():
    assert awt.word_starts_from_spans(np.array([10, 5]), [0, 1], 10.0) == [1.0, 1.0]
    with pytest.raises(InputError, match=r"\[1\]"):
        awt.word_starts_from_spans(np.array([0, 3]), [0, 2], 50.0)


def test_aligner_needs_a_whisper():
    with pytest.raises(ConfigError, match="whisper_source"):
        awt.build_aligner(100, 384, "")


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    """Six real espeak utterances aligned by the real tiny.en, next to the synthesizer's word times."""
    root = str(tmp_path_factory.mktemp("corpus"))
    sc.generate_corpus(root, seed=3, num_speakers=2, utterances_per_split={"test": 3}, progress=False)
    csv = os.path.join(root, "test.csv")
    prepare_librispeech(root, root, splits=["test"])
    encoder = build("encoder", "whisper", source="builtin:tiny.en", mode="unpadded")
    tokenizer = build("text_tokenizer", "whisper", source="builtin:tiny.en")
    cache = os.path.join(root, "word_times")
    out = awt.split_aligned_word_starts({"test": csv}, tokenizer, encoder, "builtin:tiny.en",
                                        tokenizer.vocab_size, cache, progress=False)
    return root, csv, cache, out["test"], read_word_starts(os.path.join(root, "test", "metadata.jsonl"))


def test_aligned_starts_match_the_synthesizers_word_times(aligned):
    _, _, _, starts, truth = aligned
    assert set(starts) == set(truth) and len(starts) == 6
    errors = []
    for uid, ref in truth.items():
        assert len(starts[uid]) == len(ref)  # one start per word of the transcript
        assert np.all(np.diff(starts[uid]) >= 0)
        errors += [abs(a - b) for a, b in zip(starts[uid][1:], ref[1:])]  # the first word absorbs leading silence
    # Median error about 0.08 s measured (2 units at 25 Hz); a broken aligner is off by a word (~0.3 s).
    assert float(np.median(errors)) < 0.15


def test_result_is_cached_and_follows_the_transcripts(aligned, monkeypatch):
    root, csv, cache, starts, _ = aligned
    files = os.listdir(cache)
    assert len(files) == 1 and json.load(open(os.path.join(cache, files[0]))) == starts

    tokenizer = build("text_tokenizer", "whisper", source="builtin:tiny.en")

    def no_encoder(*args, **kwargs):
        raise AssertionError("a cached split must not be re-encoded")

    again = awt.aligned_word_starts(csv, tokenizer, no_encoder, None, cache_dir=cache, cache_name="test",
                                    whisper_source="builtin:tiny.en", progress=False)
    assert again == starts
    # Another transcript tokenizes differently: a new cache entry, not the stale one.
    lines = open(csv).read().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",HELLO THERE"
    edited = os.path.join(root, "edited.csv")
    open(edited, "w").write("\n".join(lines) + "\n")
    encoder = build("encoder", "whisper", source="builtin:tiny.en", mode="unpadded")
    aligner = awt.build_aligner(tokenizer.vocab_size, encoder.key_dim, "builtin:tiny.en")
    out = awt.aligned_word_starts(edited, tokenizer, encoder, aligner, cache_dir=cache, cache_name="test",
                                  whisper_source="builtin:tiny.en", progress=False)
    uid = lines[1].split(",")[0]
    assert len(out[uid]) == 2 and len(os.listdir(cache)) == 2


def test_auto_reads_the_metadata_where_it_covers_the_split_and_aligns_the_rest(aligned, monkeypatch):
    root, csv, _, _, truth = aligned
    lines = open(csv).read().splitlines()
    merged = os.path.join(root, "merged.csv")  # a split merged with utterances the corpus has no times for
    open(merged, "w").write("\n".join(lines + ["real-0001," + lines[1].split(",", 1)[1]]) + "\n")
    calls = []

    def fake_align(manifests, *args, **kwargs):
        calls.append({split: [r["ID"] for r in read_manifest(path)] for split, path in manifests.items()})
        return {split: {i: [0.0] for i in calls[-1][split]} for split in manifests}

    monkeypatch.setattr(awt, "split_aligned_word_starts", fake_align)
    out = awt.split_word_starts_from("auto", {"test": csv, "test+extra": merged}, root, None, None, "w", 1, None)
    # Per utterance: the corpus' times where it has them, the aligner only for the one it lacks.
    assert out["test"] == truth and calls == [{"test+extra": ["real-0001"]}]
    assert out["test+extra"] == {**truth, "real-0001": [0.0]}
    calls.clear()
    out = awt.split_word_starts_from("aligner", {"test": csv}, root, None, None, "w", 1, None)
    assert out["test"] == {i: [0.0] for i in truth} and len(calls) == 1 and set(calls[0]["test"]) == set(truth)
    assert awt.split_word_starts_from("metadata", {"test": csv}, root, None, None, "w", 1, None)["test"] == truth
    with pytest.raises(ConfigError, match="word_times must be one of"):
        awt.split_word_starts_from("mfa", {"test": csv}, root, None, None, "w", 1, None)
