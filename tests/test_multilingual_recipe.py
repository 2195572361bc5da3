"""recipes/multilingual: its YAMLs load with their language, its preparation reads every layout, train.py runs."""

import glob
import json
import os
import subprocess
import sys

import pytest
import soundfile as sf

from taste_toolkit.errors import ConfigError
from taste_toolkit.hparams_loader import load_hparams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "multilingual")
YAMLS = sorted(glob.glob(os.path.join(RECIPE, "hparams", "*.yaml")))
sys.path.insert(0, RECIPE)

from multilingual_prepare import prepare_multilingual_corpus  # noqa: E402


@pytest.mark.parametrize("path", YAMLS, ids=os.path.basename)
def test_yaml_sets_the_language_everywhere(path, tmp_path):
    from taste_toolkit.data.corpus_languages import canonical_language
    from taste_toolkit.languages import get_language

    hparams, _, _ = load_hparams(path, {"output_folder": str(tmp_path / "o"), "prep_folder": str(tmp_path / "p")})
    language = os.path.basename(path)[len("taste_"):-len(".yaml")]
    assert hparams["language"] == language == hparams["corpus_options"]["language"]
    assert canonical_language(language) == get_language(language).code  # corpus and registry agree


def _hparams(tmp_path, data_folder="", language="es", **extra):
    return dict(data_folder=data_folder, corpus_folder=str(tmp_path / "corpus"), language=language,
                corpus_options=dict(seed=1, num_speakers=1, utterances_per_split={"train": 2, "test": 1},
                                    num_workers=0, progress=False, language=language),
                train_splits=["train"], dev_splits=[], test_splits=["test"], prep_folder=str(tmp_path / "prep"),
                max_duration=30.0, skip_prep=False, **extra)


def test_prepare_embedded_commonvoice_and_mls(tmp_path):
    manifests, train = prepare_multilingual_corpus(_hparams(tmp_path))  # the embedded Spanish corpus
    assert train == "train" and sum(1 for _ in open(manifests["train"], encoding="utf-8")) == 3
    with open(os.path.join(tmp_path, "corpus", ".corpus_done.json"), encoding="utf-8") as f:
        assert json.load(f)["options"]["language"] == "es"

    cv = tmp_path / "cv" / "es"
    os.makedirs(cv / "clips")
    sf.write(cv / "clips" / "a.wav", [0.1, -0.1] * 8000, 16000)  # CV ships MP3; any readable file works
    for split in ("train", "test"):
        (cv / f"{split}.tsv").write_text("client_id\tpath\tsentence\nspk\ta.wav\tＨｏｌａ\n", encoding="utf-8")
    manifests, _ = prepare_multilingual_corpus(_hparams(tmp_path, str(cv)))
    with open(manifests["test"], encoding="utf-8") as f:
        assert f.read().splitlines()[1].endswith(",spk,Hola")

    with pytest.raises(ConfigError, match="corpus_options.language"):
        prepare_multilingual_corpus(dict(_hparams(tmp_path), language="de"))


@pytest.mark.slow
def test_train_runs_on_the_embedded_spanish_corpus(tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable, os.path.join(RECIPE, "train.py"), os.path.join(RECIPE, "hparams", "taste_es.yaml"),
        f"--corpus_folder={tmp_path / 'corpus'}", f"--prep_folder={tmp_path / 'prep'}", f"--output_folder={out}",
        "--corpus_options={num_speakers: 2, utterances_per_split: {train: 6, dev: 2, test: 2}, num_workers: 0}",
        "--number_of_epochs=1", "--text_only_epochs=0", "--no_vq_epochs=0", "--num_units=16", "--codebook_size=16", "--probe_train_utterances=8",
        "--decoder_options={unit_transformer: {d_model: 32, num_layers: 1, ffn_dim: 64, dropout: 0.1}}",
        "--dynamic_batch_sampler_train={max_batch_length: 12, num_buckets: 2, shuffle: True, batch_ordering: random}",
        "--unit_vocoder_training={steps: 3, batch_size: 2, crop_units: 8}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(out / "test_results.json", encoding="utf-8") as f:
        assert "loss" in json.load(f)["test"]
    with open(tmp_path / "corpus" / "train" / "metadata.jsonl", encoding="utf-8") as f:
        assert json.loads(f.readline())["voice"].startswith("es+")
