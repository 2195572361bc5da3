"""Relative-position stacks (taste_toolkit.nn.rel_pos_*) and top-k sampling."""

import math

import pytest
import torch

from taste_toolkit.errors import ConfigError
from taste_toolkit.nn.rel_pos_encoder import RelPosEncoder
from taste_toolkit.nn.top_k_sampling import pick_top_k


def _espnet_attention(attn, x, key_valid, causal):
    """ESPnet's rel_selfattn with the 2T-1 table and its rel_shift trick (test oracle)."""
    b, t, d = x.shape
    h, dk = attn.h, attn.d_k
    position = torch.arange(t, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * -(math.log(10000.0) / d))
    pos, neg = torch.zeros(t, d), torch.zeros(t, d)
    pos[:, 0::2], pos[:, 1::2] = torch.sin(position * freq), torch.cos(position * freq)
    neg[:, 0::2], neg[:, 1::2] = torch.sin(-position * freq), torch.cos(-position * freq)
    table = torch.cat([pos.flip(0), neg[1:]])  # distances T-1 .. -(T-1)
    q = attn.linear_q(x).view(b, t, h, dk)
    k = attn.linear_k(x).view(b, t, h, dk).transpose(1, 2)
    v = attn.linear_v(x).view(b, t, h, dk).transpose(1, 2)
    p = attn.linear_pos(table).view(1, -1, h, dk).transpose(1, 2)
    ac = torch.matmul((q + attn.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
    bd = torch.matmul((q + attn.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
    padded = torch.cat([bd.new_zeros(*bd.shape[:3], 1), bd], dim=-1).view(b, h, 2 * t, t)
    bd = padded[:, :, 1:].reshape(b, h, t, 2 * t - 1)[..., :t]
    mask = key_valid[:, None, None, :].expand(b, 1, t, t)
    if causal:
        mask = mask & torch.ones(t, t, dtype=torch.bool).tril()
    scores = ((ac + bd) / math.sqrt(dk)).masked_fill(~mask, -float("inf"))
    out = torch.matmul(torch.softmax(scores, -1).masked_fill(~mask, 0.0), v)
    return attn.linear_out(out.transpose(1, 2).reshape(b, t, d))


@pytest.mark.parametrize("chunk", [0, 1])
def test_attention_matches_espnet_rel_shift(chunk):
    torch.manual_seed(0)
    enc = RelPosEncoder(6, 16, 1, 4, 8, static_chunk_size=chunk).eval()
    for p in enc.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 7, 16)
    valid = torch.arange(7)[None] < torch.tensor([[7], [4]])
    attn = enc.encoders[0].self_attn
    allowed = enc.attention_mask(valid, torch.arange(7), torch.arange(7))
    from taste_toolkit.nn.rel_pos_attention import relative_table

    index, table = relative_table(torch.arange(7), torch.arange(7), allowed, 16)
    with torch.no_grad():
        mine, _ = attn(x, allowed, index, table)
        ref = _espnet_attention(attn, x, valid, causal=chunk == 1)
    assert torch.allclose(mine * valid[..., None], ref * valid[..., None], atol=1e-5)


def test_cache_and_left_padding_match_full_sequence():
    torch.manual_seed(1)
    enc = RelPosEncoder(5, 8, 2, 2, 16, static_chunk_size=1, layer_type="transformer",
                        input_layer="linear_legacy").eval()
    x = torch.randn(1, 6, 5)
    with torch.no_grad():
        full, _ = enc(x, torch.ones(1, 6, dtype=torch.bool))
        # Two columns of left padding, prefix of 3 steps, then one step at a time.
        padded = torch.cat([torch.zeros(1, 2, 5), x[:, :3]], dim=1)
        valid = torch.tensor([[False, False, True, True, True]])
        out, cache = enc(padded, valid, use_cache=True)
        steps = [out[:, 2:]]
        for t in range(3, 6):
            y, cache = enc(x[:, t:t + 1], torch.ones(1, 1, dtype=torch.bool), cache=cache)
            steps.append(y)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_chunk_mask_and_config_errors():
    enc = RelPosEncoder(4, 8, 0, 2, 8, static_chunk_size=2)
    allowed = enc.attention_mask(torch.ones(1, 4, dtype=torch.bool), torch.arange(4), torch.arange(4))[0]
    assert allowed.int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    with pytest.raises(ConfigError, match="input_layer"):
        RelPosEncoder(4, 8, 1, 2, 8, input_layer="conv2d")
    with pytest.raises(ConfigError, match="divisible"):
        RelPosEncoder(4, 8, 1, 3, 8)


def test_top_k_bans_eos_inside_the_top_k():
    logits = torch.tensor([[0.0, 5.0, 4.0, 10.0], [0.0, 1.0, 2.0, 10.0]])
    ban = torch.tensor([True, False])
    assert pick_top_k(logits, 1, banned_class=3, ban=ban).tolist() == [1, 3]
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([pick_top_k(logits, 2, 3, ban, generator=g) for _ in range(200)])
    assert set(draws[:, 0].tolist()) == {1}  # top-2 = {EOS, 1}: EOS removed, 1 remains
    assert set(draws[:, 1].tolist()) <= {3, 2}


def test_label_smoothing_loss_is_espnet_kl():
    from taste_toolkit.nn.label_smoothing import label_smoothing_loss

    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    labels[1, 3:] = -100
    valid = labels != -100
    ce = torch.nn.functional.cross_entropy(logits[valid], labels[valid])
    assert torch.allclose(label_smoothing_loss(logits, labels), ce)
    eps = 0.1
    target = torch.full((int(valid.sum()), 7), eps / 6).scatter(1, labels[valid][:, None], 1 - eps)
    kl = (target * (target.log() - torch.log_softmax(logits[valid], -1))).sum()
    assert torch.allclose(label_smoothing_loss(logits, labels, eps), kl / valid.sum())
    assert torch.allclose(label_smoothing_loss(logits, labels, eps, normalize_length=False), kl / 2)
