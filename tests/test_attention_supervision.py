"""Attention supervision, the attention-width feature, RVQ init from many vectors, stage lists."""

import math

import numpy as np
import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import EncoderOutput
from taste_toolkit.registry import build
from taste_toolkit.training.attention_supervision import AttentionSupervision, word_span_targets
from taste_toolkit.training.staging import STAGE_OVERRIDES, parse_stages, stage_plan

VOCAB, DK, DV, D = 50, 12, 16, 16
TINY = dict(vocab_size=VOCAB, key_dim=DK, value_dim=DV, d_model=D, num_layers=2, num_heads=4, ffn_dim=32,
            max_positions=32)


class FixedSpans:
    """A span finder that returns given (first, last) token spans (the aligner's contract)."""

    def __init__(self, spans):
        self.spans = spans

    def token_spans(self, tokens, token_lengths, word_ids, encoder_out, need_weights=False):
        return self.spans, None


def test_word_span_targets_cover_each_tokens_whole_word_and_refuse_unusable_spans():
    first, last = np.array([0, 3, 6, 9]), np.array([2, 5, 8, 19])
    words = np.array([0, 0, 1, 2])
    mask = word_span_targets((first, last), words, 4, 20, 50.0, 4.0)
    assert mask.shape == (4, 20)
    # Tokens 0 and 1 share word 0: frames 0..5; word 1: 6..8; word 2: 9..19.
    assert mask[0].nonzero()[0].tolist() == list(range(6)) == mask[1].nonzero()[0].tolist()
    assert mask[2].nonzero()[0].tolist() == [6, 7, 8] and mask[3].nonzero()[0].tolist() == list(range(9, 20))
    # A one-word transcript over 20 s of audio (1000 frames at 50 Hz) is not a usable span.
    assert word_span_targets((np.array([0]), np.array([999])), np.array([0]), 1, 1000, 50.0, 4.0) is None
    # Fewer frames than words, no frames, no tokens, no spans.
    assert word_span_targets((first, last), words, 4, 2, 50.0, 4.0) is None
    assert word_span_targets((first, last), words, 0, 20, 50.0, 4.0) is None
    assert word_span_targets(None, words, 4, 20, 50.0, 4.0) is None


def _supervised_aggregator(**options):
    torch.manual_seed(0)
    return build("aggregator", "cross_attention", {**TINY, "supervised_heads": "all", **options})


def test_supervised_heads_return_attention_in_training_and_log_width_measures_the_span():
    agg = _supervised_aggregator(log_width_scale=1.0).train()
    assert agg.output_dim == D + 1
    g = torch.Generator().manual_seed(0)
    enc = EncoderOutput(torch.randn(2, 30, DK, generator=g), torch.randn(2, 30, DV, generator=g),
                        torch.tensor([30, 20]), 50.0)
    tokens = torch.randint(0, VOCAB, (2, 4), generator=g)
    word_ids = torch.tensor([[0, 1, 1, 2], [0, 1, 2, 2]])
    out = agg(tokens, torch.tensor([4, 3]), word_ids, enc)
    assert out.supervised_attention.shape == (2, 8, 4, 30)  # 2 layers x 4 heads, token rows
    torch.testing.assert_close(out.supervised_attention.sum(-1), torch.ones(2, 8, 4))
    assert torch.all(out.supervised_attention[1, :, :, 20:] == 0)  # padded frames get nothing
    # Eval: no supervised attention, same embeddings as any eval call.
    agg.eval()
    assert agg(tokens, torch.tensor([4, 3]), word_ids, enc).supervised_attention is None
    # The width feature is log(exp(entropy) / frame_rate): log seconds of a uniform attention.
    uniform = torch.zeros(1, 2, 1, 30)
    uniform[..., :10] = 0.1
    width = agg._log_width(uniform, 50.0)
    assert math.isclose(float(width), math.log(10 / 50.0), rel_tol=1e-5)
    with pytest.raises(ConfigError, match="supervised_heads"):
        build("aggregator", "cross_attention", {**TINY, "log_width_scale": 1.0})
    with pytest.raises(ConfigError, match="outside"):
        build("aggregator", "cross_attention", {**TINY, "supervised_heads": [[5, 0]]})


