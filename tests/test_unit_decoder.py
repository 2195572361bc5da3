"""Tests of the ``unit_transformer`` decoder plugin and the causal Transformer blocks."""

import time

import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.nn.causal_transformer import KVCache, TransformerStack
from taste_toolkit.registry import build

VOCAB, UNITS, SPEECH, SPK = 20, 12, 8, 6
TINY = dict(d_model=32, num_layers=2, num_heads=4, ffn_dim=64, dropout=0.0)




def make(seed=0, **options):
    torch.manual_seed(seed)
    opts = dict(vocab_size=VOCAB, num_units=UNITS, speech_dim=SPEECH, **TINY)
    opts.update(options)
    return build("decoder", "unit_transformer", opts).eval()


def batch(lengths, unit_lengths, seed=1, speech_dim=SPEECH, speech_lengths=None, speaker_dim=0):
    """Random right-padded batch; padding filled with garbage to prove it is ignored."""
    g = torch.Generator().manual_seed(seed)
    b, n, s = len(lengths), max(lengths), max(unit_lengths)
    speech_lengths = list(lengths) if speech_lengths is None else speech_lengths
    m = max(speech_lengths)
    return dict(
        tokens=torch.randint(0, VOCAB, (b, n), generator=g),
        token_lengths=torch.tensor(lengths),
        speech=torch.randn(b, m, speech_dim, generator=g) if speech_dim else None,
        speech_lengths=torch.tensor(speech_lengths) if speech_dim else None,
        units=torch.randint(0, UNITS, (b, s), generator=g),
        unit_lengths=torch.tensor(unit_lengths),
        speaker=torch.randn(b, speaker_dim, generator=g) if speaker_dim else None,
    )


def gen_inputs(data):
    return {k: data[k] for k in ("tokens", "token_lengths", "speech", "speech_lengths", "speaker")}


def take(data, i):
    """Utterance ``i`` alone, cut to its own lengths."""
    n, s = int(data["token_lengths"][i]), int(data["unit_lengths"][i])
    out = dict(tokens=data["tokens"][i : i + 1, :n], token_lengths=data["token_lengths"][i : i + 1],
               units=data["units"][i : i + 1, :s], unit_lengths=data["unit_lengths"][i : i + 1],
               speech=None, speech_lengths=None, speaker=None)
    if data["speech"] is not None:
        m = int(data["speech_lengths"][i])
        out["speech"] = data["speech"][i : i + 1, :m]
        out["speech_lengths"] = data["speech_lengths"][i : i + 1]
    if data["speaker"] is not None:
        out["speaker"] = data["speaker"][i : i + 1]
    return out


def test_shapes_targets_and_backward():
    model = make(speaker_dim=SPK).train()
    data = batch([3, 5], [4, 7], speaker_dim=SPK)
    out = model(**data)
    assert out.logits.shape == (2, 8, UNITS + 1)
    assert out.targets[0].tolist() == data["units"][0, :4].tolist() + [UNITS] + [-100] * 3
    assert out.targets[1].tolist() == data["units"][1].tolist() + [UNITS]
    expected = torch.nn.functional.cross_entropy(out.logits[out.targets != -100], out.targets[out.targets != -100])
    assert torch.allclose(out.loss, expected)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []  # fusion weights, speaker projection, task token included


def test_padding_invariance():
    model = make()
    data = batch([3, 6], [4, 9])
    both = model(**data)
    alone = model(**take(data, 0))
    valid = both.targets[0] != -100
    assert torch.equal(both.targets[0][valid], alone.targets[0])
    assert torch.allclose(both.logits[0][valid], alone.logits[0], atol=1e-5)
    per_pos = torch.nn.functional.cross_entropy(both.logits[0][valid], both.targets[0][valid], reduction="none")
    assert torch.allclose(per_pos.mean(), alone.loss, atol=1e-5)


def test_text_only_and_stream_errors():
    model = make(speech_dim=0)
    data = batch([3, 4], [5, 2], speech_dim=0)
    out = model(**data)
    assert out.logits.shape == (2, 6, UNITS + 1) and torch.isfinite(out.loss)
    units, lengths = model.generate(**gen_inputs(data), max_len_ratio=3.0, min_len_ratio=1.0)
    assert units.shape == (2, int(lengths.max())) and (lengths >= torch.tensor([3, 4])).all()
    with pytest.raises(InputError, match="text-only"):
        model(**{**data, "speech": torch.zeros(2, 4, SPEECH), "speech_lengths": torch.tensor([3, 4])})
    with pytest.raises(InputError, match="speaker"):
        model(**{**data, "speaker": torch.zeros(2, SPK)})


