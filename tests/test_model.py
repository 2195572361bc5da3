"""Contract tests of the composed TASTE model (encoder -> aggregator -> quantizer -> decoder)."""

import time

import pytest
import torch

from taste_toolkit.errors import ConfigError
from taste_toolkit.interfaces import Encoder
from taste_toolkit.models.tokenizer import TasteModel, broadcast_words_to_tokens
from taste_toolkit.registry import build

VOCAB, UNITS, ENC_DIM, AGG_DIM = 40, 20, 64, 32
AGG = dict(vocab_size=VOCAB, d_model=AGG_DIM, num_layers=1, num_heads=4, ffn_dim=64, max_positions=32,
           value_identity_init=False)
RVQ = dict(num_quantizers=2, codebook_size=16, codebook_dim=8, kmeans_iters=5)
DEC = dict(vocab_size=VOCAB, num_units=UNITS, d_model=32, num_layers=1, num_heads=4, ffn_dim=64, dropout=0.0,
           text_layers=1, speech_layers=1)

# Four fixed synthetic utterances: (audio samples, word_ids of the tokens, number of units).
UTTS = [(8000, [0, 0, 1, 2], 12), (12800, [0, 1, 1, 2, 3, 3], 18), (6400, [0, 1, 2], 9), (11200, [0, 1, 2, 2, 3], 15)]


@pytest.fixture(scope="module")
def encoder(tiny_whisper_dir):
    return build("encoder", "whisper", {"source": tiny_whisper_dir, "value_layer": 2})


def make_model(encoder, seed=0, agg=None, quantizer=None, decoder=None, **kwargs):
    torch.manual_seed(seed)
    agg = agg or build("aggregator", "cross_attention", AGG, key_dim=ENC_DIM, value_dim=ENC_DIM)
    if quantizer is None:
        quantizer = build("quantizer", "rvq", RVQ, input_dim=AGG_DIM)
    decoder = decoder or build("decoder", "unit_transformer", DEC, speech_dim=AGG_DIM)
    return TasteModel(encoder, agg, quantizer, decoder, **kwargs)


def make_batch(make_wavs, utts=UTTS, seed=0):
    """Right-padded text/units with garbage in the padding, plus waveforms."""
    g = torch.Generator().manual_seed(seed)
    n, s = max(len(w) for _, w, _ in utts), max(u for _, _, u in utts)
    tokens = torch.randint(0, VOCAB, (len(utts), n), generator=g)
    word_ids = torch.randint(0, 5, (len(utts), n), generator=g)
    units = torch.randint(0, UNITS, (len(utts), s), generator=g)
    for i, (_, w, _) in enumerate(utts):
        word_ids[i, : len(w)] = torch.tensor(w)
    wavs, wav_lengths = make_wavs([a for a, _, _ in utts], seed=seed)
    return dict(
        tokens=tokens,
        token_lengths=torch.tensor([len(w) for _, w, _ in utts]),
        word_ids=word_ids,
        units=units,
        unit_lengths=torch.tensor([u for _, _, u in utts]),
        wavs=wavs,
        wav_lengths=wav_lengths,
    )


def run(model, b):
    enc = model.encode_audio(b["wavs"], b["wav_lengths"])
    return model(b["tokens"], b["token_lengths"], b["word_ids"], b["units"], b["unit_lengths"], encoder_out=enc)


def test_forward_loss_and_gradients(encoder, make_wavs):
    model = make_model(encoder, quantizer_weight=0.5).train()
    out = run(model, make_batch(make_wavs))
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, out.decoder.loss + 0.5 * out.quantizer.loss)
    assert out.aggregator.level == "word"
    assert out.aggregator.embeddings.shape == (4, 4, AGG_DIM)
    assert out.decoder.logits.shape == (4, 19, UNITS + 1)
    out.loss.backward()
    for name, module in (("aggregator", model.aggregator), ("decoder", model.decoder)):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name
    # The aggregator's first layers get gradient through the quantizer (straight-through).
    assert model.aggregator.layers[0].encoder_attn.v_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.encoder.parameters())