def test_attended_values_readout_is_the_value_tap_averaged_by_the_supervised_attention():
    agg = _supervised_aggregator(readout="attended_values", log_width_scale=2.0, word_pooling="none").eval()
    assert agg.output_dim == DV + 1
    g = torch.Generator().manual_seed(3)
    enc = EncoderOutput(torch.randn(1, 25, DK, generator=g), torch.randn(1, 25, DV, generator=g),
                        torch.tensor([25]), 50.0)
    tokens = torch.randint(0, VOCAB, (1, 4), generator=g)
    out = agg(tokens, torch.tensor([4]), torch.tensor([[0, 1, 2, 3]]), enc, need_weights=True)
    torch.testing.assert_close(out.embeddings[0, :, :DV], out.attention[0] @ enc.values[0])
    with pytest.raises(ConfigError, match="supervised_heads"):
        build("aggregator", "cross_attention", {**TINY, "readout": "attended_values"})
    with pytest.raises(ConfigError, match="readout"):
        build("aggregator", "cross_attention", {**TINY, "readout": "final"})


def test_attention_loss_pulls_heads_onto_the_word_spans_and_skips_unusable_utterances():
    """Training the aggregator on the loss alone moves its attention mass into each word's span;
    an utterance with a 20 s word is skipped and counted, not crashed on."""
    agg = _supervised_aggregator().train()
    g = torch.Generator().manual_seed(1)
    t = 40
    keys = torch.randn(2, 1000, DK, generator=g)
    # Like Whisper's keys, the frames carry where they are: 3 regions, one per word.
    for w, (a, z) in enumerate([(0, 10), (10, 25), (25, 40)]):
        keys[0, a:z, w] += 3.0
    enc = EncoderOutput(keys, torch.randn(2, 1000, DV, generator=g), torch.tensor([t, 1000]), 50.0)
    tokens = torch.randint(0, VOCAB, (2, 3), generator=g)
    word_ids = torch.tensor([[0, 1, 2], [0, 0, 0]])
    spans = [(np.array([0, 10, 25]), np.array([9, 24, 39])), (np.array([0, 0, 0]), np.array([999, 999, 999]))]
    sup = AttentionSupervision(weight=1.0, aligner=FixedSpans(spans))
    assert sup.active
    target = torch.from_numpy(word_span_targets(spans[0], word_ids[0].numpy(), 3, t, 50.0, 4.0))

    @torch.no_grad()
    def mass():
        att = agg(tokens, torch.tensor([3, 3]), word_ids, enc).supervised_attention[0, :, :, :t]
        return float((att * target).sum(-1).mean())

    before = mass()
    opt = torch.optim.Adam(agg.parameters(), lr=1e-2)
    for _ in range(60):
        out = agg(tokens, torch.tensor([3, 3]), word_ids, enc)
        loss = sup(out.supervised_attention, tokens, torch.tensor([3, 3]), word_ids, enc)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = mass()
    assert after > 0.85 and after > before + 0.4, (before, after)
    counts = sup.reset_counts()
    assert counts == {"used": 60, "skipped": 60}
    # A batch with no usable utterance gives a zero loss that still backpropagates.
    only_bad = AttentionSupervision(weight=1.0, aligner=FixedSpans([spans[1]]))
    out = agg(tokens[1:], torch.tensor([3]), word_ids[1:], EncoderOutput(enc.keys[1:], enc.values[1:], enc.lengths[1:], 50.0))
    zero = only_bad(out.supervised_attention, tokens[1:], torch.tensor([3]), word_ids[1:],
                    EncoderOutput(enc.keys[1:], enc.values[1:], enc.lengths[1:], 50.0))
    assert float(zero) == 0.0 and zero.requires_grad
    # weight 0 is the paper: nothing is built, and the model drops the term.
    assert not AttentionSupervision(weight=0.0).active and AttentionSupervision(weight=0.0).spans is None
    with pytest.raises(ConfigError, match="whisper_source"):
        AttentionSupervision(weight=1.0)


def test_rvq_init_codebooks_from_many_vectors_gives_distinct_used_codes():
    q = build("quantizer", "rvq", {"num_quantizers": 2, "codebook_size": 16, "codebook_dim": 4}, input_dim=8)
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(16, 8, generator=g) * 5
    x = centers.repeat(20, 1) + 0.1 * torch.randn(320, 8, generator=g)
    with pytest.raises(InputError, match="rvq_init_batches"):
        q.init_codebooks(x[:10])
    report = q.init_codebooks(x)
    assert q.initialised and report["vectors"] == 320
    book = q.codebooks[0]
    assert torch.cdist(book, book).add(torch.eye(16) * 1e9).min() > 1e-3  # no duplicated codes
    codes = q.encode(x[None], torch.tensor([320]))[0]
    assert len(set(codes[:, 0].tolist())) >= 12 and report["perplexity_l0"] > 10


