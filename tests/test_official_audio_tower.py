"""The release's audio tower (issue 19) against the official-tiny fixture.

``../shared/fixtures/official-tiny`` (beside the checkout) holds a tiny random
stage-1 model that the unmodified official code built and ran, with its inputs
and every intermediate output (see its README.txt). The tower is imported with
:func:`taste_toolkit.official.audio_tower.build_audio_tower` and each output is
compared: floats to 1e-4, RVQ codes exactly.
"""

import json
from pathlib import Path

import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.official.audio_tower import build_audio_tower

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "official-tiny"
TOL = 1e-4

pytestmark = pytest.mark.skipif(
    not (FIXTURE / "model.safetensors").is_file(),
    reason=f"official-tiny fixture not found at {FIXTURE} (CI has ../shared beside the checkout)",
)


def _max_diff(a, b):
    return float((a.float() - b.float()).abs().max())


@pytest.fixture(scope="module")
def fixture():
    from safetensors.torch import load_file

    config = json.loads((FIXTURE / "config.json").read_text())
    model = load_file(str(FIXTURE / "model.safetensors"))
    tensors = {k[len("audio_tower."):]: v for k, v in model.items() if k.startswith("audio_tower.")}
    return config, tensors, load_file(str(FIXTURE / "inputs.safetensors")), load_file(str(FIXTURE / "outputs.safetensors"))


@pytest.fixture(scope="module")
def run(fixture):
    """The imported tower on the fixture's inputs (the release's own log-mels)."""
    config, tensors, inputs, _ = fixture
    tower = build_audio_tower(config, tensors)
    lengths = inputs["asr_token_lengths"].long()
    with torch.no_grad():
        enc = tower["encoder"].encode_features(inputs["audio_features"].transpose(1, 2), inputs["audio_feature_lengths"])
        states, cross = tower["aggregator"].decoder_states(inputs["asr_token_ids"], enc, need_weights=True)
        agg = tower["aggregator"](inputs["asr_token_ids"], lengths, inputs["asr_word_ids"], enc)
        quant = tower["quantizer"](agg.embeddings, agg.lengths)
    return {"tower": tower, "enc": enc, "states": states, "cross": cross, "agg": agg, "quant": quant, "lengths": lengths}


def test_every_audio_tower_tensor_is_consumed_or_skipped(fixture, run):
    _, tensors, _, _ = fixture
    tower = run["tower"]
    assert tower["unplaced"] == []
    assert tower["skipped"] == sorted(k for k in tensors if k.startswith("vq.rvq.mlps."))
    assert len(tower["skipped"]) > 0
    assert sorted(tower["consumed"] + tower["skipped"]) == sorted(tensors)
    assert {kind: spec[0] for kind, spec in tower["options"].items()} == {
        "encoder": "whisper", "aggregator": "whisper_decoder", "quantizer": "rvq"}


def test_encoder_taps_match_release(fixture, run):
    _, _, _, out = fixture
    enc = run["enc"]
    assert enc.keys.shape == out["enc_key_tap"].shape  # the whole 30-s window, as the release
    assert _max_diff(enc.keys, out["enc_key_tap"]) < TOL
    assert _max_diff(enc.values, out["enc_value_tap"]) < TOL


def test_encoder_from_waveforms_matches_release_log_mels(fixture, run):
    """The plugin's own 30-s log-mel (from audio_16k) gives the release's taps too."""
    _, _, inputs, out = fixture
    with torch.no_grad():
        enc = run["tower"]["encoder"](inputs["audio_16k"], inputs["audio_num_samples"])
    assert _max_diff(enc.keys, out["enc_key_tap"]) < TOL
    assert _max_diff(enc.values, out["enc_value_tap"]) < TOL


def test_decoder_states_and_cross_attention_match_release(fixture, run):
    _, _, _, out = fixture
    assert run["states"].shape == out["decoder_last_hidden_full"].shape
    assert _max_diff(run["states"], out["decoder_last_hidden_full"]) < TOL
    for i, weights in enumerate(run["cross"]):
        assert _max_diff(weights, out[f"decoder_cross_attn_layer{i}"]) < TOL


def test_word_vectors_match_release_at_valid_positions(fixture, run):
    _, _, _, out = fixture
    agg, mask = run["agg"], out["rvq_mask"]
    assert agg.level == "token" and agg.lengths.tolist() == run["lengths"].tolist()
    assert torch.equal(mask, torch.arange(mask.shape[1])[None] < agg.lengths[:, None])
    assert _max_diff(agg.embeddings[mask], out["rvq_input"][mask]) < TOL
    n = out["rvq_input"].shape[1]
    assert _max_diff(agg.embeddings[mask], out["segmenter_feats_wordavg"][:, :n][mask]) < TOL
    assert float(agg.embeddings[~mask].abs().max()) == 0.0  # padding: zeros (the release leaves decoder states there)


