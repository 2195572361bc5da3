"""``whisper_decoder`` aggregator, the ``whisper`` encoder's release options, and the
audio-tower import at sizes other than the fixture's.

The last test builds a random tiny release in the official key layout (other
widths, layer counts, value layer and codebooks than the official-tiny fixture)
and checks the imported plugins against a reference computed from the raw
tensors, independently of the plugin code, following the official forward:
transformers' ``WhisperEncoder`` hidden states for the taps, an explicit Whisper
decoder with K from the last layer and V from the value layer, the official
run-based subword averaging, and nearest-code residual quantization.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import EncoderOutput
from taste_toolkit.official.audio_tower import build_audio_tower
from taste_toolkit.registry import build

PROMPT = [50258, 50259, 50360, 50364]


def _aggregator(**options):
    base = dict(vocab_size=60, key_dim=16, value_dim=16, num_heads=2, max_positions=40, prompt_ids=[1, 2], eos_id=3)
    return build("aggregator", "whisper_decoder", {**base, **options}).eval()


def _encoder_out(b=2, t=12, d=16, lengths=None):
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor(lengths or [t] * b)
    return EncoderOutput(torch.randn(b, t, d, generator=g), torch.randn(b, t, d, generator=g), lengths, 50.0)


def test_broadcast_gives_every_subword_its_word_mean():
    agg = _aggregator(word_pooling="none")
    enc = _encoder_out(1)
    tokens, lengths, words = torch.tensor([[5, 6, 7, 8]]), torch.tensor([4]), torch.tensor([[0, 0, 1, 2]])
    per_token = agg(tokens, lengths, words, enc).embeddings
    agg.word_pooling = "broadcast"
    out = agg(tokens, lengths, words, enc)
    assert out.level == agg.output_level == "token" and out.embeddings.shape == (1, 4, 16)
    torch.testing.assert_close(out.embeddings[0, 0], per_token[0, :2].mean(0))
    torch.testing.assert_close(out.embeddings[0, 1], per_token[0, :2].mean(0))
    torch.testing.assert_close(out.embeddings[0, 2:], per_token[0, 2:])
    agg.word_pooling = "mean"
    words_out = agg(tokens, lengths, words, enc)
    assert words_out.level == agg.output_level == "word" and words_out.lengths.tolist() == [3]


def test_padding_invariance_and_zeros_at_padding():
    agg = _aggregator()
    enc = _encoder_out(2)
    tokens = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    words = torch.tensor([[0, 0, 1, 2], [0, 1, 0, 0]])
    batched = agg(tokens, torch.tensor([4, 2]), words, enc).embeddings
    single = _encoder_out(2)
    alone = agg(tokens[1:, :2], torch.tensor([2]), words[1:, :2],
                EncoderOutput(single.keys[1:], single.values[1:], single.lengths[1:], 50.0)).embeddings
    torch.testing.assert_close(batched[1, :2], alone[0])
    assert float(batched[1, 2:].detach().abs().max()) == 0.0


def test_frames_beyond_lengths_are_masked():
    agg = _aggregator()
    enc = _encoder_out(1, lengths=[7])
    tokens, lengths, words = torch.tensor([[5, 6]]), torch.tensor([2]), torch.tensor([[0, 1]])
    out = agg(tokens, lengths, words, enc, need_weights=True)
    assert float(out.attention[..., 7:].detach().abs().max()) == 0.0
    changed = EncoderOutput(enc.keys.clone(), enc.values.clone(), enc.lengths, 50.0)
    changed.keys[:, 7:] += 5.0
    torch.testing.assert_close(agg(tokens, lengths, words, changed).embeddings, out.embeddings)


def test_value_identity_init_and_state_dict_keys_are_whispers():
    agg = _aggregator(value_identity_init=True)
    torch.testing.assert_close(agg.layers[0].encoder_attn.v_proj.weight, torch.eye(16))
    keys = set(agg.state_dict())
    assert {"embed_tokens.weight", "embed_positions.weight", "layer_norm.weight",
            "layers.1.encoder_attn.k_proj.weight", "layers.0.fc1.bias"} <= keys
    assert not any("prompt" in k for k in keys)  # the release's decoder has no such tensor


def test_bad_options_and_inputs_are_refused():
    with pytest.raises(ConfigError, match="word_pooling"):
        _aggregator(word_pooling="max")
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        _aggregator(prompt_ids=[100])
    agg = _aggregator()
    with pytest.raises(InputError, match="at most"):
        agg(torch.ones(1, 40, dtype=torch.long), torch.tensor([40]), torch.zeros(1, 40, dtype=torch.long), _encoder_out(1))


# --------------------------------------------------------------------------- other sizes

WHISPER = dict(vocab_size=51866, num_mel_bins=80, d_model=24, encoder_layers=3, encoder_attention_heads=3,
               encoder_ffn_dim=40, decoder_layers=3, decoder_attention_heads=2, decoder_ffn_dim=56,
               max_source_positions=1500, max_target_positions=448, activation_function="gelu", scale_embedding=False)
QUANT = dict(dim=24, num_quantizers=3, codebook_size=8, codebook_dim=5, decay=0.99, kmeans_init=True,
             kmeans_iters=100, quantize_dropout=True)


def _release(value_layer=2, seed=3):
    """A random tiny release: config dict and ``audio_tower.*`` tensors (prefix stripped)."""
    config = {
        # asr_config differs from the tower's Whisper (as in the release): the layer counts come from the tensors.
        "asr_config": dict(WHISPER, decoder_layers=6),
        "audio_tower_config": {
            "is_joint_encoder_segmenter": True, "quantization_on": True,
            "kwargs_for_joint_encoder_segmenter": {"forward_type": "asr_attn_pooling", "is_word_level": True,
                                                   "skip_prefix_idx": 4, "target_hidden_layer": value_layer,
                                                   "make_v_proj_identity": True},
            "kwargs_for_quantizer": QUANT,
        },
    }
    g = torch.Generator().manual_seed(seed)
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperModel

    model = WhisperModel(WhisperConfig(**WHISPER))
    tensors = {}
    for k, v in model.encoder.state_dict().items():
        tensors["audio_joint_encoder_segmenter.audio_encoder.encoder." + k] = v
    for k, v in model.decoder.state_dict().items():
        tensors["audio_joint_encoder_segmenter.audio_segmenter.decoder." + k] = v
    for k, v in list(tensors.items()):
        if not k.endswith("embed_positions.weight") or "decoder" in k:
            tensors[k] = torch.randn(v.shape, generator=g) / math.sqrt(v.shape[-1]) + (1.0 if k.endswith("norm.weight") else 0.0)
    d, c = QUANT["dim"], QUANT["codebook_dim"]
    tensors["vq.rvq.project_in.weight"] = torch.randn(c, d, generator=g) / math.sqrt(d)
    tensors["vq.rvq.project_in.bias"] = 0.1 * torch.randn(c, generator=g)
    tensors["vq.rvq.project_out.weight"] = torch.randn(d, c, generator=g) / math.sqrt(c)
    tensors["vq.rvq.project_out.bias"] = 0.1 * torch.randn(d, generator=g)
    for r in range(QUANT["num_quantizers"]):
        embed = torch.randn(1, QUANT["codebook_size"], c, generator=g) * 0.5 ** r
        p = f"vq.rvq.layers.{r}._codebook."
        tensors.update({p + "embed": embed, p + "embed_avg": embed.clone(), p + "initted": torch.ones(1),
                        p + "cluster_size": torch.ones(1, QUANT["codebook_size"])})
    for r in range(QUANT["num_quantizers"] - 1):
        tensors[f"vq.rvq.mlps.{r}.proj_in.weight"] = torch.zeros(c, 2 * c)
    return config, tensors


def _reference(tensors, mels, tokens, lengths, word_ids, value_layer):
    """The official forward from the raw tensors (no plugin code)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = WhisperConfig(**WHISPER)
    config._attn_implementation = "eager"
    encoder = WhisperEncoder(config).eval()
    p = "audio_joint_encoder_segmenter.audio_encoder.encoder."
    encoder.load_state_dict({k[len(p):]: v for k, v in tensors.items() if k.startswith(p)})
    with torch.no_grad():
        out = encoder(F.pad(mels, (0, 3000 - mels.shape[-1])), output_hidden_states=True)
    keys, values = out.last_hidden_state, out.hidden_states[value_layer]
    t = {k[len("audio_joint_encoder_segmenter.audio_segmenter.decoder."):]: v for k, v in tensors.items()
         if k.startswith("audio_joint_encoder_segmenter.audio_segmenter.decoder.")}
    b = tokens.shape[0]
    ids = torch.cat([torch.tensor([PROMPT] * b), tokens, torch.full((b, 1), 50257)], 1)
    n = ids.shape[1]
    x = t["embed_tokens.weight"][ids] + t["embed_positions.weight"][:n]
    h = WHISPER["decoder_attention_heads"]

    def attention(pre, q_in, k_in, v_in, causal):
        split = lambda z: z.view(b, z.shape[1], h, -1).transpose(1, 2)  # noqa: E731
        q = split(F.linear(q_in, t[pre + "q_proj.weight"], t[pre + "q_proj.bias"]) * (WHISPER["d_model"] // h) ** -0.5)
        k = split(F.linear(k_in, t[pre + "k_proj.weight"]))
        v = split(F.linear(v_in, t[pre + "v_proj.weight"], t[pre + "v_proj.bias"]))
        scores = q @ k.transpose(2, 3)
        if causal:
            scores = scores + torch.full((n, n), torch.finfo(scores.dtype).min).triu(1)
        o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)
        return F.linear(o, t[pre + "out_proj.weight"], t[pre + "out_proj.bias"])

    ln = lambda z, pre: F.layer_norm(z, z.shape[-1:], t[pre + "weight"], t[pre + "bias"])  # noqa: E731
    for i in range(WHISPER["decoder_layers"]):
        pre = f"layers.{i}."
        y = ln(x, pre + "self_attn_layer_norm.")
        x = x + attention(pre + "self_attn.", y, y, y, True)
        x = x + attention(pre + "encoder_attn.", ln(x, pre + "encoder_attn_layer_norm."), keys, values, False)
        y = F.gelu(F.linear(ln(x, pre + "final_layer_norm."), t[pre + "fc1.weight"], t[pre + "fc1.bias"]))
        x = x + F.linear(y, t[pre + "fc2.weight"], t[pre + "fc2.bias"])
    feats = ln(x, "layer_norm.")[:, 4:]
    averaged = feats.clone()
    for i in range(b):  # official _convert_word_ids_to_words_index + _averaging_subword_to_word_level
        _, counts = word_ids[i].unique_consecutive(return_counts=True)
        ends = counts.cumsum(0)
        for end, count in zip(ends.tolist(), counts.tolist()):
            if count > 1 and end <= int(lengths[i]) + 1:
                averaged[i, end - count:end] = feats[i, end - count:end].mean(0)
    z = averaged[:, :-1]
    residual = F.linear(z, tensors["vq.rvq.project_in.weight"], tensors["vq.rvq.project_in.bias"])
    codes, total = [], torch.zeros_like(residual)
    for r in range(QUANT["num_quantizers"]):
        book = tensors[f"vq.rvq.layers.{r}._codebook.embed"][0]
        idx = torch.cdist(residual, book[None].expand(b, -1, -1)).argmin(-1)
        codes.append(idx)
        residual, total = residual - book[idx], total + book[idx]
    quantized = F.linear(total, tensors["vq.rvq.project_out.weight"], tensors["vq.rvq.project_out.bias"])
    return keys, values, z, torch.stack(codes, -1), quantized


def test_import_at_other_sizes_matches_reference_from_raw_tensors():
    value_layer = 2
    config, tensors = _release(value_layer)
    tower = build_audio_tower(config, tensors)
    assert tower["aggregator"].layers.__len__() == 3 and tower["notes"]  # decoder_layers from the tensors
    assert tower["unplaced"] == [] and tower["skipped"] == sorted(k for k in tensors if ".mlps." in k)
    g = torch.Generator().manual_seed(1)
    mels = torch.randn(2, WHISPER["num_mel_bins"], 200, generator=g) * 0.3
    tokens = torch.tensor([[400, 401, 402, 0, 0], [500, 501, 502, 503, 504]])
    lengths = torch.tensor([3, 5])
    word_ids = torch.tensor([[0, 0, 1, 0, 0], [0, 1, 1, 1, 2]])
    keys, values, z, codes, quantized = _reference(tensors, mels, tokens, lengths, word_ids, value_layer)
    with torch.no_grad():
        enc = tower["encoder"].encode_features(mels, torch.tensor([200, 160]))
        agg = tower["aggregator"](tokens, lengths, word_ids, enc)
        q = tower["quantizer"](agg.embeddings, agg.lengths)
    mask = torch.arange(5)[None] < lengths[:, None]
    torch.testing.assert_close(enc.keys, keys, atol=1e-4, rtol=0)
    torch.testing.assert_close(enc.values, values, atol=1e-4, rtol=0)
    torch.testing.assert_close(agg.embeddings[mask], z[mask], atol=1e-4, rtol=0)
    assert torch.equal(q.codes[mask], codes[mask]) and bool((q.codes[~mask] == -1).all())
    torch.testing.assert_close(q.quantized[mask], quantized[mask], atol=1e-4, rtol=0)


def test_quantizer_fields_the_plugin_lacks_are_refused():
    config, tensors = _release()
    config["audio_tower_config"]["kwargs_for_quantizer"] = dict(QUANT, use_cosine_sim=True)
    with pytest.raises(ConfigError, match="use_cosine_sim"):
        build_audio_tower(config, tensors)
    config["audio_tower_config"]["kwargs_for_quantizer"] = dict(QUANT, dim=32)
    with pytest.raises(ConfigError, match="d_model"):
        build_audio_tower(config, tensors)


def test_whisper_encoder_from_config_dict_and_padded_window():
    enc = build("encoder", "whisper", {"source": "", "whisper_config": WHISPER, "value_layer": 2,
                                       "mode": "padded_window"}).eval()
    cut = build("encoder", "whisper", {"source": "", "whisper_config": WHISPER, "value_layer": 2, "mode": "padded"}).eval()
    cut.load_state_dict(enc.state_dict())
    wavs = torch.randn(2, 8000) * 0.1
    lengths = torch.tensor([8000, 4000])
    with torch.no_grad():
        full, short = enc(wavs, lengths), cut(wavs, lengths)
    assert full.keys.shape[1] == 1500 and full.lengths.tolist() == [1500, 1500]
    assert short.lengths.tolist() == [25, 13]
    torch.testing.assert_close(full.keys[:, :25], short.keys)
    assert enc.export("/nonexistent") == {"init_weights": False}  # nothing written: the config is in the options
    with pytest.raises(ConfigError, match="mode"):
        build("encoder", "whisper", {"source": "", "whisper_config": WHISPER, "mode": "window"})


def test_bfloat16_tensors_are_upcast_and_reported():
    config, tensors = _release()
    half = {k: v.to(torch.bfloat16) if v.is_floating_point() and "initted" not in k else v for k, v in tensors.items()}
    tower = build_audio_tower(config, half)
    assert any("bfloat16" in note for note in tower["notes"])
    assert all(p.dtype == torch.float32 for kind in ("encoder", "aggregator", "quantizer")
               for p in tower[kind].parameters())
    expected = half["vq.rvq.layers.0._codebook.embed"].float()
    torch.testing.assert_close(tower["quantizer"].rvq.layers[0]._codebook.embed, expected)
    assert tower["quantizer"].initialised