def test_stage_lists_are_validated_and_planned():
    stages = parse_stages([{"name": "text_only", "epochs": 2}, {"name": "no_vq", "epochs": 3},
                           {"name": "rvq", "epochs": 4, "overrides": {"lr": 5e-4}}])
    assert [s["init"] for s in stages] == ["none", "previous", "previous"]
    plan = stage_plan(stages, "out")
    assert [p[1] for p in plan] == ["out/stages/0_text_only", "out/stages/1_no_vq", "out"]
    assert plan[0][2]["aggregator_name"] == "none" and plan[0][2]["export_folder"] == ""
    assert plan[1][2]["init_from"] == "out/stages/0_text_only/save" and plan[1][2]["quantizer_name"] == "identity"
    assert plan[2][2]["init_from"] == "out/stages/1_no_vq/save" and plan[2][2]["lr"] == 5e-4
    assert plan[2][2]["number_of_epochs"] == 4 and "export_folder" not in plan[2][2]
    assert set(STAGE_OVERRIDES) == {"text_only", "no_vq", "rvq"}
    assert parse_stages([]) == []
    for bad, match in (([{"name": "vq_only", "epochs": 1}], "unknown stage"),
                       ([{"name": "rvq", "epochs": 0}], "epochs"),
                       ([{"name": "no_vq", "epochs": 1, "init": "previous"}], "no stage comes before"),
                       ([{"name": "rvq", "epochs": 1}, {"name": "rvq", "epochs": 1}], "twice"),
                       ([{"name": "rvq", "epochs": 1, "lr": 1}], "unknown keys"),
                       ("rvq", "list")):
        with pytest.raises(ConfigError, match=match):
            parse_stages(bad)


def test_bad_stage_list_fails_before_anything_is_built():
    from taste_toolkit.hparams_loader import load_hparams

    with pytest.raises(ConfigError, match="unknown stage 'warmup'"):
        load_hparams("hparams/taste.yaml", {"stages": [{"name": "warmup", "epochs": 1}]})


def test_rvq_standardize_measures_the_data_and_round_trips_to_the_input_scale():
    """With standardize, a dimension of huge variance no longer takes every code; decode and the
    eval forward agree and come back in the input's scale; the appended dims keep their own scale."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 8, generator=g)
    x[:, 0] *= 1000.0  # a Whisper-like outlier dimension
    opts = {"num_quantizers": 2, "codebook_size": 16, "codebook_dim": 8, "standardize": True, "standardize_dims": 7}
    q = build("quantizer", "rvq", opts, input_dim=8)
    q.init_codebooks(x)
    assert torch.allclose(q.input_std[:7], x[:, :7].std(0)) and float(q.input_std[7]) == 1.0
    q.eval()
    out = q(x[None, :50], torch.tensor([50]))
    torch.testing.assert_close(out.quantized, q.decode(out.codes))
    assert float((out.quantized[0, :, 0] - x[:50, 0]).abs().mean()) < 1000.0  # back in the input scale
    # Without standardization the outlier dimension decides the codes: the other dims are ignored.
    plain = build("quantizer", "rvq", {**opts, "standardize": False}, input_dim=8)
    plain.init_codebooks(x)
    err = lambda m: float(((m(x[None], torch.tensor([600])).quantized[0] - x)[:, 1:7] ** 2).mean())  # noqa: E731
    plain.eval()
    assert err(q) < 0.8 * err(plain)
    with pytest.raises(ConfigError, match="standardize_dims"):
        build("quantizer", "rvq", {**opts, "standardize_dims": 9}, input_dim=8)


def test_rvq_commitment_to_input_false_stops_only_the_commitment_gradient():
    """The commitment loss no longer pulls the input; the decoder's gradient still passes straight through."""
    g = torch.Generator().manual_seed(0)
    data = torch.randn(300, 6, generator=g)
    for to_input in (True, False):
        torch.manual_seed(0)
        q = build("quantizer", "rvq", {"num_quantizers": 2, "codebook_size": 8, "codebook_dim": 6,
                                        "quantize_dropout": False, "commitment_to_input": to_input}, input_dim=6)
        q.init_codebooks(data)
        q.train()
        x = data[None, :40].clone().requires_grad_(True)
        out = q(x, torch.tensor([40]))
        grad_commit = torch.autograd.grad(out.loss, x, retain_graph=True, allow_unused=True)[0]
        (grad_ste,) = torch.autograd.grad(out.quantized.sum(), x)
        assert float(grad_ste.abs().min()) > 0  # the decoder's gradient passes either way
        if to_input:
            assert float(grad_commit.abs().sum()) > 0
        else:
            assert grad_commit is None or float(grad_commit.abs().sum()) == 0.0
            assert torch.equal(grad_ste, torch.ones_like(grad_ste))  # identity straight-through
