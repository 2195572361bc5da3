"""TasteTokenizer: encode/decode/edit, standalone save/load, and safe loading of hostile folders."""

import functools
import json
import os
import pickle

import numpy as np
import pytest
import torch

from taste_toolkit.api import TasteTokenizer
from taste_toolkit.errors import ConfigError, InputError, MissingResourceError, PluginNotFoundError
from taste_toolkit.pretrained.standalone import CONFIG_FILE, WEIGHTS_FILE
from taste_toolkit.tokens import TasteTokens

SR = 16000
TEXTS = ["the cat sat on the mat", "a dog ran far away", "hello world again"]


def _wav(seconds, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    return (0.3 * torch.sin(2 * torch.pi * (150 + 50 * seed) * t) + 0.02 * torch.randn(t.shape, generator=g)).numpy()


def _make(factory, whisper_dir, tmp_path_factory, text_only=False, seed=0, decoder_name="unit_transformer"):
    model, text_tok = factory(whisper_dir, TEXTS * 5, tmp_path_factory.mktemp("sp"), seed=seed, text_only=text_only,
                              decoder_name=decoder_name)
    return TasteTokenizer(model, text_tok)


@pytest.fixture(scope="module")
def tokenizer(tiny_taste_model, tiny_whisper_dir, tmp_path_factory):
    return _make(tiny_taste_model, tiny_whisper_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def duration_tokenizer(tiny_taste_model, tiny_whisper_dir, tmp_path_factory):
    """With the default recipe's non-autoregressive ``duration_transformer`` decoder."""
    return _make(tiny_taste_model, tiny_whisper_dir, tmp_path_factory, decoder_name="duration_transformer")


@pytest.fixture(scope="module")
def saved(tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "tok"
    tokenizer.save_pretrained(folder)
    return folder


def test_encode_shapes_and_batch_invariance(tokenizer):
    wavs = [_wav(1.0, 0), _wav(2.5, 1)]
    single = [tokenizer.encode(w, SR, t) for w, t in zip(wavs, TEXTS)]
    batch = tokenizer.encode(wavs, SR, TEXTS[:2], return_alignment=True)
    assert len(set(map(tuple, batch[1].codes.tolist()))) > 1  # real codes, not a constant fallback
    for s, b, text in zip(single, batch, TEXTS):
        assert s.level == "word" and s.codes.shape == (len(text.split()), 2)
        assert torch.equal(s.codes, b.codes)
        assert s.text_ids.shape == s.word_ids.shape
        assert b.alignment.shape[0] == b.text_ids.numel()
        torch.testing.assert_close(b.alignment.sum(-1), torch.ones(b.text_ids.numel()))
    assert single[1].duration == pytest.approx(2.5)
    assert single[1].token_rate == pytest.approx(len(TEXTS[1].split()) / 2.5)


def test_save_load_round_trip(tokenizer, saved):
    tokenizer.save_pretrained(saved)
    loaded = TasteTokenizer.from_pretrained(saved)
    assert loaded.fingerprint == tokenizer.fingerprint
    assert loaded.info()["plugins"] == tokenizer.info()["plugins"]
    assert loaded.info()["alignment"] == "text"  # one speech token per word (LM-SPT says "frame")
    # info() reports the level the tokens have (the aggregator's declared output_level)
    assert loaded.info()["speech_token_level"] == loaded.encode(_wav(1.0, 2), SR, TEXTS[0]).level == "word"
    wav = _wav(1.7, 3)
    a, b = tokenizer.encode(wav, SR, TEXTS[0]), loaded.encode(wav, SR, TEXTS[0])
    assert torch.equal(a.codes, b.codes)
    ua, ub = tokenizer.decode_units(a), loaded.decode_units(b)
    assert torch.equal(ua[0], ub[0]) and ua[0].numel() > 0
    config = json.loads((saved / CONFIG_FILE).read_text())
    assert config["components"]["encoder"]["options"]["init_weights"] is False
    assert not any(p.suffix in (".pt", ".bin", ".ckpt") for p in saved.rglob("*"))


def test_resampling_stereo_int_and_bad_inputs(tokenizer):
    wav = _wav(1.0, 2)
    stereo = (np.stack([wav, wav], 1) * 20000).astype(np.int16)  # (S, 2) int16
    import torchaudio

    at_22k = torchaudio.functional.resample(torch.from_numpy(wav).float(), SR, 22050).numpy()
    t1 = tokenizer.encode(stereo, SR, TEXTS[2])
    t2 = tokenizer.encode(at_22k, 22050, TEXTS[2])
    assert t1.codes.shape == t2.codes.shape == (3, 2)
    assert t2.duration == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(InputError, match="Empty transcript"):
        tokenizer.encode(wav, SR, "   ")
    with pytest.raises(InputError):
        tokenizer.encode(np.zeros(SR * 31, dtype=np.float32), SR, "too long")
    bad = wav.copy()
    bad[10] = np.nan
    with pytest.raises(InputError):
        tokenizer.encode(bad, SR, "nan audio")
    with pytest.raises(InputError, match="transcripts"):
        tokenizer.encode([wav, wav], SR, ["one text"])
    with pytest.raises(InputError, match="empty list"):
        tokenizer.decode_units([])


def test_tokens_dict_round_trip_and_foreign_tokens(tokenizer, tiny_taste_model, tiny_whisper_dir, tmp_path_factory):
    tokens = tokenizer.encode(_wav(1.2, 4), SR, TEXTS[1])
    back = TasteTokens.from_dict(json.loads(json.dumps(tokens.to_dict())))
    assert torch.equal(back.codes, tokens.codes) and back.words == tokens.words
    assert torch.equal(tokenizer.decode_units(back)[0], tokenizer.decode_units(tokens)[0])
    other = _make(tiny_taste_model, tiny_whisper_dir, tmp_path_factory, seed=7)
    assert other.fingerprint != tokenizer.fingerprint
    with pytest.raises(InputError, match="another model"):
        other.decode_units(tokens)
    with pytest.raises(InputError, match="Malformed"):
        TasteTokens.from_dict({"text": "x"})


def test_edit_swaps_chosen_words(tokenizer):
    a = tokenizer.encode(_wav(1.5, 5), SR, TEXTS[0], return_embeddings=True)
    b = tokenizer.encode(_wav(2.0, 6), SR, TEXTS[0], return_embeddings=True)
    edited = tokenizer.edit(a, b, ["cat", 4])
    swapped = {1, 4}
    for i in range(len(a.words)):
        src = b if i in swapped else a
        assert torch.equal(edited.codes[i], src.codes[i])
    assert edited.extra["edited_words"] == [1, 4]
    assert tokenizer.decode_units(edited)[0].numel() > 0
    c = tokenizer.encode(_wav(1.0, 7), SR, TEXTS[2])
    with pytest.raises(InputError, match="same transcript"):
        tokenizer.edit(a, c, [0])
    with pytest.raises(InputError, match="outside"):
        tokenizer.edit(a, b, [99])
    with pytest.raises(InputError, match="not in the transcript"):
        tokenizer.edit(a, b, ["zebra"])


def test_text_only_round_trip(tiny_taste_model, tiny_whisper_dir, tmp_path_factory):
    tok = _make(tiny_taste_model, tiny_whisper_dir, tmp_path_factory, text_only=True)
    folder = tmp_path_factory.mktemp("textonly") / "tok"
    tok.save_pretrained(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["components"]["encoder"] is None  # no audio needed, none saved
    loaded = TasteTokenizer.from_pretrained(folder)
    t = loaded.encode(_wav(1.0, 1), SR, TEXTS[1])
    assert t.level == "none" and t.codes is None
    assert torch.equal(tok.decode_units(t)[0], loaded.decode_units(t)[0])


# ---------------------------------------------------------------- hostile folders
def _copy(saved, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(saved, dst)
    return dst


def _edit_config(folder, fn):
    path = folder / CONFIG_FILE
    config = json.loads(path.read_text())
    fn(config)
    path.write_text(json.dumps(config))


def test_refuses_yaml_tags(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    _edit_config(folder, lambda c: c["components"]["decoder"]["options"].update(d_model="!new:os.system ['touch /tmp/pwned']"))
    with pytest.raises(ConfigError, match="hyperpyyaml tag"):
        TasteTokenizer.from_pretrained(folder)
    assert not os.path.exists("/tmp/pwned")


def test_refuses_pickles_and_partial_folders(saved, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch /tmp/pwned_pickle",))

    (pickled / "model.ckpt").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(MissingResourceError, match="pickle"):
        TasteTokenizer.from_pretrained(pickled)
    assert not os.path.exists("/tmp/pwned_pickle")

    truncated = _copy(saved, tmp_path / "t")
    data = (truncated / WEIGHTS_FILE).read_bytes()
    (truncated / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="partial"):
        TasteTokenizer.from_pretrained(truncated)

    missing = _copy(saved, tmp_path / "m")
    (missing / WEIGHTS_FILE).unlink()
    with pytest.raises(MissingResourceError, match="missing"):
        TasteTokenizer.from_pretrained(missing)

    with pytest.raises(MissingResourceError, match="does not exist"):
        TasteTokenizer.from_pretrained(tmp_path / "nowhere")


def test_refuses_unknown_plugins_new_versions_and_bad_json(saved, tmp_path):
    unknown = _copy(saved, tmp_path / "u")
    _edit_config(unknown, lambda c: c["components"]["quantizer"].update(name="evil_quantizer"))
    with pytest.raises(PluginNotFoundError):
        TasteTokenizer.from_pretrained(unknown)

    newer = _copy(saved, tmp_path / "n")
    _edit_config(newer, lambda c: c.update(version=99))
    with pytest.raises(InputError, match="Upgrade"):
        TasteTokenizer.from_pretrained(newer)

    broken = _copy(saved, tmp_path / "b")
    (broken / CONFIG_FILE).write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        TasteTokenizer.from_pretrained(broken)

    tampered = _copy(saved, tmp_path / "w")
    _edit_config(tampered, lambda c: c["metadata"].update(fingerprint="0000"))
    with pytest.raises(InputError, match="inconsistent"):
        TasteTokenizer.from_pretrained(tampered)


def test_decode_reports_which_decodes_hit_the_length_cap(tokenizer, monkeypatch):
    """A decode that stops at max_len_ratio x tokens (no end-of-speech) is marked in the result."""
    tokens = tokenizer.encode(_wav(1.2, 5), SR, TEXTS[0])
    decoder = tokenizer.model.decoder
    real = decoder.generate

    @functools.wraps(real)
    def no_eos(*args, **kwargs):  # the decoder never emits end-of-speech: every decode runs to the cap
        return real(*args, **{**kwargs, "min_len_ratio": kwargs.get("max_len_ratio", 3.0)})

    out = tokenizer.decode([tokens, tokens], max_len_ratio=3.0)
    assert out.capped is not None and len(out.capped) == 2
    assert out.capped == [u.numel() >= 3 * tokens.text_ids.numel() for u in out.units]
    monkeypatch.setattr(decoder, "generate", no_eos)
    capped = tokenizer.decode(tokens, max_len_ratio=3.0)
    assert capped.capped == [True] and capped.units[0].numel() == 3 * tokens.text_ids.numel()


@pytest.mark.parametrize("decoder", ["unit_transformer", "duration_transformer"])
@pytest.mark.parametrize("case", ["silence", "single_word", "thirty_seconds"])
def test_hostile_audio_decodes_to_a_bounded_output(tokenizer, duration_tokenizer, case, decoder):
    """Silence, one word and 30 s of audio: the decode stops by the cap at the latest, and says so."""
    tokenizer = {"unit_transformer": tokenizer, "duration_transformer": duration_tokenizer}[decoder]
    audio, text = {
        "silence": (np.zeros(SR, dtype=np.float32), "the cat"),
        "single_word": (_wav(0.4, 2), "hello"),
        "thirty_seconds": (_wav(30.0, 4), TEXTS[0] + " " + TEXTS[1]),
    }[case]
    tokens = tokenizer.encode(audio, SR, text)
    out = tokenizer.decode(tokens, max_len_ratio=4.0)
    cap = 4 * tokens.text_ids.numel()
    assert 0 < out.units[0].numel() <= cap
    assert out.capped == [out.units[0].numel() >= cap]  # reported in the result, not only logged