def test_rvq_matches_release(fixture, run):
    _, _, _, out = fixture
    quantizer, quant, mask = run["tower"]["quantizer"], run["quant"], out["rvq_mask"]
    assert torch.equal(quant.codes, out["rvq_indices"])  # -1 at padding, as the release
    with torch.no_grad():
        projected = quantizer.rvq.project_in(run["agg"].embeddings)
        assert _max_diff(projected[mask], out["rvq_project_in_out"][mask]) < TOL
        assert _max_diff(quantizer.rvq.project_in(out["rvq_input"]), out["rvq_project_in_out"]) < TOL
        assert _max_diff(quant.quantized[mask], out["rvq_quantized"][mask]) < TOL
        assert _max_diff(quantizer.decode(out["rvq_indices"])[mask], out["rvq_quantized"][mask]) < TOL
        assert torch.equal(quantizer.encode(out["rvq_input"], run["lengths"]), out["rvq_indices"])
        assert _max_diff(quantizer.rvq.get_codes_from_indices(out["rvq_indices"]), out["rvq_all_codes"]) < TOL
        # The release writes project_out(0) at padded positions; the plugin writes zeros there.
        bias = quantizer.rvq.project_out.bias
        assert _max_diff(out["rvq_quantized"][~mask], bias.expand(int((~mask).sum()), -1)) < TOL


def test_saved_folder_rebuilds_without_hub_or_files(fixture, run, tmp_path):
    """The three plugins go into a standalone folder (the Whisper config in the options) and come back."""
    from taste_toolkit.pretrained.standalone import load_components, save_components

    tower = run["tower"]
    save_components(tmp_path, {k: tower[k] for k in ("encoder", "aggregator", "quantizer")})
    config = json.loads((tmp_path / "taste_config.json").read_text())
    assert config["components"]["encoder"]["options"]["whisper_config"]["d_model"] == run["enc"].keys.shape[-1]
    components, _ = load_components(tmp_path)  # allow_external=False: nothing outside the folder
    _, _, inputs, out = fixture
    with torch.no_grad():
        enc = components["encoder"].encode_features(inputs["audio_features"].transpose(1, 2),
                                                    inputs["audio_feature_lengths"])
        agg = components["aggregator"](inputs["asr_token_ids"], run["lengths"], inputs["asr_word_ids"], enc)
        codes = components["quantizer"].encode(agg.embeddings, agg.lengths)
    assert torch.equal(codes, out["rvq_indices"])


@pytest.mark.parametrize("name", [
    "vq.rvq.project_in.weight",
    "audio_joint_encoder_segmenter.audio_segmenter.decoder.layers.1.fc2.bias",
    "audio_joint_encoder_segmenter.audio_encoder.encoder.conv1.weight",
])
def test_wrong_shape_tensor_is_refused_by_name(fixture, name):
    config, tensors, _, _ = fixture
    bad = dict(tensors)
    bad[name] = torch.zeros(*tensors[name].shape[:-1], tensors[name].shape[-1] + 1)
    with pytest.raises(InputError) as info:
        build_audio_tower(config, bad)
    assert f"audio_tower.{name}" in str(info.value)
    assert str(list(tensors[name].shape)) in str(info.value)


@pytest.mark.parametrize("name", [
    "vq.rvq.layers.3._codebook.embed",
    "audio_joint_encoder_segmenter.audio_encoder.encoder.layer_norm.weight",
    "audio_joint_encoder_segmenter.audio_segmenter.decoder.embed_positions.weight",
])
def test_missing_tensor_is_refused_by_name(fixture, name):
    config, tensors, _, _ = fixture
    bad = {k: v for k, v in tensors.items() if k != name}
    with pytest.raises(InputError) as info:
        build_audio_tower(config, bad)
    assert f"Missing tensor audio_tower.{name}" in str(info.value)
    assert str(list(tensors[name].shape)) in str(info.value)


def test_unsupported_forward_type_is_config_error(fixture):
    config, tensors, _, _ = fixture
    config = json.loads(json.dumps(config))
    config["audio_tower_config"]["kwargs_for_joint_encoder_segmenter"]["forward_type"] = "add_and_norm"
    with pytest.raises(ConfigError, match="forward_type"):
        build_audio_tower(config, tensors)
