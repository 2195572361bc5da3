"""Config errors: one clear ConfigError before any heavy work (corpus synthesis, unit fitting, training).

Checked on the recipe's own loading path (``load_hparams`` / ``setup_experiment`` /
``recipes/librispeech/train.py``): unknown keys, wrong types, out-of-range values,
unfilled ``!PLACEHOLDER`` values, bad plugin options and incompatible plugin dimensions.
"""

import os
import subprocess
import sys
import time

import pytest

from taste_toolkit.errors import ConfigError
from taste_toolkit.hparams_loader import check_config, load_hparams, setup_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASTE = os.path.join(ROOT, "hparams", "taste.yaml")
TASTE_TEXT = open(TASTE).read()
SMALL = {"decoder_options": {"unit_transformer": {"d_model": 32, "num_layers": 1, "ffn_dim": 64},
                             "duration_transformer": {"d_model": 32, "num_layers": 1, "word_layers": 1, "ffn_dim": 64}}}


def _paths(tmp_path):
    return {"output_folder": str(tmp_path / "out"), "prep_folder": str(tmp_path / "prep"),
            "corpus_folder": str(tmp_path / "corpus")}


def test_unknown_keys_are_named_with_suggestions_before_building(tmp_path):
    start = time.time()
    with pytest.raises(ConfigError) as err:
        load_hparams(TASTE, {**_paths(tmp_path), "nubmer_of_epochs": 3, "lerning_rate": 0.1})
    msg = str(err.value)
    assert "'nubmer_of_epochs'" in msg and "did you mean number_of_epochs" in msg and "'lerning_rate'" in msg
    assert time.time() - start < 2.0  # nothing was built (building loads Whisper)


def test_wrong_types_all_reported_in_one_error():
    bad = {
        "number_of_epochs": "abc",
        "train_splits": "train",
        "cache_encoder_outputs": "yes",
        "decoder_options": {"unit_transformer": "big"},
        "dynamic_batch_sampler_train": {"max_batch_length": "long"},
    }
    with pytest.raises(ConfigError) as err:
        check_config(TASTE_TEXT, bad, "taste.yaml")
    msg = str(err.value)
    for where in ("number_of_epochs must be an int", "train_splits must be a list", "cache_encoder_outputs must be a bool",
                  "decoder_options.unit_transformer must be a mapping",
                  "dynamic_batch_sampler_train.max_batch_length must be an int"):
        assert where in msg, (where, msg)
    assert msg.count(" must be ") == 5


def test_numbers_read_as_strings_are_converted_and_ranges_checked():
    assert check_config(TASTE_TEXT, {"lr": "1e-3"})["lr"] == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as text
    with pytest.raises(ConfigError) as err:
        check_config(TASTE_TEXT, {"number_of_epochs": 0, "lr": -0.1, "codebook_size": 1, "dev_splits": []})
    msg = str(err.value)
    assert "number_of_epochs must be >= 1" in msg and "lr must be > 0" in msg
    assert "codebook_size must be >= 2" in msg and "dev_splits must name at least one split" in msg


def test_unfilled_placeholders_are_listed(tmp_path):
    text = "data_folder: !PLACEHOLDER\nmodel:\n    source: !PLACEHOLDER\n    layers: 2\nlr: 0.1\n"
    with pytest.raises(ConfigError, match=r"data_folder, model.source are !PLACEHOLDER: give --data_folder=\.\.\. --model.source=\.\.\."):
        check_config(text, {})
    assert check_config(text, {"data_folder": "/data", "model": {"source": "x"}}) == {"data_folder": "/data", "model": {"source": "x"}}
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text(text)
    with pytest.raises(ConfigError, match="data_folder"):
        load_hparams(str(yaml_file), {"model": {"source": "x"}})


def test_setup_experiment_refuses_before_creating_the_experiment(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="unknown key 'test_split'"):
        setup_experiment([TASTE, f"--output_folder={out}", "--test_split=[test]"])
    assert not out.exists()


def test_plugin_option_and_dimension_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="Unknown option.*'d_modle'"):
        load_hparams(TASTE, {**_paths(tmp_path), "decoder_options": {"duration_transformer": {"d_modle": 32}}})
    with pytest.raises(ConfigError, match="Incompatible plugins: quantizer input_dim=64"):
        load_hparams(TASTE, {**_paths(tmp_path), **SMALL, "speech_dim": 64})


def test_recipe_stops_before_synthesizing_or_preparing(tmp_path):
    """Through train.py itself: an error found while building still comes before any data work."""
    override, expected = "--speech_dim=64", "Incompatible plugins"
    paths = _paths(tmp_path)
    cmd = [sys.executable, os.path.join(ROOT, "recipes", "librispeech", "train.py"), TASTE,
           *(f"--{k}={v}" for k, v in paths.items()), override]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("taste_toolkit.errors.ConfigError") and expected in last, proc.stderr[-2000:]
    assert not os.path.exists(paths["corpus_folder"]) and not os.path.exists(paths["prep_folder"])
