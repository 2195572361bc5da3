"""Every YAML in hparams/ loads and builds its model; plugin swaps leave no stale options."""

import glob
import os

import pytest
import yaml

from taste_toolkit.errors import ConfigError
from taste_toolkit.hparams_loader import load_hparams, peek_task, resolve_hparams_file
from taste_toolkit.models.tokenizer import TasteModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_YAMLS = sorted(glob.glob(os.path.join(ROOT, "hparams", "*.yaml")) + glob.glob(os.path.join(ROOT, "hparams", "ablations", "*.yaml")))
# Stage-1 tokenizer YAMLs; the other tasks' YAMLs (TASLM, LM-SPT) are tested with their trainers.
YAMLS = [y for y in ALL_YAMLS if peek_task([y]) == "taste"]

EXPECTED = {
    "taste.yaml": ("CrossAttentionAggregator", "ResidualVQQuantizer", "word"),
    "text_only.yaml": ("NoAggregator", "IdentityQuantizer", None),
    "no_vq.yaml": ("CrossAttentionAggregator", "IdentityQuantizer", "word"),
    "last_layer_values.yaml": ("CrossAttentionAggregator", "IdentityQuantizer", "word"),
    "encoder_only.yaml": ("FramesAggregator", "IdentityQuantizer", "frame"),
    "encoder_last_layer_only.yaml": ("FramesAggregator", "IdentityQuantizer", "frame"),
    "word_pointer.yaml": ("CrossAttentionAggregator", "ResidualVQQuantizer", "word"),
    "no_vq_word_pointer.yaml": ("CrossAttentionAggregator", "IdentityQuantizer", "word"),
    "text_only_word_pointer.yaml": ("NoAggregator", "IdentityQuantizer", None),
    "autoregressive_decoder.yaml": ("CrossAttentionAggregator", "ResidualVQQuantizer", "word"),
    "oracle_spans.yaml": ("OracleSpansAggregator", "IdentityQuantizer", "word"),
    "aligned_spans.yaml": ("AlignedSpansAggregator", "ResidualVQQuantizer", "word"),
    "paper_unsupervised.yaml": ("CrossAttentionAggregator", "ResidualVQQuantizer", "word"),
    "prosody_supervision.yaml": ("CrossAttentionAggregator", "ResidualVQQuantizer", "word"),
    "prosody_supervision_relative.yaml": ("CrossAttentionAggregator", "ResidualVQQuantizer", "word"),
    "prosody_speaker_supervision.yaml": ("CrossAttentionAggregator", "ResidualVQQuantizer", "word"),
}


def tiny_overrides(tmp_path):
    # Small decoder so building is fast; paths inside tmp_path.
    return {
        "output_folder": str(tmp_path / "out"),
        "prep_folder": str(tmp_path / "prep"),
        "decoder_options": {
            name: {"d_model": 32, "num_layers": 1, "ffn_dim": 64}
            for name in ("unit_transformer", "word_pointer_transformer", "duration_transformer")
        },
    }


def test_every_yaml_is_listed():
    assert {os.path.basename(y) for y in YAMLS} == set(EXPECTED)


@pytest.mark.parametrize("path", YAMLS, ids=os.path.basename)
def test_yaml_loads_and_builds(path, tmp_path):
    hparams, real, _ = load_hparams(path, tiny_overrides(tmp_path))
    model = hparams["model"]
    assert isinstance(model, TasteModel)
    agg, quant, level = EXPECTED[os.path.basename(path)]
    assert type(model.aggregator).__name__ == agg
    assert type(model.quantizer).__name__ == quant
    assert model.decoder.speech_dim == model.aggregator.output_dim
    if level == "frame":
        assert model.decoder.fusion == "concat"
    # Only trainable parts are checkpointed; the frozen encoder never is.
    recoverables = hparams["checkpointer"].recoverables
    assert "encoder" not in recoverables and "decoder" in recoverables