def test_dimension_mismatches_fail_at_construction(encoder):
    with pytest.raises(ConfigError, match="speech_dim"):
        make_model(encoder, decoder=build("decoder", "unit_transformer", DEC, speech_dim=AGG_DIM + 1))
    with pytest.raises(ConfigError, match="input_dim"):
        make_model(encoder, quantizer=build("quantizer", "rvq", RVQ, input_dim=AGG_DIM * 2))
    with pytest.raises(ConfigError, match="key_dim"):
        make_model(encoder, agg=build("aggregator", "cross_attention", AGG, key_dim=48, value_dim=ENC_DIM))
    with pytest.raises(ConfigError, match="value_dim"):
        make_model(encoder, agg=build("aggregator", "cross_attention", AGG, key_dim=ENC_DIM, value_dim=48))
    with pytest.raises(ConfigError, match="no encoder"):
        make_model(None)


class ExplodingEncoder(Encoder):
    """Encoder that must never run (text-only models skip the encoder)."""

    key_dim = value_dim = ENC_DIM
    frame_rate = 50.0

    def forward(self, wavs, wav_lengths):
        raise AssertionError("the encoder was called by a text-only model")


@pytest.mark.parametrize("enc", [None, ExplodingEncoder()], ids=["no-encoder", "exploding-encoder"])
def test_text_only_model_never_touches_the_encoder(enc, make_wavs):
    decoder = build("decoder", "unit_transformer", DEC, speech_dim=0)
    model = make_model(enc, agg=build("aggregator", "none", {}), quantizer=False, decoder=decoder)
    assert not model.needs_audio
    b = make_batch(make_wavs)
    out = run(model, b)  # encode_audio returns None without calling the encoder
    assert model.encode_audio(b["wavs"], b["wav_lengths"]) is None
    assert out.quantizer is None and out.aggregator is None
    torch.testing.assert_close(out.loss, out.decoder.loss)
    assert torch.isfinite(out.loss)
    with pytest.raises(ConfigError, match="speech_dim"):
        make_model(enc, agg=build("aggregator", "none", {}), quantizer=False,
                   decoder=build("decoder", "unit_transformer", DEC, speech_dim=AGG_DIM))


def test_encoder_only_frames_with_concat_fusion(encoder, make_wavs):
    agg = build("aggregator", "frames", {"tap": "values"}, key_dim=ENC_DIM, value_dim=ENC_DIM)
    decoder = build("decoder", "unit_transformer", DEC, speech_dim=ENC_DIM, fusion="concat")
    model = make_model(encoder, agg=agg, quantizer=build("quantizer", "rvq", RVQ, input_dim=ENC_DIM), decoder=decoder)
    model.train()
    b = make_batch(make_wavs)
    out = run(model, b)
    assert out.aggregator.level == "frame"
    assert out.aggregator.lengths.tolist() == [25, 40, 20, 35]
    assert out.quantizer.codes.shape == (4, 40, 2)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.decoder.speech_proj.weight.grad.abs().sum() > 0


def test_broadcast_words_to_tokens():
    x = torch.arange(2 * 3 * 2, dtype=torch.float).view(2, 3, 2)  # (B, W, D)
    word_ids = torch.tensor([[0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 7, 9]])  # row 1 padding: garbage ids
    out = broadcast_words_to_tokens(x, word_ids, torch.tensor([6, 4]))
    assert out.shape == (2, 6, 2)
    expected0 = x[0, [0, 0, 1, 2, 2, 2]]
    expected1 = torch.cat([x[1, [0, 1, 1, 2]], torch.zeros(2, 2)])
    assert torch.equal(out[0], expected0) and torch.equal(out[1], expected1)


def test_model_decoder_sees_word_vectors_per_token(encoder, make_wavs):
    model = make_model(encoder).eval()
    b = make_batch(make_wavs)
    enc = model.encode_audio(b["wavs"], b["wav_lengths"])
    speech, _, _ = model.tokenize(b["tokens"], b["token_lengths"], b["word_ids"], enc)
    dec_speech, dec_lengths = model.speech_for_decoder(speech, b["word_ids"], b["token_lengths"])
    assert torch.equal(dec_lengths, b["token_lengths"])
    # Tokens 0 and 1 of utterance 0 belong to word 0: same vector; token 2 is word 1.
    assert torch.equal(dec_speech[0, 0], speech.embeddings[0, 0])
    assert torch.equal(dec_speech[0, 1], speech.embeddings[0, 0])
    assert torch.equal(dec_speech[0, 2], speech.embeddings[0, 1])
    assert dec_speech[2, 3:].abs().sum() == 0