def test_concat_fusion_other_length_and_weighted_sum_mismatch():
    data = batch([3, 5], [4, 6], speech_lengths=[7, 11])  # M != N, e.g. 50 Hz frames
    model = make(fusion="concat")
    out = model(**data)
    assert out.logits.shape == (2, 7, UNITS + 1) and torch.isfinite(out.loss)
    alone = model(**take(data, 0))
    assert torch.allclose(out.logits[0][:5], alone.logits[0], atol=1e-5)
    with pytest.raises(InputError, match="weighted_sum"):
        make(fusion="weighted_sum")(**data)


def test_too_long_raises_instead_of_truncating():
    model = make(max_positions=16)
    with pytest.raises(InputError, match="max_positions"):
        model(**batch([5], [14]))  # 5 fused + task + 14 units = 20 > 16
    with pytest.raises(InputError, match="max_positions"):
        model.generate(**gen_inputs(batch([5], [1])), max_len_ratio=3.0)


def test_speaker_prefix_changes_output():
    model = make(speaker_dim=SPK)
    data = batch([4], [6], speaker_dim=SPK)
    other = {**data, "speaker": torch.randn(1, SPK)}
    assert not torch.allclose(model(**data).logits, model(**other).logits, atol=1e-3)
    with pytest.raises(InputError, match="speaker"):
        model(**{**data, "speaker": None})


def test_kv_cache_equals_recompute():
    stack = TransformerStack(16, 2, 2, 32, dropout=0.0).eval()
    x = torch.randn(2, 7, 16)
    valid = torch.ones(2, 7, dtype=torch.bool)
    full, _ = stack(x, valid)
    out, cache = stack(x[:, :4], valid[:, :4], use_cache=True)
    for t in range(4, 7):
        step, cache = stack(x[:, t : t + 1], valid[:, t : t + 1], cache=cache)
        assert torch.allclose(step[:, 0], full[:, t], atol=1e-5)
    assert isinstance(cache, KVCache) and cache.length == 7 and cache.keys[0].shape == (2, 2, 7, 8)

    model = make(speaker_dim=SPK, seed=3)
    data = gen_inputs(batch([3, 5, 2], [1, 1, 1], speaker_dim=SPK))
    kwargs = dict(max_len_ratio=6.0, min_len_ratio=1.0)
    cached = model.generate(**data, **kwargs)
    recomputed = model.generate(**data, use_cache=False, **kwargs)
    assert torch.equal(cached[0], recomputed[0]) and torch.equal(cached[1], recomputed[1])
    # Sampling consumes the generator identically on both paths.
    sampled = [model.generate(**data, top_k=5, use_cache=c, generator=torch.Generator().manual_seed(7), **kwargs)
               for c in (True, False)]
    assert torch.equal(sampled[0][0], sampled[1][0])


def test_sampling_temperature_extremes_stay_finite():
    """Found by the fuzzer: temperature=3.4028235677973366e38 (inf in float32) gave NaN probabilities."""
    model = make(seed=3)
    data = gen_inputs(batch([3, 5], [1, 1]))
    kwargs = dict(max_len_ratio=4.0, min_len_ratio=1.0, top_k=3)
    greedy = model.generate(**data, max_len_ratio=4.0, min_len_ratio=1.0)
    for temperature in (3.4028235677973366e38, 1e300, 5e-324, 1e-30, 0.7):
        units, lengths = model.generate(**data, temperature=temperature, generator=torch.Generator().manual_seed(0),
                                        **kwargs)
        valid = units[units >= 0]
        assert valid.numel() == int(lengths.sum()) and int(valid.max()) < UNITS, temperature
        if temperature < 1e-20:  # a vanishing temperature samples the top unit: greedy decoding
            assert torch.equal(units, greedy[0]) and torch.equal(lengths, greedy[1])


def test_batched_generation_equals_single():
    model = make(speaker_dim=SPK, seed=4)
    data = batch([3, 6, 2], [1, 1, 1], speaker_dim=SPK)
    units, lengths = model.generate(**gen_inputs(data), max_len_ratio=5.0, min_len_ratio=0.5)
    assert (lengths >= torch.tensor([2, 3, 1])).all() and (lengths <= torch.tensor([15, 30, 10])).all()
    for i in range(3):
        one, one_len = model.generate(**gen_inputs(take(data, i)), max_len_ratio=5.0, min_len_ratio=0.5)
        assert int(one_len) == int(lengths[i])
        assert torch.equal(units[i, : lengths[i]], one[0])
        assert (units[i, lengths[i] :] == -1).all()


