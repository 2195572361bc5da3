"""``whisper`` text tokenizer options (issue 19): case, first-word space, prompt language and task.

Defaults keep the historical behaviour (lower case, a space before every word,
English prompt); ``taste import-official`` selects the release's options (case
kept, no space before the first word, large-v3 ids, prompt
``[50258, 50259, 50360, 50364]``, EOT 50257).
"""

import os

import pytest
from _official_fixtures import make_fake_whisper_tokenizer

from taste_toolkit.errors import ConfigError
from taste_toolkit.official.importer import RELEASE_TEXT_TOKENIZER_OPTIONS, _whisper_text_tokenizer
from taste_toolkit.registry import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "..", "shared", "fixtures", "official-tiny")
RELEASE_PROMPT = [50258, 50259, 50360, 50364]


@pytest.fixture(scope="module")
def fake_large_v3(tmp_path_factory):
    return make_fake_whisper_tokenizer(tmp_path_factory.mktemp("large_v3"))


def test_defaults_keep_the_historical_behaviour():
    tok = build("text_tokenizer", "whisper", {})
    assert tok.options["lowercase"] and tok.options["first_word_space"] and tok.options["task"] == "transcribe"
    out = tok.encode_words("HELLO World")
    assert tok.decode(out.ids) == " hello world"
    assert tok.prefix_ids == [50257, 50362]  # tiny.en: no language or task token


def test_first_word_without_space_and_case_kept():
    spaced = build("text_tokenizer", "whisper", {"lowercase": False})
    bare = build("text_tokenizer", "whisper", {"lowercase": False, "first_word_space": False})
    a, b = spaced.encode_words("Hello big World"), bare.encode_words("Hello big World")
    assert bare.decode(b.ids) == "Hello big World" and spaced.decode(a.ids) == " Hello big World"
    first = bare._tokenizer.encode("Hello", add_special_tokens=False).ids
    assert b.ids[: len(first)] == first and b.word_ids[: len(first)] == [0] * len(first)
    # later words are encoded alike (" big", " World"): same ids and word ids after the first word
    n_a, n_b = a.word_ids.count(0), b.word_ids.count(0)
    assert a.ids[n_a:] == b.ids[n_b:] and a.word_ids[n_a:] == b.word_ids[n_b:]
    assert b.words == ["Hello", "big", "World"]


def test_release_options_give_the_release_prompt_and_ids(fake_large_v3):
    tok = _whisper_text_tokenizer(fake_large_v3, "/nonexistent", {"vocab_size": 51866})
    assert {k: tok.options[k] for k in RELEASE_TEXT_TOKENIZER_OPTIONS} == RELEASE_TEXT_TOKENIZER_OPTIONS
    assert tok.vocab_size == 51866 and tok.end_of_text_id == 50257 and tok.prefix_ids == RELEASE_PROMPT
    out = tok.encode_words("Hello quantized world")
    assert out.words == ["Hello", "quantized", "world"]
    assert tok.decode(out.ids) == "Hello quantized world"  # no space before the first word, case kept
    space = tok._tokenizer.token_to_id("\u0120")  # byte-level "Ġ" (the fake vocabulary has no merges)
    starts = [i for i, w in enumerate(out.word_ids) if i == 0 or out.word_ids[i - 1] != w]
    assert [out.ids[i] == space for i in starts] == [False, True, True]


def test_translate_task_and_bad_task(fake_large_v3):
    tok = build("text_tokenizer", "whisper", {"source": fake_large_v3, "task": "translate"})
    assert tok.prefix_ids == [50258, 50259, 50359, 50364]
    with pytest.raises(ConfigError, match="task must be one of"):
        build("text_tokenizer", "whisper", {"task": "summarize"})


def test_language_without_a_whisper_token_is_refused(fake_large_v3):
    # The fake vocabulary names only <|en|>; a real large-v3 has <|es|>.
    with pytest.raises(ConfigError, match=r"no <\|es\|> token"):
        build("text_tokenizer", "whisper", {"source": fake_large_v3, "language": "es"})


@pytest.mark.skipif(not os.path.isfile(os.path.join(FIXTURE, "model.safetensors")),
                    reason=f"official-tiny fixture not found at {FIXTURE} (CI has ../shared beside the checkout)")
def test_imported_tokenizer_folder_keeps_the_release_options(tmp_path, fake_large_v3):
    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.official.importer import import_official

    out = tmp_path / "out"
    import_official(FIXTURE, str(out), parts=("tokenizer",), whisper_tokenizer=fake_large_v3)
    text = TasteTokenizer.from_pretrained(str(out / "tokenizer")).text_tokenizer
    assert text.lowercase is False and text.first_word_space is False
    assert text.prefix_ids == RELEASE_PROMPT and text.end_of_text_id == 50257
    assert text.decode(text.encode_words("Hello quantized world").ids) == "Hello quantized world"
