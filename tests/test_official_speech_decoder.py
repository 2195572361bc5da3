"""The ``cosyvoice_lm`` decoder against the official TASTE implementation.

The ground truth is ``../shared/fixtures/official-tiny`` (beside the checkout): a
tiny random-weight stage-1 ``TasteForCausalLM`` that the unmodified official code
built and ran, with every intermediate of its speech decoder. Sizes are read from
the fixture, never assumed. Tests that need no fixture build random instances.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.official.speech_decoder import build_speech_decoder, speech_decoder_options
from taste_toolkit.registry import build

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(os.environ.get("TASTE_OFFICIAL_TINY", REPO.parent / "shared" / "fixtures" / "official-tiny"))
PREFIX = "speech_decoder."
TOL = 1e-4


def _fixture():
    if not (FIXTURE / "model.safetensors").is_file():
        pytest.skip(f"official-tiny fixture not found at {FIXTURE} (expected ../shared/fixtures/official-tiny "
                    "beside the checkout, or set TASTE_OFFICIAL_TINY)")
    from safetensors.torch import load_file

    config = json.loads((FIXTURE / "config.json").read_text())
    weights = load_file(str(FIXTURE / "model.safetensors"))
    tensors = {k[len(PREFIX):]: v for k, v in weights.items() if k.startswith(PREFIX)}
    inputs, outputs = (load_file(str(FIXTURE / f"{name}.safetensors")) for name in ("inputs", "outputs"))
    return config, tensors, inputs, outputs


@pytest.fixture(scope="module")
def official():
    config, tensors, inputs, outputs = _fixture()
    result = build_speech_decoder(config, tensors)
    return result, tensors, inputs, outputs


def _inputs(inputs, outputs):
    return (inputs["asr_token_ids"], inputs["asr_token_lengths"], outputs["audio_unit_embeds"],
            outputs["audio_unit_lengths"], inputs["speech_token_ids"], inputs["speech_token_lengths"],
            inputs["speaker_embeds"])


def _max_diff(mine, ref, lengths):
    """Max |mine - ref| over the first ``lengths`` positions of each row."""
    valid = torch.arange(ref.shape[1])[None] < lengths.long()[:, None]
    assert mine.shape[0] == ref.shape[0] and mine.shape[2:] == ref.shape[2:]
    assert mine.shape[1] >= int(lengths.max())
    return float(((mine[:, : ref.shape[1]] - ref[:, : mine.shape[1]]).abs() * valid[:, : mine.shape[1], None]).max())


def test_every_tensor_consumed(official):
    result, tensors, _, _ = official
    assert sorted(result["consumed"]) == sorted(tensors) and result["skipped"] == []
    name, options = result["options"]
    assert name == "cosyvoice_lm" and not result["decoder"].training


def test_matches_official_intermediates(official):
    result, _, inputs, outputs = official
    with torch.no_grad():
        out = result["decoder"].teacher_forced(*_inputs(inputs, outputs))
    tokens = inputs["asr_token_lengths"]
    for mine, ref in [("text", "sd_text_encoded"), ("audio", "sd_audio_encoded"), ("fused", "sd_fused")]:
        assert _max_diff(out[mine], outputs[ref], tokens) < TOL, mine
    lm_lengths = outputs["sd_lm_input_len"].long()
    assert out["lm_lengths"].tolist() == lm_lengths.tolist()
    for mine, ref in [("lm_input", "sd_lm_input"), ("lm_output", "sd_lm_output"), ("logits", "speech_logits")]:
        assert _max_diff(out[mine], outputs[ref], lm_lengths) < TOL, mine
    labels = outputs["speech_labels"].masked_fill(outputs["speech_labels"] == -1, -100)
    width = int(lm_lengths.max())
    assert torch.equal(out["labels"][:, :width], labels[:, :width])
    loss = result["decoder"].criterion(out["logits"], out["labels"])
    assert abs(float(loss) - float(outputs["speech_loss"].reshape(()))) < TOL


def test_forward_layout_and_loss(official):
    result, _, inputs, outputs = official
    decoder = result["decoder"]
    with torch.no_grad():
        out = decoder(*_inputs(inputs, outputs))
    units, unit_lengths = inputs["speech_token_ids"], inputs["speech_token_lengths"].long()
    assert out.logits.shape == (units.shape[0], int(unit_lengths.max()) + 1, decoder.num_units + 1)
    for b, n in enumerate(unit_lengths.tolist()):
        assert out.targets[b, :n].tolist() == units[b, :n].tolist()
        assert int(out.targets[b, n]) == decoder.eos and (out.targets[b, n + 1:] == -100).all()
    assert abs(float(out.loss) - float(outputs["speech_loss"].reshape(()))) < TOL
    # The release's next-unit logits, gathered at the task position and every unit.
    first = outputs["sd_lm_input_len"].long() - unit_lengths - 1
    for b, n in enumerate(unit_lengths.tolist()):
        ref = outputs["speech_logits"][b, int(first[b]): int(first[b]) + n + 1]
        assert float((out.logits[b, : n + 1] - ref).abs().max()) < TOL


def test_rebuilt_from_registry_name_options_and_state(official):
    result, _, inputs, outputs = official
    name, options = result["options"]
    rebuilt = build("decoder", name, json.loads(json.dumps(options))).eval()  # plain data survives JSON
    rebuilt.load_state_dict(result["decoder"].state_dict())
    with torch.no_grad():
        a = result["decoder"](*_inputs(inputs, outputs)).logits
        b = rebuilt(*_inputs(inputs, outputs)).logits
    assert torch.equal(a, b)


def test_generation_cached_equals_uncached_on_the_fixture(official):
    result, _, inputs, outputs = official
    decoder = result["decoder"]
    args = (inputs["asr_token_ids"], inputs["asr_token_lengths"], outputs["audio_unit_embeds"],
            outputs["audio_unit_lengths"], inputs["speaker_embeds"])
    opts = dict(top_k=1, max_len_ratio=3.0, min_len_ratio=1.0)
    cached = decoder.generate(*args, use_cache=True, **opts)
    uncached = decoder.generate(*args, use_cache=False, **opts)
    assert torch.equal(cached[0], uncached[0]) and torch.equal(cached[1], uncached[1])


# ---------------------------------------------------------------- no fixture needed


def _tiny_config(**changes):
    section = {
        "encoder_input_size": 12, "audio_encoder_input_size": 20, "llm_input_size": 24, "llm_output_size": 16,
        "text_token_size": 50, "speech_token_size": 30, "spk_embed_dim": 6, "lsm_weight": 0.0,
        "length_normalized_loss": True, "fuse_encoded_audio_text_type": "weighted_sum",
        "fuse_encoded_audio_text_kwargs": {"normalize": False, "use_layer_norm": False,
                                           "use_trainable_weight": True, "weight_init_type": "balance"},
        "encoder__attention_heads": 2, "encoder__linear_units": 20, "encoder__num_blocks": 1,
        "encoder__pos_enc_layer_type": "rel_pos_espnet", "encoder__input_layer": "linear",
        "encoder__static_chunk_size": 1, "llm__attention_heads": 4, "llm__linear_units": 32, "llm__num_blocks": 2,
        "llm__input_layer": "linear_legacy", "llm__pos_enc_layer_type": "rel_pos_espnet", "llm__static_chunk_size": 1,
    }
    section.update(changes)
    return {"speech_decoder_config": section}


def _random_tensors(config, seed=0):
    torch.manual_seed(seed)
    decoder = build("decoder", "cosyvoice_lm", speech_decoder_options(config))
    return {name: torch.randn(t.shape) * 0.3 for name, t in decoder.state_dict().items()}


def _tiny_inputs(seed=1, batch=3):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 2, 4][:batch])
    return (torch.randint(0, 50, (batch, 6), generator=g), lengths, torch.randn(batch, 6, 20, generator=g),
            lengths.clone(), torch.randn(batch, 6, generator=g))


def test_other_sizes_build_and_generate_cached_equals_uncached():
    config = _tiny_config()
    decoder = build_speech_decoder(config, _random_tensors(config))["decoder"]
    tokens, lengths, speech, speech_lengths, speaker = _tiny_inputs()
    opts = dict(max_len_ratio=4.0, min_len_ratio=1.0)
    greedy = decoder.generate(tokens, lengths, speech, speech_lengths, speaker, top_k=1, **opts)
    assert torch.equal(greedy[0], decoder.generate(tokens, lengths, speech, speech_lengths, speaker, top_k=1,
                                                   use_cache=False, **opts)[0])
    sampled = [decoder.generate(tokens, lengths, speech, speech_lengths, speaker, top_k=5, use_cache=cache,
                                generator=torch.Generator().manual_seed(7), **opts) for cache in (True, False)]
    assert torch.equal(sampled[0][0], sampled[1][0]) and torch.equal(sampled[0][1], sampled[1][1])
    # Batched decoding (left-aligned prefixes) equals one utterance at a time.
    for b in range(tokens.shape[0]):
        n = int(lengths[b])
        alone = decoder.generate(tokens[b:b + 1, :n], lengths[b:b + 1], speech[b:b + 1, :n], lengths[b:b + 1],
                                 speaker[b:b + 1], top_k=1, **opts)
        m = int(alone[1][0])
        assert int(greedy[1][b]) == m and greedy[0][b, :m].tolist() == alone[0][0, :m].tolist()
        # min/max follow the release: ratio x LM prefix (tokens + sos, speaker, task).
        assert int(1.0 * (n + 3)) <= m <= int(4.0 * (n + 3))


def test_padding_does_not_change_valid_outputs():
    config = _tiny_config(encoder__static_chunk_size=0)  # full-context text encoder too
    decoder = build_speech_decoder(config, _random_tensors(config))["decoder"]
    tokens, lengths, speech, speech_lengths, speaker = _tiny_inputs()
    units, unit_lengths = torch.randint(0, 30, (3, 7)), torch.tensor([7, 3, 5])
    with torch.no_grad():
        full = decoder(tokens, lengths, speech, speech_lengths, units, unit_lengths, speaker)
        for b in range(3):
            n, s = int(lengths[b]), int(unit_lengths[b])
            one = decoder(tokens[b:b + 1, :n], lengths[b:b + 1], speech[b:b + 1, :n], lengths[b:b + 1],
                          units[b:b + 1, :s], unit_lengths[b:b + 1], speaker[b:b + 1])
            assert torch.allclose(one.logits[0], full.logits[b, : s + 1], atol=1e-5)


def test_bad_tensor_is_refused_by_name():
    config = _tiny_config()
    tensors = _random_tensors(config)
    bad = dict(tensors, **{"llm.encoders.1.self_attn.pos_bias_u": torch.zeros(3, 3)})
    with pytest.raises(InputError, match=r"llm\.encoders\.1\.self_attn\.pos_bias_u.*\[4, 4\]"):
        build_speech_decoder(config, bad)
    missing = {k: v for k, v in tensors.items() if k != "llm_decoder.weight"}
    with pytest.raises(InputError, match=r"llm_decoder\.weight.*\[31, 16\]"):
        build_speech_decoder(config, missing)
    extra = dict(tensors, **{"unexpected.weight": torch.zeros(2)})
    assert build_speech_decoder(config, extra)["skipped"] == ["unexpected.weight"]


@pytest.mark.parametrize("field, value", [
    ("encoder__pos_enc_layer_type", "rel_pos"), ("llm__pos_enc_layer_type", "abs_pos"),
    ("llm__static_chunk_size", 0), ("encoder__use_cnn_module", True), ("fuse_encoded_audio_text_type", "concat"),
    ("encoder__input_layer", "conv2d"), ("llm__num_blocks", "7"),
])
def test_unsupported_config_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        speech_decoder_options(_tiny_config(**{field: value}))


def test_generation_validates_options():
    config = _tiny_config()
    decoder = build_speech_decoder(config, _random_tensors(config))["decoder"]
    tokens, lengths, speech, speech_lengths, speaker = _tiny_inputs()
    with pytest.raises(InputError, match="temperature"):
        decoder.generate(tokens, lengths, speech, speech_lengths, speaker, temperature=0.0)
    with pytest.raises(InputError, match="speaker"):
        decoder.generate(tokens, lengths, speech, speech_lengths, None)
    with pytest.raises(InputError, match="one speech vector per text token"):
        decoder.generate(tokens, lengths, speech, speech_lengths - 1, speaker)


def test_heads_must_divide_the_width():
    with pytest.raises(ConfigError, match="llm__attention_heads"):
        speech_decoder_options(_tiny_config(llm__attention_heads=3))
    with pytest.raises(ConfigError, match="llm_input_size"):
        speech_decoder_options(_tiny_config(llm_input_size=20, encoder__attention_heads=4))


def test_without_audio_affine_layer():
    """``audio_encoder_input_size = -1``: the speech vectors enter the encoder directly."""
    config = _tiny_config(audio_encoder_input_size=-1)
    result = build_speech_decoder(config, _random_tensors(config))
    assert not any(name.startswith("audio_embed_affine_layer") for name in result["consumed"])
    tokens, lengths, _, _, speaker = _tiny_inputs()
    speech = torch.randn(3, 6, 12)
    out = result["decoder"](tokens, lengths, speech, lengths, torch.randint(0, 30, (3, 4)), torch.tensor([4, 1, 2]),
                            speaker)
    assert out.logits.shape == (3, 5, 31) and torch.isfinite(out.loss)


@pytest.mark.parametrize("length_reference", ["prefix", "tokens"])
def test_generation_cap_is_what_generate_stops_at(length_reference):
    # min == max: every row runs to the cap, so the cap the tokenizer uses to flag
    # capped decodes must equal the lengths generate returns.
    config = _tiny_config()
    decoder = build_speech_decoder(config, _random_tensors(config))["decoder"]
    tokens, lengths, speech, speech_lengths, speaker = _tiny_inputs()
    opts = dict(max_len_ratio=1.5, min_len_ratio=1.5, length_reference=length_reference)
    _, generated = decoder.generate(tokens, lengths, speech, speech_lengths, speaker, top_k=1, **opts)
    assert generated.tolist() == decoder.generation_cap(lengths, **opts).tolist()
