"""Codec baseline plugins (EnCodec, Mimi, SpeechTokenizer) on tiny random-init models saved locally."""

import json
import math
import os

import pytest
import torch

from taste_toolkit import registry
from taste_toolkit.errors import ConfigError, InputError, MissingResourceError


@pytest.fixture(scope="module")
def encodec_dir(tmp_path_factory):
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    config = EncodecConfig(
        num_filters=4, hidden_size=16, codebook_size=32, codebook_dim=16,
        target_bandwidths=[1.5, 3.0], num_lstm_layers=1, sampling_rate=24000,
    )
    folder = tmp_path_factory.mktemp("encodec")
    EncodecModel(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def mimi_dir(tmp_path_factory):
    from transformers import MimiConfig, MimiModel

    torch.manual_seed(0)
    config = MimiConfig(
        hidden_size=32, num_filters=4, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        head_dim=16, intermediate_size=64, codebook_size=64, codebook_dim=16, num_quantizers=8,
        num_semantic_quantizers=1, vector_quantization_hidden_dimension=16, sliding_window=50, upsample_groups=32,
    )
    folder = tmp_path_factory.mktemp("mimi")
    MimiModel(config).save_pretrained(folder)
    return str(folder)


SPEECHTOKENIZER_CONFIG = dict(
    n_filters=4, dimension=16, semantic_dimension=16, strides=[8, 5, 4, 2], lstm_layers=1,
    bidirectional=True, dilation_base=2, residual_kernel_size=3, n_residual_layers=1,
    activation="ELU", sample_rate=16000, n_q=4, codebook_size=32,
)


@pytest.fixture(scope="module")
def speechtokenizer_dir(tmp_path_factory):
    pytest.importorskip("speechtokenizer")
    from speechtokenizer import SpeechTokenizer

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("speechtokenizer")
    with open(folder / "config.json", "w") as f:
        json.dump(SPEECHTOKENIZER_CONFIG, f)
    torch.save(SpeechTokenizer(SPEECHTOKENIZER_CONFIG).state_dict(), folder / "SpeechTokenizer.pt")
    return str(folder)


def _build(name, **options):
    return registry.build("codec", name, options)


def _waves(sample_rate, seconds=(1.0, 0.6)):
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([int(s * sample_rate) for s in seconds])
    wavs = 0.1 * torch.randn(len(seconds), int(lengths.max()), generator=g)
    for i, n in enumerate(lengths):
        wavs[i, n:] = 0
    return wavs, lengths


@pytest.fixture(scope="module")
def codecs(encodec_dir, mimi_dir, request):
    built = {
        "encodec": _build("encodec", model=encodec_dir, bandwidth=1.5),
        "mimi": _build("mimi", model=mimi_dir, num_quantizers=4),
    }
    try:
        built["speechtokenizer"] = _build(
            "speechtokenizer", model_dir=request.getfixturevalue("speechtokenizer_dir"), num_quantizers=2
        )
    except pytest.skip.Exception:
        pass
    return built


@pytest.mark.parametrize("name", ["encodec", "mimi", "speechtokenizer"])
def test_round_trip_shapes_rates_and_code_range(codecs, name):
    if name not in codecs:
        pytest.skip("speechtokenizer package not installed")
    codec = codecs[name]
    wavs, lengths = _waves(codec.sample_rate)
    codes, code_lengths = codec.encode(wavs, lengths)
    assert codes.shape[0] == 2 and codes.shape[2] == codec.num_codebooks
    for n, t in zip(lengths.tolist(), code_lengths.tolist()):
        # one frame per 1/frame_rate s of audio (the codecs round the tail up)
        assert abs(t - n * codec.frame_rate / codec.sample_rate) <= 1
    valid = codes[1, : code_lengths[1]]
    assert valid.min() >= 0 and valid.max() < codec.codebook_size
    assert (codes[1, code_lengths[1]:] == -1).all()  # padding is marked, not a code
    out, out_lengths = codec.decode(codes, code_lengths)
    for n, m in zip(lengths.tolist(), out_lengths.tolist()):
        assert abs(m - n) <= codec.sample_rate / codec.frame_rate  # within one frame of the input
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["encodec", "mimi"])
def test_batched_codes_equal_single_utterance_codes(codecs, name):
    codec = codecs[name]
    wavs, lengths = _waves(codec.sample_rate)
    codes, code_lengths = codec.encode(wavs, lengths)
    alone, alone_lengths = codec.encode(wavs[1:, : lengths[1]], lengths[1:])
    assert alone_lengths[0] == code_lengths[1]
    assert torch.equal(alone[0], codes[1, : code_lengths[1]])


