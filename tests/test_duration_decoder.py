"""``duration_transformer``: non-autoregressive units from per-word durations."""

import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.registry import build

SMALL = dict(vocab_size=12, num_units=8, speech_dim=4, d_model=32, num_layers=2, num_heads=2, ffn_dim=64,
             dropout=0.0, word_layers=1)


def _decoder(**options):
    torch.manual_seed(0)
    return build("decoder", "duration_transformer", **{**SMALL, **options})


def _fit(dec, batch, steps):
    """Adam on one batch ``(tokens, tl, speech, sl, units, ul, word_ids, unit_words)`` for ``steps`` steps."""
    tokens, tl, speech, sl, units, ul, word_ids, unit_words = batch
    opt = torch.optim.Adam(dec.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        dec(tokens, tl, speech, sl, units, ul, word_ids=word_ids, unit_word_ids=unit_words).loss.backward()
        opt.step()


def _toy_batch():
    """Two utterances; word k (text token k + 1) is spoken as unit k repeated k + 2 times."""
    words = [[0, 1, 2], [2, 0]]
    tokens = torch.zeros(2, 3, dtype=torch.long)
    word_ids = torch.zeros(2, 3, dtype=torch.long)
    units, unit_words = [], []
    for i, ws in enumerate(words):
        tokens[i, : len(ws)] = torch.tensor(ws) + 1
        word_ids[i, : len(ws)] = torch.arange(len(ws))
        units.append(torch.cat([torch.full((w + 2,), w) for w in ws]))
        unit_words.append(torch.cat([torch.full((w + 2,), j) for j, w in enumerate(ws)]))
    lengths = torch.tensor([len(u) for u in units])
    pad = lambda rows: torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # noqa: E731
    token_lengths = torch.tensor([3, 2])
    speech = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
    return tokens, token_lengths, speech, token_lengths.clone(), pad(units), lengths, word_ids, pad(unit_words)


def test_forward_scores_every_unit_and_backpropagates():
    dec = _decoder()
    tokens, tl, speech, sl, units, ul, word_ids, unit_words = _toy_batch()
    out = dec(tokens, tl, speech, sl, units, ul, word_ids=word_ids, unit_word_ids=unit_words)
    assert out.logits.shape == (2, int(ul.max()), SMALL["num_units"] + 1)
    assert (out.targets[1, int(ul[1]):] == -100).all() and torch.equal(out.targets[0], units[0])
    out.loss.backward()
    assert dec.duration_head.weight.grad.abs().sum() > 0 and dec.head.weight.grad.abs().sum() > 0
    counts = dec.accuracy(out)
    assert counts["total"] == int(ul.sum())


def test_learns_units_and_durations_then_generates_them_greedily():
    dec = _decoder()
    tokens, tl, speech, sl, units, ul, word_ids, unit_words = _toy_batch()
    _fit(dec, (tokens, tl, speech, sl, units, ul, word_ids, unit_words), steps=300)
    out, lengths, starts = dec.generate(tokens, tl, speech, sl, word_ids=word_ids, return_word_starts=True)
    assert lengths.tolist() == ul.tolist()
    for i in range(2):
        assert torch.equal(out[i, : int(lengths[i])], units[i, : int(ul[i])])
    assert starts[0].tolist() == [0, 2, 5] and starts[1].tolist() == [0, 4, 6]  # a padding word starts at the end
    # Speaking rate: doubling every duration doubles the length.
    _, slow = dec.generate(tokens, tl, speech, sl, word_ids=word_ids, duration_scale=2.0)
    assert slow.tolist() == (2 * ul).tolist()


def test_generation_is_batch_invariant_and_reproducible():
    dec = _decoder().eval()
    tokens, tl, speech, sl, _, _, word_ids, _ = _toy_batch()
    both, lengths = dec.generate(tokens, tl, speech, sl, word_ids=word_ids)
    alone, n = dec.generate(tokens[1:, :2], tl[1:], speech[1:, :2], sl[1:], word_ids=word_ids[1:, :2])
    assert int(n[0]) == int(lengths[1]) and torch.equal(alone[0, : int(n[0])], both[1, : int(lengths[1])])
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = dec.generate(tokens, tl, speech, sl, word_ids=word_ids, top_k=4, generator=g())[0]
    assert torch.equal(a, dec.generate(tokens, tl, speech, sl, word_ids=word_ids, top_k=4, generator=g())[0])


def test_switch_penalty_smooths_the_greedy_units_without_changing_lengths():
    dec = _decoder().eval()  # untrained: per-unit argmax flickers
    tokens, tl, speech, sl, _, _, word_ids, _ = _toy_batch()
    plain, lengths = dec.generate(tokens, tl, speech, sl, word_ids=word_ids)
    assert torch.equal(dec.generate(tokens, tl, speech, sl, word_ids=word_ids, switch_penalty=0.0)[0], plain)
    smooth, same = dec.generate(tokens, tl, speech, sl, word_ids=word_ids, switch_penalty=50.0)
    assert torch.equal(same, lengths)
    for row, n in zip(smooth, lengths.tolist()):
        assert row[:n].unique().numel() == 1 and (row[n:] == -1).all()  # one run per utterance at a huge penalty
    changes = lambda u: int(((u[:, 1:] != u[:, :-1]) & (u[:, 1:] >= 0)).sum())  # noqa: E731
    assert changes(dec.generate(tokens, tl, speech, sl, word_ids=word_ids, switch_penalty=0.05)[0]) <= changes(plain)
    with pytest.raises(InputError, match="greedy decoding only"):
        dec.generate(tokens, tl, speech, sl, word_ids=word_ids, switch_penalty=1.0, top_k=4)


def test_length_cap_scales_durations_down_and_is_reported():
    dec = _decoder()
    with torch.no_grad():
        dec.duration_head.bias.fill_(5.0)  # ~147 units per word: far over the cap
    tokens, tl, speech, sl, _, _, word_ids, _ = _toy_batch()
    _, lengths, starts = dec.generate(tokens, tl, speech, sl, word_ids=word_ids, max_len_ratio=4.0,
                                      return_word_starts=True)
    cap = dec.generation_cap(tl, max_len_ratio=4.0)
    assert cap.tolist() == [12, 8] and (lengths <= cap).all() and (lengths >= cap - 3).all()
    assert (starts[:, 1:] >= starts[:, :-1]).all()


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(ConfigError, match="weighted_sum"):
        _decoder(fusion="concat")
    with pytest.raises(ConfigError, match="word_layers"):
        _decoder(word_layers=-1)
    dec = _decoder()
    tokens, tl, speech, sl, units, ul, word_ids, unit_words = _toy_batch()
    with pytest.raises(InputError, match="unit_word_ids"):
        dec(tokens, tl, speech, sl, units, ul, word_ids=word_ids)
    with pytest.raises(InputError, match="word_ids"):
        dec.generate(tokens, tl, speech, sl)
    with pytest.raises(InputError, match="duration_scale"):
        dec.generate(tokens, tl, speech, sl, word_ids=word_ids, duration_scale=0.0)


def _swapped_pair_batch():
    """Two one-word utterances, tokens (1, 2) and (2, 1): the same multiset in swapped order.

    The word's units follow its token order: tokens (a, b) are spoken as a a b b. Speech
    vectors are swapped with their tokens, so the word's mean vector is the same in both.
    """
    tokens = torch.tensor([[1, 2], [2, 1]])
    lengths = torch.tensor([2, 2])
    vec = torch.randn(3, 4, generator=torch.Generator().manual_seed(5))
    speech = vec[tokens]
    units = torch.tensor([[1, 1, 2, 2], [2, 2, 1, 1]])
    word_ids = torch.zeros(2, 2, dtype=torch.long)
    unit_words = torch.zeros(2, 4, dtype=torch.long)
    return tokens, lengths, speech, lengths.clone(), units, torch.tensor([4, 4]), word_ids, unit_words


@pytest.mark.parametrize("token_context", [False, True])
def test_token_context_lets_units_read_the_order_of_their_words_tokens(token_context):
    # No per-stream layers: the word vector is then a symmetric mean of the tokens (positions
    # add up to the same sum), so only the token context can tell the two words apart.
    dec = _decoder(text_layers=0, speech_layers=0, token_context=token_context)
    tokens, tl, speech, sl, units, ul, word_ids, unit_words = _swapped_pair_batch()
    _fit(dec, (tokens, tl, speech, sl, units, ul, word_ids, unit_words), steps=200)
    out, lengths = dec.generate(tokens, tl, speech, sl, word_ids=word_ids)
    assert lengths.tolist() == [4, 4]
    if token_context:
        assert torch.equal(out, units)
    else:
        assert torch.equal(out[0], out[1])  # the same word vector: the same units, right for at most one
    # Batch invariance holds with the token states in the stack (padding tokens are masked).
    alone, _ = dec.generate(tokens[1:], tl[1:], speech[1:], sl[1:], word_ids=word_ids[1:])
    assert torch.equal(alone[0], out[1])


def test_token_context_with_padding_matches_the_unpadded_utterance():
    dec = _decoder(token_context=True).eval()
    tokens, tl, speech, sl, _, _, word_ids, _ = _toy_batch()
    both, lengths = dec.generate(tokens, tl, speech, sl, word_ids=word_ids)
    alone, n = dec.generate(tokens[1:, :2], tl[1:], speech[1:, :2], sl[1:], word_ids=word_ids[1:, :2])
    assert int(n[0]) == int(lengths[1]) and torch.equal(alone[0, : int(n[0])], both[1, : int(lengths[1])])
