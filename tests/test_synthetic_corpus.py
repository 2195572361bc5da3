"""Tests of the espeak-ng synthetic corpus (LibriSpeech layout, metadata, determinism)."""

import json
import os
import re

import numpy as np
import pytest
import soundfile as sf

from taste_toolkit.data import espeak, synthetic_corpus as sc
from taste_toolkit.errors import (
    ConfigError, DataPreparationError, InputError, MissingResourceError)

SPLITS = {"train": 3, "dev": 1, "test": 1}
# LibriSpeech's own naming: <spk>-<chapter>-<utt 4 digits>.flac and <spk>-<chapter>.trans.txt
FLAC_RE = re.compile(r"^(\d+)-(\d+)-(\d{4})\.flac$")
TRANS_RE = re.compile(r"^(\d+)-(\d+)\.trans\.txt$")


def _generate(root, seed=7, workers=0, splits=SPLITS, speakers=2):
    return sc.generate_corpus(root, seed=seed, num_speakers=speakers,
                              utterances_per_split=dict(splits), num_workers=workers,
                              progress=False)


def _metadata(root, split):
    with open(os.path.join(root, split, "metadata.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _all_files(root):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("corpus"))
    return root, _generate(root)


def test_layout_matches_librispeech(corpus):
    root, summary = corpus
    assert summary["total_utterances"] == 2 * sum(SPLITS.values())
    for split, count in SPLITS.items():
        assert summary["splits"][split]["utterances"] == 2 * count
        speakers = sorted(os.listdir(os.path.join(root, split)))
        assert speakers == ["1001", "1002", "metadata.jsonl"]
        for spk in speakers[:2]:
            (chapter,) = os.listdir(os.path.join(root, split, spk))
            folder = os.path.join(root, split, spk, chapter)
            names = sorted(os.listdir(folder))
            flacs = [n for n in names if FLAC_RE.match(n)]
            assert len(flacs) == count and len(names) == count + 1
            for name in flacs:
                assert FLAC_RE.match(name).groups()[:2] == (spk, chapter)
            (trans,) = [n for n in names if TRANS_RE.match(n)]
            assert trans == f"{spk}-{chapter}.trans.txt"
            with open(os.path.join(folder, trans), encoding="utf-8") as f:
                lines = f.read().splitlines()
            ids = [line.split(" ", 1)[0] for line in lines]
            assert ids == [n[: -len(".flac")] for n in flacs]
            for line in lines:
                assert re.fullmatch(r"\d+-\d+-\d{4} [A-Z]+( [A-Z]+){3,15}", line)


def test_audio_is_16k_mono_and_not_silent(corpus):
    root, _ = corpus
    flacs = [p for p in _all_files(root) if p.endswith(".flac")]
    assert len(flacs) == 10
    for path in flacs:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.format, info.subtype) == \
            (16000, 1, "FLAC", "PCM_16")
        audio, _ = sf.read(path)
        assert audio.ndim == 1 and 1.0 < len(audio) / 16000 < 10.0
        assert np.sqrt(np.mean(audio ** 2)) > 0.02 and np.abs(audio).max() > 0.2


def test_metadata_words_and_times(corpus):
    root, _ = corpus
    for split in SPLITS:
        records = _metadata(root, split)
        assert len(records) == 2 * SPLITS[split]
        for rec in records:
            folder = os.path.join(root, split, str(rec["speaker"]), str(rec["chapter"]))
            with open(os.path.join(folder, f"{rec['speaker']}-{rec['chapter']}.trans.txt")) as f:
                transcripts = dict(line.rstrip("\n").split(" ", 1) for line in f)
            assert rec["words"] == transcripts[rec["id"]].split() == rec["text"].split()
            n = len(rec["words"])
            assert 4 <= n <= 16
            assert len(rec["prosody"]) == len(rec["word_start"]) == len(rec["word_end"]) == n
            assert set(rec["prosody"]) <= set(sc.PROSODY_LABELS) | {None}
            start, end = np.array(rec["word_start"]), np.array(rec["word_end"])
            assert start[0] >= 0 and np.all(np.diff(start) > 0)
            assert np.allclose(end[:-1], start[1:]) and start[-1] < end[-1]
            frames = sf.info(os.path.join(root, rec["audio"])).frames
            assert rec["duration"] == pytest.approx(frames / 16000, abs=1e-4)
            assert end[-1] <= rec["duration"] + 1e-6
            # The last word's end is where speech stops: nothing loud after it.
            audio, _ = sf.read(os.path.join(root, rec["audio"]))
            assert np.abs(audio[int(end[-1] * 16000) + 160:]).max(initial=0) < 0.05


def test_same_seed_identical_across_worker_counts_different_seed_differs(corpus, tmp_path):
    root, _ = corpus
    again = _generate(str(tmp_path / "again"), workers=2)  # spawned pool vs in-process
    assert again["total_utterances"] == 10
    for split in SPLITS:
        assert _metadata(root, split) == _metadata(str(tmp_path / "again"), split)
        for rec in _metadata(root, split):
            a, _ = sf.read(os.path.join(root, rec["audio"]), dtype="int16")
            b, _ = sf.read(str(tmp_path / "again" / rec["audio"]), dtype="int16")
            assert np.array_equal(a, b)
    _generate(str(tmp_path / "other"), seed=8)
    texts = [r["text"] for r in _metadata(root, "train")]
    other = [r["text"] for r in _metadata(str(tmp_path / "other"), "train")]
    assert texts != other


def test_second_call_is_a_no_op(corpus):
    root, summary = corpus
    before = {p: os.stat(p).st_mtime_ns for p in _all_files(root)}
    assert _generate(root) == summary
    assert {p: os.stat(p).st_mtime_ns for p in _all_files(root)} == before


def test_changed_options_regenerate_and_remove_old_splits(tmp_path):
    root = str(tmp_path)
    _generate(root, splits={"train": 1}, speakers=1)
    assert os.path.isdir(os.path.join(root, "train"))
    summary = _generate(root, splits={"dev": 1}, speakers=1)
    assert not os.path.exists(os.path.join(root, "train"))
    assert summary["splits"] == {"dev": {"utterances": 1, "hours": pytest.approx(
        _metadata(root, "dev")[0]["duration"] / 3600, abs=1e-4)}}
    assert not os.path.exists(os.path.join(root, sc.PROGRESS_FILE))


def test_foreign_split_folder_and_bad_options_are_rejected(tmp_path):
    os.makedirs(tmp_path / "train")
    with pytest.raises(DataPreparationError, match="not made by this generator"):
        _generate(str(tmp_path), splits={"train": 1}, speakers=1)
    with pytest.raises(ConfigError, match="num_speakers"):
        _generate(str(tmp_path / "x"), speakers=99)
    with pytest.raises(ConfigError, match="Split name"):
        _generate(str(tmp_path / "x"), splits={"../up": 1})


def test_missing_library_raises_with_install_hint(monkeypatch):
    monkeypatch.setattr(espeak, "_LIB_NAMES", ("libespeak-ng-does-not-exist.so.9",))
    monkeypatch.setattr(espeak.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(MissingResourceError, match="apt-get install espeak-ng"):
        espeak._load_library()


def test_slow_label_lengthens_only_that_word():
    words = "the careful gardener carried a heavy basket across the bridge".split()
    k = 5  # "heavy"
    plain = [None] * len(words)
    slow = list(plain)
    slow[k] = "slow"
    _, s0, e0 = sc.synthesize_utterance(words, plain, "en-us+m1", 165, 42)
    audio, s1, e1 = sc.synthesize_utterance(words, slow, "en-us+m1", 165, 42)
    d0, d1 = np.subtract(e0, s0), np.subtract(e1, s1)
    assert d1[k] / d0[k] > 1.4
    # The effect stays on the word: its neighbours keep their duration.
    assert 0.8 < d1[k + 1] / d0[k + 1] < 1.25 and 0.8 < d1[k - 1] / d0[k - 1] < 1.25
    assert audio.dtype == np.int16


def test_synthesis_is_deterministic_and_bad_voice_is_an_error():
    synth = espeak.get_synthesizer()
    a, rate, starts = synth.synthesize("hello there my friend", "en+f3", 160, 55)
    b, _, starts_b = synth.synthesize("hello there my friend", "en+f3", 160, 55)
    assert rate == 22050 and a.dtype == np.int16 and len(starts) == 4
    assert np.array_equal(a, b) and starts == starts_b
    # Breath noise of the +f voices comes from libc's rand(): another library drawing from it
    # in between must not change the audio (it did before synthesis reseeded it).
    import ctypes

    libc = ctypes.CDLL(None)
    for _ in range(100):
        libc.rand()
    c, _, _ = synth.synthesize("hello there my friend", "en+f3", 160, 55)
    assert np.array_equal(a, c)
    with pytest.raises(InputError, match="no voice file named"):
        synth.synthesize("hello", "en-gb+f4", 160, 50)