def test_bitrate_follows_configuration(codecs):
    encodec = codecs["encodec"]
    assert encodec.frame_rate == 75
    assert encodec.num_codebooks == 4  # 1.5 kbps / (75 Hz x log2(32) bits)
    assert encodec.bitrate == pytest.approx(1500.0)
    mimi = codecs["mimi"]
    assert mimi.bitrate == pytest.approx(12.5 * 4 * math.log2(64))


def test_missing_and_misconfigured_models_are_clear_errors(tmp_path, encodec_dir, mimi_dir):
    with pytest.raises(MissingResourceError, match="local folder"):
        _build("encodec", model=str(tmp_path))
    with pytest.raises(ConfigError, match="target_bandwidths"):
        _build("encodec", model=encodec_dir, bandwidth=2.0)
    with pytest.raises(ConfigError, match="num_quantizers"):
        _build("mimi", model=mimi_dir, num_quantizers=9)
    with pytest.raises(MissingResourceError):
        _build("speechtokenizer", model_dir=str(tmp_path))


def test_bad_inputs(codecs):
    codec = codecs["mimi"]
    with pytest.raises(InputError, match="empty"):
        codec.encode(torch.zeros(1, 100), torch.tensor([0]))
    with pytest.raises(InputError, match=r"\(B, S\)"):
        codec.encode(torch.zeros(1, 1, 100), torch.tensor([100]))
    with pytest.raises(InputError, match="codes must be"):
        codec.decode(torch.zeros(1, 3, 2, dtype=torch.long), torch.tensor([3]))


def test_speechtokenizer_refuses_pickled_code(tmp_path):
    pytest.importorskip("speechtokenizer")
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "config.json", "w") as f:
        json.dump(SPEECHTOKENIZER_CONFIG, f)
    torch.save({"x": Payload()}, tmp_path / "SpeechTokenizer.pt")
    with pytest.raises(ConfigError, match="Refused"):
        _build("speechtokenizer", model_dir=str(tmp_path))
    assert not os.path.exists(marker)


def test_codec_system_reconstructs_at_its_own_rate_for_the_harness(mimi_dir):
    from taste_toolkit.evaluation.codec_system import CodecSystem
    from taste_toolkit.evaluation.systems import build_system

    system = build_system({"name": "mimi", "type": "codec",
                           "options": {"codec": "mimi", "codec_options": {"model": mimi_dir, "num_quantizers": 4}}})
    assert isinstance(system, CodecSystem)
    info = system.info()
    assert info["alignment"] == "frame" and info["token_rate_hz"] == 12.5
    assert info["bitrate_bps"] == pytest.approx(12.5 * 4 * 6)
    wav = 0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(0)).numpy()  # 1 s at 16 kHz
    out, rate, extras = system.reconstruct(wav, 16000, "any text", "utt1")
    assert rate == 24000 and abs(out.size - 24000) <= 24000 / 12.5
    assert extras["speech_tokens"] == 13 and len(extras["codes"]) == 13 and len(extras["codes"][0]) == 4
    assert extras["bits_per_token"] == pytest.approx(4 * 6)


def test_every_codec_plugin_shares_the_one_base(codecs):
    from taste_toolkit.plugins.codec.base import FrozenCodec

    for name in registry.available("codec"):
        assert issubclass(registry.get("codec", name), FrozenCodec), name
    mimi = codecs["mimi"]
    assert not any(p.requires_grad for p in mimi.model.parameters()) and not mimi.model.training
    wav = 0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(2))
    resampled = mimi.prepare(wav.numpy(), 16000)  # the base resamples to the codec's 24 kHz
    assert isinstance(resampled, torch.Tensor) and resampled.shape == (24000,)
    assert torch.equal(mimi.prepare(resampled, 24000), resampled)
    with pytest.raises(InputError, match=r"one mono waveform"):
        mimi.prepare(torch.zeros(2, 100), 24000)
