"""One tokenizer front end: TASTE (text-aligned) and LM-SPT (frame-aligned) share ``TokenizerBase``.

Validation, padding, folder handling and vocoding live once, in
:mod:`taste_toolkit.tokenizer_base`; the two tokenizers differ only in alignment.
These tests hold that: the same bad input gets the same error from both.
"""

import numpy as np
import pytest
import torch
from test_lmspt_model import build_tiny_lmspt

from taste_toolkit.api import DecodedSpeech, TasteTokenizer
from taste_toolkit.errors import InputError, MissingResourceError
from taste_toolkit.lmspt import DecodedFrames, LmsptTokenizer, load_tokenizer
from taste_toolkit.registry import build
from taste_toolkit.tokenizer_base import DecodedAudio, TokenizerBase, pad_rows

SR = 16000
TEXTS = ["the cat sat on the mat", "a dog ran far away"]
#: Behaviour that must live in the base only: a subclass redefining it would fork the front end.
SHARED = ["_encode", "_waveforms", "_check_tokens", "_token_batch", "_vocode", "_audio", "_load_pretrained",
          "save_pretrained", "info", "input_sample_rate"]


@pytest.fixture(scope="module")
def taste(tiny_taste_model, tiny_whisper_dir, tmp_path_factory):
    model, text_tok = tiny_taste_model(tiny_whisper_dir, TEXTS * 5, tmp_path_factory.mktemp("sp"))
    voc = build("vocoder", "griffin_lim", {"num_units": 20, "n_mels": 16, "stack": 1, "n_fft": 256,
                                           "hop_length": 64, "n_iter": 2})
    voc.load_table(torch.linspace(-6, 0, 20 * 16).reshape(20, 1, 16))
    return TasteTokenizer(model, text_tok, vocoder=voc)


@pytest.fixture(scope="module")
def lmspt(tiny_whisper_dir):
    model = build_tiny_lmspt(tiny_whisper_dir, seed=1)
    model.train()
    with torch.no_grad():  # one training pass initialises the codebooks (k-means)
        wavs = 0.1 * torch.randn(2, SR, generator=torch.Generator().manual_seed(2))
        lengths = torch.tensor([SR, 12000])
        model(model.encode_audio(wavs, lengths), *model.log_mels(wavs, lengths))
    return LmsptTokenizer(model, build("vocoder", "whisper_mel_griffin_lim", {"n_iter": 2}))


def _error(fn):
    with pytest.raises(Exception) as info:
        fn()
    return type(info.value), str(info.value)


def test_both_tokenizers_share_the_base():
    assert issubclass(TasteTokenizer, TokenizerBase) and issubclass(LmsptTokenizer, TokenizerBase)
    assert (TasteTokenizer.alignment, LmsptTokenizer.alignment) == ("text", "frame")
    for name in SHARED:
        assert name not in vars(TasteTokenizer) and name not in vars(LmsptTokenizer), name
    assert issubclass(DecodedSpeech, DecodedAudio) and issubclass(DecodedFrames, DecodedAudio)
    padded, lengths = pad_rows([torch.ones(2, 3), torch.ones(1, 3)], -1.0)
    assert padded.shape == (2, 2, 3) and lengths.tolist() == [2, 1] and float(padded[1, 1, 0]) == -1.0


def test_same_bad_input_same_error(taste, lmspt):
    """Waveform, rate, length, list and token checks come from the base: same type, same message."""
    wav = 0.1 * np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    nan = wav.copy()
    nan[5] = np.nan
    text = TEXTS[0]
    cases = {
        "NaN sample": lambda tok: tok.encode(nan, SR, text),
        "too long": lambda tok: tok.encode(np.zeros(SR * 31, dtype=np.float32), SR, text),
        "bad rate": lambda tok: tok.encode(wav, -8000, text),
        "empty audio": lambda tok: tok.encode(np.zeros(0, dtype=np.float32), SR, text),
        "3-D array": lambda tok: tok.encode(np.zeros((2, 2, SR), dtype=np.float32), SR, text),
        "rates vs audio": lambda tok: tok.encode([wav, wav], [SR], [text, text]),
        "batch_size": lambda tok: tok.encode([wav], SR, [text], batch_size=0),
        "empty batch": lambda tok: tok.encode([], SR, []),
        "not tokens": lambda tok: tok.decode("codes"),
        "no tokens": lambda tok: tok.decode([]),
    }
    for case, call in cases.items():
        err_taste, err_lmspt = _error(lambda: call(taste)), _error(lambda: call(lmspt))
        assert err_taste == err_lmspt, case
        assert issubclass(err_taste[0], InputError), (case, err_taste)
    assert "NaN" in _error(lambda: lmspt.encode(nan, SR))[1]


def test_shared_decode_vocode_and_folders(taste, lmspt, tmp_path):
    wav = 0.1 * np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    for tok, tokens in ((taste, taste.encode(wav, SR, TEXTS[1])), (lmspt, lmspt.encode(wav, SR))):
        foreign = tokens.__class__(**{**tokens.__dict__, "fingerprint": "0" * 16})
        with pytest.raises(InputError, match="made by another model or config"):
            tok.decode(foreign)
        out = tok.decode(tokens)
        assert isinstance(out, DecodedAudio) and out.sample_rate == tok.vocoder.sample_rate
        assert len(out.seconds) == 1 and out.seconds[0] > 0
        assert tok.vocode([]) == []
        assert tok.info()["tokenizer"] == tok.tokenizer_type and tok.info()["alignment"] == tok.alignment
        tok.save_pretrained(tmp_path / tok.tokenizer_type)
        assert type(load_tokenizer(tmp_path / tok.tokenizer_type)) is type(tok)
    # Each class refuses the other's folder with the same message shape, naming the dispatcher.
    with pytest.raises(InputError, match="holds a 'lmspt' tokenizer, not TASTE; .*load_tokenizer"):
        TasteTokenizer.from_pretrained(tmp_path / "lmspt")
    with pytest.raises(InputError, match="holds a 'taste' tokenizer, not LM-SPT; .*load_tokenizer"):
        LmsptTokenizer.from_pretrained(tmp_path / "taste")
    # Without a vocoder both give units / frames only, and vocode names the plugin to attach.
    for tok, hint in ((TasteTokenizer(taste.model, taste.text_tokenizer), "griffin_lim"),
                      (LmsptTokenizer(lmspt.model), "whisper_mel_griffin_lim")):
        with pytest.raises(MissingResourceError, match=f"has no vocoder; attach one .*{hint}"):
            tok.vocode([torch.zeros(3)])
