"""LM-SPT building blocks: the downsampler, the mel decoder, the mel vocoder, the Whisper-discrepancy loss."""

import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import EncoderOutput
from taste_toolkit.models.lmspt import whisper_discrepancy, whisper_features
from taste_toolkit.registry import build


def downsampler(stride, tap="keys", dim=12, seed=0):
    torch.manual_seed(seed)
    return build("aggregator", "downsample", {"tap": tap, "stride": stride, "d_model": 16, "num_layers": 1,
                                              "num_heads": 2, "ffn_dim": 32, "dropout": 0.0},
                 key_dim=dim, value_dim=dim + 4).eval()


def frames(lengths, dim=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), dim, generator=g)
    lengths = torch.tensor(lengths)
    x = x * (torch.arange(x.shape[1])[None] < lengths[:, None])[..., None]
    return EncoderOutput(x, torch.cat([x, x[..., :4]], -1), lengths, 50.0)


@pytest.mark.parametrize("stride,rate", [(2, 25.0), (4, 12.5), (8, 6.25)])
def test_downsampler_rates_and_shapes(stride, rate):
    agg = downsampler(stride)
    enc = frames([400, 333, 7])  # 8 s, 6.66 s and 0.14 s at 50 Hz
    out = agg(None, None, None, enc)
    expected = [-(-n // stride) for n in (400, 333, 7)]  # ceil(T / stride)
    assert out.level == agg.output_level == "frame" and out.embeddings.shape == (3, expected[0], 16)
    assert out.lengths.tolist() == expected
    assert agg.frame_rate(50.0) == rate
    assert out.lengths[0] / 8.0 == rate  # tokens per second of the 8-s utterance
    assert (out.embeddings[1, expected[1]:] == 0).all() and (out.embeddings[2, expected[2]:] == 0).all()


@pytest.mark.parametrize("stride", [2, 4, 8])
@pytest.mark.parametrize("tap", ["keys", "values", "both"])
def test_downsampler_padding_invariance(stride, tap):
    agg = downsampler(stride, tap)
    batch = frames([61, 40, 23], seed=1)
    out = agg(None, None, None, batch)
    for i, n in enumerate([61, 40, 23]):
        alone = EncoderOutput(batch.keys[i:i + 1, :n], batch.values[i:i + 1, :n], batch.lengths[i:i + 1], 50.0)
        single = agg(None, None, None, alone)
        m = int(single.lengths[0])
        assert m == int(out.lengths[i])
        torch.testing.assert_close(single.embeddings[0], out.embeddings[i, :m], atol=1e-5, rtol=1e-5)


def test_downsampler_forward_backward():
    agg = downsampler(4).train()
    enc = frames([50, 37])
    out = agg(None, None, None, enc)
    out.embeddings.pow(2).mean().backward()
    grads = [p.grad for p in agg.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert agg.convs[0].weight.grad.abs().sum() > 0


def test_downsampler_rejects_bad_options():
    with pytest.raises(ConfigError, match="power of two"):
        build("aggregator", "downsample", {"stride": 3}, key_dim=8, value_dim=8)
    with pytest.raises(ConfigError, match="tap"):
        build("aggregator", "downsample", {"tap": "text"}, key_dim=8, value_dim=8)


def mel_decoder(frames_per_token=4, seed=0):
    torch.manual_seed(seed)
    return build("decoder", "mel_transformer", {"n_mels": 10, "frames_per_token": frames_per_token, "d_model": 16,
                                                "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "conv_channels": 8,
                                                "dropout": 0.0}, speech_dim=16, vocab_size=99, num_units=7).eval()


def test_mel_decoder_shapes_padding_and_loss():
    dec = mel_decoder()
    assert dec.num_units == 0 and dec.speech_dim == 16  # the unit-decoder options wired by YAML are ignored
    z = torch.randn(2, 6, 16)
    z[1, 3:] = 0
    lengths = torch.tensor([6, 3])
    mels, mel_lengths = dec.generate(None, None, z, lengths)
    assert mels.shape == (2, 24, 10) and mel_lengths.tolist() == [24, 12]
    alone, _ = dec.generate(None, None, z[1:, :3], lengths[1:])
    torch.testing.assert_close(alone[0], mels[1, :12], atol=1e-5, rtol=1e-5)
    assert (mels[1, 12:] == 0).all()
    trimmed, trimmed_lengths = dec.generate(None, None, z, lengths, num_frames=torch.tensor([22, 10]))
    assert trimmed.shape[1] == 22 and trimmed_lengths.tolist() == [22, 10]
    # Teacher pass: the target defines the frame count; a perfect prediction has zero loss.
    target = mels.clone()
    out = dec(None, None, z, lengths, target[:, :23], torch.tensor([23, 12]))
    assert out.logits.shape == (2, 23, 10) and float(out.loss.detach()) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InputError, match="log-mels"):
        dec(None, None, z, lengths, torch.zeros(2, 23, dtype=torch.long), torch.tensor([23, 12]))


def test_whisper_mel_vocoder_lengths_and_errors():
    voc = build("vocoder", "whisper_mel_griffin_lim", {"n_iter": 2})
    mels = torch.full((2, 30, 80), -0.5)
    wavs, lengths = voc(mels, torch.tensor([30, 12]))
    assert voc.sample_rate == 16000 and wavs.shape == (2, 4800) and lengths.tolist() == [4800, 1920]
    alone, _ = voc(mels[1:, :12], torch.tensor([12]))
    torch.testing.assert_close(alone[0], wavs[1, :1920])  # per-utterance inversion, fixed seed
    assert (wavs[1, 1920:] == 0).all() and wavs[0].abs().max() > 0
    with pytest.raises(InputError, match="integer"):
        voc(torch.zeros(1, 5, 80, dtype=torch.long), torch.tensor([5]))
    with pytest.raises(InputError, match="log-mels"):
        voc(torch.zeros(1, 5, 40), torch.tensor([5]))


@pytest.fixture(scope="module")
def tiny_encoder(tiny_whisper_dir):
    torch.manual_seed(0)
    return build("encoder", "whisper", {"source": tiny_whisper_dir, "value_layer": 2})


def test_whisper_discrepancy_zero_for_identical_input(tiny_encoder, make_wavs):
    wavs, wav_lengths = make_wavs([16000, 11000], seed=3)
    enc = tiny_encoder(wavs, wav_lengths)
    mels = torch.zeros(2, 100, 80)
    for i, n in enumerate(wav_lengths.tolist()):
        m = tiny_encoder.log_mel(wavs[i, :n]).T
        mels[i, : m.shape[0]] = m
    mel_lengths = wav_lengths // 160
    # The log-mel path gives exactly the encoder's own features of the audio ...
    feats, lengths = whisper_features(tiny_encoder, mels, mel_lengths)
    torch.testing.assert_close(feats, enc.keys, atol=1e-5, rtol=1e-5)
    assert lengths.tolist() == enc.lengths.tolist()
    loss = whisper_discrepancy(tiny_encoder, mels, mel_lengths, enc.keys, enc.lengths)
    assert float(loss) < 1e-10
    # ... and anything else is penalized (a random-init Whisper is not very sensitive).
    noisy = mels + 0.5 * torch.randn(mels.shape, generator=torch.Generator().manual_seed(0))
    assert float(whisper_discrepancy(tiny_encoder, noisy, mel_lengths, enc.keys, enc.lengths)) > 1e-5
    other = torch.flip(mels, dims=[0])  # the other utterance's log-mel, cut to these lengths
    assert float(whisper_discrepancy(tiny_encoder, other, mel_lengths, enc.keys, enc.lengths)) > 1e-5


def test_whisper_discrepancy_gradient_reaches_decoder_not_whisper(tiny_encoder, make_wavs):
    wavs, wav_lengths = make_wavs([12800, 9600], seed=4)
    enc = tiny_encoder(wavs, wav_lengths)
    dec = build("decoder", "mel_transformer", {"frames_per_token": 8, "d_model": 16, "num_layers": 1,
                                               "num_heads": 2, "ffn_dim": 32, "conv_channels": 8},
                speech_dim=16).train()
    tokens = torch.randn(2, 10, 16)
    token_lengths = torch.tensor([10, 8])
    mels, _ = dec.predict(tokens, token_lengths)
    mel_lengths = wav_lengths // 160
    loss = whisper_discrepancy(tiny_encoder, mels[:, :80], mel_lengths, enc.keys, enc.lengths)
    loss.backward()
    assert float(loss.detach()) > 0
    assert dec.out.weight.grad is not None and dec.out.weight.grad.abs().sum() > 0
    assert dec.inp.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_encoder.parameters())
    assert not any(p.requires_grad for p in tiny_encoder.parameters())
    with pytest.raises(InputError, match="lengths"):
        whisper_discrepancy(tiny_encoder, mels[:, :80], mel_lengths - 40, enc.keys, enc.lengths)
