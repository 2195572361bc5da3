"""The embedded corpus in Spanish, German, French and Mandarin: grammar, voices, metadata, errors."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from taste_toolkit import cli
from taste_toolkit.data import corpus_languages as cl, synthetic_corpus as sc
from taste_toolkit.data.librispeech import prepare_librispeech
from taste_toolkit.errors import ConfigError, DataPreparationError

LANGUAGES = ["es", "de", "fr", "cmn"]
SPLITS = {"train": 2, "test": 1}


def _metadata(root, split):
    with open(os.path.join(root, split, "metadata.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module", params=LANGUAGES)
def corpus(request, tmp_path_factory):
    root = str(tmp_path_factory.mktemp(f"corpus_{request.param}"))
    summary = sc.generate_corpus(root, seed=3, num_speakers=1, utterances_per_split=dict(SPLITS),
                                 num_workers=0, progress=False, prosody_probability=0.5,
                                 language=request.param)
    return request.param, root, summary


def test_metadata_words_times_and_prosody(corpus):
    language, root, summary = corpus
    assert summary["options"]["language"] == language and summary["total_utterances"] == 3
    assert summary["speakers"][0]["voice"].startswith(f"{language}+")
    labels = []
    for split in SPLITS:
        for rec in _metadata(root, split):
            assert rec["voice"] == cl.speaker_voices(language)[0][0]
            assert rec["words"] == rec["text"].split() and 4 <= len(rec["words"]) <= 16
            assert len(rec["prosody"]) == len(rec["word_start"]) == len(rec["word_end"]) == len(rec["words"])
            assert set(rec["prosody"]) <= set(sc.PROSODY_LABELS) | {None}
            labels += rec["prosody"]
            start, end = np.array(rec["word_start"]), np.array(rec["word_end"])
            assert start[0] >= 0 and np.all(np.diff(start) > 0)  # monotonic
            assert np.allclose(end[:-1], start[1:]) and np.all(end > start)
            audio, rate = sf.read(os.path.join(root, rec["audio"]))
            assert rate == 16000 and rec["duration"] == pytest.approx(len(audio) / 16000, abs=1e-4)
            assert end[-1] <= rec["duration"] + 1e-6  # inside the audio
            assert np.sqrt(np.mean(audio ** 2)) > 0.02
            with open(os.path.join(root, split, str(rec["speaker"]), str(rec["chapter"]),
                                   f"{rec['speaker']}-{rec['chapter']}.trans.txt"), encoding="utf-8") as f:
                assert f"{rec['id']} {rec['text']}\n" in f.read()
    assert any(label is not None for label in labels)


def test_librispeech_preparation_reads_it(corpus, tmp_path):
    _, root, _ = corpus
    report = prepare_librispeech(root, str(tmp_path), splits=list(SPLITS))
    assert report["splits"]["train"]["kept"] == 2 and report["splits"]["train"]["n_excluded"] == 0


def test_mandarin_words_are_multi_character_tokens():
    words = [w for _ in range(20) for w in cl.make_sentence_in(np.random.default_rng(_), "cmn")]
    assert any(len(w) > 1 for w in words)
    assert all("\u4e00" <= ch <= "\u9fff" for w in words for ch in w)  # CJK only, no spaces inside


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_word_of_a_few_sentences_gets_a_time(language):
    # One sentence per voice: every voice of the table exists and reports every word.
    rng = np.random.default_rng(11)
    for voice, _, pitch, rate in cl.speaker_voices(language):
        words = cl.make_sentence_in(rng, language)
        _, start, end = sc.synthesize_utterance(words, [None] * len(words), voice, rate, pitch)
        assert len(start) == len(words) and np.all(np.subtract(end, start) > 0.03)


def test_aliases_and_unknown_language_error(tmp_path, capsys):
    assert cl.canonical_language("fr-fr") == "fr" and cl.canonical_language("zh") == "cmn"
    assert cl.available_languages() == ["cmn", "de", "en", "es", "fr"]
    with pytest.raises(ConfigError, match=r"no voice for language 'xx'.*cmn.*de.*en.*es.*fr"):
        sc.generate_corpus(str(tmp_path / "x"), language="xx", progress=False)
    assert not os.path.exists(tmp_path / "x")
    code = cli.main(["make-corpus", "--root", str(tmp_path / "y"), "--language", "tlh", "--no-progress"])
    assert code == 1 and "Available (with aliases): cmn" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="num_speakers must be 1..8 for language 'es'"):
        sc.generate_corpus(str(tmp_path / "z"), language="es", num_speakers=12, progress=False)


def test_english_default_options_and_plan_are_unchanged(tmp_path):
    # The English path gets no 'language' key, so corpora made before stay valid.
    options = dict(version=sc.CORPUS_VERSION, seed=5, num_speakers=1, utterances_per_split={"train": 2},
                   prosody_probability=0.3)
    plan = sc._plan(str(tmp_path), options)
    rng = np.random.default_rng(5)
    assert plan[0]["words"] == " ".join(sc.make_sentence(rng)).upper().split()
    assert sc._plan(str(tmp_path), dict(options, language="en")) == plan


def test_grammar_errors_are_reported():
    with pytest.raises(DataPreparationError, match=r"uses \{B\}, which is not defined"):
        cl.parse_grammar("[sentence]\n{B} x\n")
    with pytest.raises(DataPreparationError, match="no \\[sentence\\]"):
        cl.parse_grammar("[A]\nx\n")
    with pytest.raises(DataPreparationError, match="before any"):
        cl.parse_grammar("x\n[sentence]\ny\n")


@pytest.mark.parametrize("language", LANGUAGES)
def test_corpus_words_are_the_languages_words(language):
    # The metadata's words (and their times) are the words the text tokenizer's splitter finds,
    # so word ids from word times point at the right words (cmn: jieba segmentation).
    pytest.importorskip("jieba") if language == "cmn" else None
    from taste_toolkit.languages import WordSplitter

    splitter = WordSplitter(language)
    for seed in range(300):
        words = cl.make_sentence_in(np.random.default_rng(seed), language)
        assert splitter.split(" ".join(words)) == [w.lower() for w in words], words