def test_default_decoder_is_non_autoregressive_and_the_paper_one_is_an_ablation(tmp_path):
    default, _, _ = load_hparams(os.path.join(ROOT, "hparams/taste.yaml"), tiny_overrides(tmp_path))
    assert type(default["decoder"]).__name__ == "DurationTransformerDecoder"
    paper, _, _ = load_hparams(os.path.join(ROOT, "hparams/ablations/autoregressive_decoder.yaml"),
                               tiny_overrides(tmp_path))
    assert type(paper["decoder"]).__name__ == "UnitTransformerDecoder"
    # each under the conditions it was measured with: 50 Hz units for the default, 25 Hz for the paper's
    assert default["units"].options["stack"] == 1 and paper["units"].options["stack"] == 2
    assert paper["number_of_epochs"] == 6 and paper["stages"] == []
    # the paper's staged schedule: 3 text-only epochs, 1 no-VQ, then 4 of TASTE (sessions 12, 15)
    assert default["stages"] == [{"name": "text_only", "epochs": 3}, {"name": "no_vq", "epochs": 1},
                                 {"name": "rvq", "epochs": 4}]
    text_only, _, _ = load_hparams(os.path.join(ROOT, "hparams/ablations/text_only.yaml"), tiny_overrides(tmp_path))
    assert text_only["stages"] == [] and text_only["number_of_epochs"] == 8  # as long as the default's three
    # a half-whitened PCA code space (session 15); the paper's setting keeps random projections, unwhitened
    assert default["quantizer"].projection_whitening == 0.5 and default["quantizer"].projection_trainable
    paper_unsup, _, _ = load_hparams(os.path.join(ROOT, "hparams/ablations/paper_unsupervised.yaml"),
                                     tiny_overrides(tmp_path))
    assert paper_unsup["quantizer"].projection_init == "keep" and paper_unsup["quantizer"].projection_whitening == 0
    # the vocoder underfits: wider, no dropout, more steps and the log-mel loss (session 11)
    assert default["vocoder_options"]["unit_to_spec"] == {"dim": 192, "dropout": 0.0}
    assert default["unit_vocoder_training"] == {"steps": 1500, "mel_weight": 1.0}
    # The units read the fused token states too; one fused AdamW kernel; NewBob (session 12).
    full, _, _ = load_hparams(os.path.join(ROOT, "hparams/taste.yaml"),
                              {"output_folder": str(tmp_path / "full"), "prep_folder": str(tmp_path / "prep")})
    assert full["decoder"].token_context is True
    assert full["opt_class"].keywords["fused"] is True
    assert type(full["lr_annealing"]).__name__ == "NewBobScheduler"
    for frames in ("encoder_only.yaml", "encoder_last_layer_only.yaml"):  # frame-level speech needs it too
        hp, _, _ = load_hparams(os.path.join(ROOT, "hparams/ablations", frames), tiny_overrides(tmp_path))
        assert type(hp["decoder"]).__name__ == "UnitTransformerDecoder" and hp["decoder"].fusion == "concat"


def test_prosody_supervision_is_an_ablation_off_by_default(tmp_path):
    default, _, _ = load_hparams(os.path.join(ROOT, "hparams/taste.yaml"), tiny_overrides(tmp_path))
    assert default["model"].prosody_supervision is None  # weight 0: the paper's loss
    for name, outputs in (("prosody_supervision.yaml", 4), ("prosody_supervision_relative.yaml", 8)):
        hp, _, _ = load_hparams(os.path.join(ROOT, "hparams/ablations", name), tiny_overrides(tmp_path))
        sup = hp["model"].prosody_supervision
        assert sup is not None and sup.weight == 1.0 and sup.head.out_features == outputs
        assert sup.frame_rate == hp["units"].frame_rate and sup.head.in_features == hp["aggregator"].output_dim
        assert hp["checkpointer"].recoverables["prosody_head"] is sup  # resumed with the run
        assert sup.speaker_head is None
    hp, _, _ = load_hparams(os.path.join(ROOT, "hparams/ablations/prosody_speaker_supervision.yaml"),
                            tiny_overrides(tmp_path))
    sup = hp["model"].prosody_supervision
    assert sup.speaker_dim == hp["speaker"].embedding_dim == sup.speaker_head.out_features


def test_last_layer_values_uses_key_tap(tmp_path):
    hparams, _, _ = load_hparams(os.path.join(ROOT, "hparams/ablations/last_layer_values.yaml"), tiny_overrides(tmp_path))
    assert hparams["encoder"].value_layer == -1
    default, _, _ = load_hparams(os.path.join(ROOT, "hparams/taste.yaml"), tiny_overrides(tmp_path))
    assert default["encoder"].value_layer == 1


def test_swap_quantizer_from_command_line_leaves_no_stale_options(tmp_path):
    over = tiny_overrides(tmp_path)
    over["quantizer_name"] = "identity"  # the rvq block keeps rvq-only keys; they must not leak
    hparams, _, _ = load_hparams(os.path.join(ROOT, "hparams/taste.yaml"), over)
    assert type(hparams["quantizer"]).__name__ == "IdentityQuantizer"