def test_codes_are_padding_invariant_in_eval(encoder, make_wavs):
    model = make_model(encoder).train()
    b = make_batch(make_wavs)
    run(model, b)  # first training forward: k-means init of the codebooks
    assert model.quantizer.initialised
    model.eval()
    with torch.no_grad():
        enc = model.encode_audio(b["wavs"], b["wav_lengths"])
        batched, _, _ = model.tokenize(b["tokens"], b["token_lengths"], b["word_ids"], enc)
        for i in (0, 2):  # utterance alone vs batched with longer ones
            n, a = int(b["token_lengths"][i]), int(b["wav_lengths"][i])
            enc_i = model.encode_audio(b["wavs"][i : i + 1, :a], b["wav_lengths"][i : i + 1])
            alone, _, _ = model.tokenize(b["tokens"][i : i + 1, :n], b["token_lengths"][i : i + 1],
                                         b["word_ids"][i : i + 1, :n], enc_i)
            m = int(alone.lengths[0])
            assert m == int(batched.lengths[i])
            assert torch.equal(alone.codes[0, :m], batched.codes[i, :m])
            torch.testing.assert_close(alone.embeddings[0, :m], batched.embeddings[i, :m], atol=1e-5, rtol=0)
        assert (batched.codes[2, 3:] == -1).all()
    # The codes are not trivially constant.
    assert batched.codes[..., 0][batched.codes[..., 0] >= 0].unique().numel() > 1


def test_short_training_loop_reduces_loss(encoder, make_wavs):
    model = make_model(encoder, seed=3).train()
    b = make_batch(make_wavs, seed=1)
    with torch.no_grad():  # frozen encoder: its taps are constant, compute them once
        enc = model.encode_audio(b["wavs"], b["wav_lengths"])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    losses, start = [], time.perf_counter()
    for _ in range(80):
        out = model(b["tokens"], b["token_lengths"], b["word_ids"], b["units"], b["unit_lengths"], encoder_out=enc)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    elapsed = time.perf_counter() - start
    initial, final = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    print(f"training loop: loss {initial:.3f} -> {final:.3f} in {elapsed:.1f} s")
    assert all(map(lambda v: v == v, losses))  # no NaN
    assert final < 0.6 * initial


def test_prosody_supervision_adds_its_loss_and_its_gradient_reaches_the_aggregator(encoder, make_wavs):
    from taste_toolkit.training.prosody_supervision import ProsodySupervision

    b = make_batch(make_wavs)
    g = torch.Generator().manual_seed(3)
    targets = torch.randn(4, 4, 4, generator=g)
    mask = torch.zeros(4, 4, 4, dtype=torch.bool)
    for i, (_, w, _) in enumerate(UTTS):
        mask[i, : max(w) + 1] = True
    sup = ProsodySupervision(weight=2.0, speech_dim=AGG_DIM)
    model = make_model(encoder, prosody_supervision=sup).train()
    enc = model.encode_audio(b["wavs"], b["wav_lengths"])
    args = (b["tokens"], b["token_lengths"], b["word_ids"], b["units"], b["unit_lengths"])
    out = model(*args, encoder_out=enc, prosody_targets=(targets, mask))
    assert out.prosody_loss is not None and float(out.prosody_loss) > 0
    torch.testing.assert_close(out.loss, out.decoder.loss + out.quantizer.loss + out.prosody_loss)
    out.prosody_loss.backward()
    assert float(sup.head.weight.grad.abs().sum()) > 0
    # Straight through the RVQ, into the aggregator that made the word vectors.
    assert model.aggregator.layers[0].encoder_attn.v_proj.weight.grad.abs().sum() > 0
    assert model(*args, encoder_out=enc).prosody_loss is None  # no targets: the paper's loss
    assert make_model(encoder, prosody_supervision=ProsodySupervision(0.0, AGG_DIM)).prosody_supervision is None