def test_greedy_generation_matches_teacher_forcing():
    model = make(speaker_dim=SPK, seed=5)
    data = batch([3, 6, 2], [1, 1, 1], speaker_dim=SPK)
    units, lengths = model.generate(**gen_inputs(data), max_len_ratio=5.0, min_len_ratio=1.0)
    out = model(**{**data, "units": units.clamp(min=0), "unit_lengths": lengths})
    logits = out.logits.clone()
    min_len = data["token_lengths"]
    logits[..., UNITS] = logits[..., UNITS].masked_fill(torch.arange(logits.shape[1])[None] < min_len[:, None], -1e9)
    stopped_by_eos = lengths < 5 * data["token_lengths"]
    for i in range(3):
        n = int(lengths[i]) + int(stopped_by_eos[i])  # the forced stop at max length has no EOS
        assert logits[i, :n].argmax(-1).tolist() == out.targets[i, :n].tolist()
    assert stopped_by_eos.any()


def test_accuracy_counts():
    model = make()
    out = model(**batch([3, 4], [2, 5]))
    acc = model.accuracy(out, topk=(1, 5))
    valid = out.targets != -100
    assert acc["total"] == 3 + 6 == int(valid.sum())
    assert acc["top1_correct"] == int((out.logits.argmax(-1) == out.targets)[valid].sum())
    assert acc["top1_correct"] <= acc["top5_correct"] <= acc["total"]


def test_overfits_and_generates_exactly():
    torch.manual_seed(0)
    model = make(d_model=64, num_layers=2, num_heads=4, ffn_dim=128, text_layers=1, speech_layers=1).train()
    data = batch([3, 5, 4, 6], [7, 10, 8, 12], seed=5)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(300):
        optimizer.zero_grad()
        out = model(**data)
        out.loss.backward()
        optimizer.step()
        acc = model.accuracy(out, topk=(1,))
        if step > 10 and acc["top1_correct"] == acc["total"] and out.loss < 0.05:
            break
    model.eval()
    acc = model.accuracy(model(**data), topk=(1,))
    assert acc["top1_correct"] == acc["total"]
    units, lengths = model.generate(**gen_inputs(data), max_len_ratio=4.0, min_len_ratio=1.0)
    assert lengths.tolist() == data["unit_lengths"].tolist()  # stopped with EOS at the right place
    for i, n in enumerate(lengths.tolist()):
        assert units[i, :n].tolist() == data["units"][i, :n].tolist()


def test_cache_speed_200_units():
    model = make(d_model=64, num_layers=2, num_heads=4, ffn_dim=128)
    data = gen_inputs(batch([10], [1]))
    timings, outputs = {}, {}
    for use_cache in (True, False):
        start = time.perf_counter()
        outputs[use_cache] = model.generate(**data, max_len_ratio=20.0, min_len_ratio=20.0, use_cache=use_cache)
        timings[use_cache] = time.perf_counter() - start
    assert outputs[True][1].tolist() == [200]
    assert torch.equal(outputs[True][0], outputs[False][0])
    print(f"\n200 units: KV cache {timings[True]:.3f} s, recompute {timings[False]:.3f} s")


def test_unit_dropout_masks_inputs_only_in_training():
    torch.manual_seed(0)
    dec = build("decoder", "unit_transformer", {"vocab_size": 20, "num_units": 8, "d_model": 16, "num_layers": 1,
                                                "num_heads": 2, "ffn_dim": 32, "dropout": 0.0, "unit_dropout": 0.5})
    tokens, tl = torch.randint(0, 20, (2, 5)), torch.tensor([5, 3])
    units, ul = torch.randint(0, 8, (2, 12)), torch.tensor([12, 9])
    dec.eval()
    a = dec(tokens, tl, None, None, units, ul).logits
    b = dec(tokens, tl, None, None, units, ul).logits
    assert torch.equal(a, b)  # eval: deterministic, nothing masked
    dec.train()
    c = dec(tokens, tl, None, None, units, ul)
    c.loss.backward()
    assert dec.unit_mask_embedding.grad is not None and dec.unit_mask_embedding.grad.abs().sum() > 0
    with pytest.raises(ConfigError):
        build("decoder", "unit_transformer", {"vocab_size": 20, "num_units": 8, "unit_dropout": 1.0})