def test_override_changes_one_option_of_a_block(tmp_path):
    over = tiny_overrides(tmp_path)
    over["quantizer_options"] = {"rvq": {"codebook_size": 32}}
    hparams, _, _ = load_hparams(os.path.join(ROOT, "hparams/taste.yaml"), over)
    q = hparams["quantizer"]
    assert q.codebook_size == 32 and q.num_quantizers == 4  # other rvq options kept


def test_unknown_plugin_name_is_a_clear_error(tmp_path):
    over = tiny_overrides(tmp_path)
    over["quantizer_name"] = "nope"
    with pytest.raises(ConfigError, match="Available quantizer plugins: .*rvq"):
        load_hparams(os.path.join(ROOT, "hparams/taste.yaml"), over)


def test_misspelt_override_key_is_rejected(tmp_path):
    over = tiny_overrides(tmp_path)
    over["number_of_epoch"] = 3
    with pytest.raises(Exception, match="number_of_epoch"):
        load_hparams(os.path.join(ROOT, "hparams/taste.yaml"), over)


def test_override_file_chain_and_cli_precedence(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("a: 1\nb: {x: 1, y: 2}\n")
    mid = tmp_path / "mid.yaml"
    mid.write_text(yaml.safe_dump({"base": "base.yaml", "overrides": {"a": 2, "b": {"x": 5}}}))
    top = tmp_path / "sub" / "top.yaml"
    top.parent.mkdir()
    top.write_text(yaml.safe_dump({"base": "../mid.yaml", "overrides": {"a": 3}}))
    real, merged = resolve_hparams_file(str(top), "a: 4")
    assert os.path.samefile(real, base)
    assert merged == {"a": 4, "b": {"x": 5}}
    hparams, _, _ = load_hparams(str(top))
    assert hparams == {"a": 3, "b": {"x": 5, "y": 2}}


def test_missing_base_is_a_clear_error(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("base: nowhere.yaml\noverrides: {a: 1}\n")
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        resolve_hparams_file(str(f))


def test_vocoder_options_are_per_plugin_blocks(tmp_path):
    """taste.yaml keeps one vocoder block per plugin; the export builds the chosen one from it."""
    import torch

    from taste_toolkit.training.export import build_vocoder

    hparams, _, _ = load_hparams(os.path.join(ROOT, "hparams", "taste.yaml"), tiny_overrides(tmp_path))
    blocks = hparams["vocoder_options"]
    assert set(blocks) == {"griffin_lim", "unit_to_spec"} and blocks["griffin_lim"] == {"n_iter": 32}
    units = hparams["units"]
    g = torch.Generator().manual_seed(0)
    units.fit([0.1 * torch.randn(64000, generator=g) for _ in range(3)])  # >= 256 unit frames
    assert hparams["vocoder_name"] == "unit_to_spec"  # trained by the recipe before the export
    vocoder = build_vocoder("griffin_lim", blocks, units)
    assert vocoder.registry_name == "griffin_lim" and vocoder.options["n_iter"] == 32
    with pytest.raises(ConfigError, match="griffin_lim: {n_iter: 32}"):
        build_vocoder("griffin_lim", {"n_iter": 32}, units)  # the old flat form
    with pytest.raises(ConfigError, match="unit_to_spec: {checkpoint"):
        build_vocoder("unit_to_spec", blocks, units)


def test_library_debug_records_stay_out_of_the_experiment_log():
    import logging

    from taste_toolkit.hparams_loader import QUIET_LOGGERS, quiet_library_debug_logs

    root = logging.getLogger()
    saved_root, saved = root.level, {n: logging.getLogger(n).level for n in QUIET_LOGGERS}
    try:
        root.setLevel(logging.DEBUG)  # SpeechBrain's experiment log: everything to log.txt
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        assert logging.getLogger("numba.core.ssa").isEnabledFor(logging.DEBUG)
        quiet_library_debug_logs()
        assert not logging.getLogger("numba.core.ssa").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("matplotlib.font_manager").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("numba.core.ssa").isEnabledFor(logging.INFO)
        assert logging.getLogger("taste_toolkit.training").isEnabledFor(logging.DEBUG)  # ours stay
    finally:
        root.setLevel(saved_root)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
