"""End-to-end recipe checks on a tiny synthetic corpus (marked slow; they run in CI).

* every YAML trains for an epoch and writes its logs, checkpoint and test results;
* an interrupted run resumed from its checkpoint ends with the same weights and
  the same epoch-2 losses as an uninterrupted run;
* a short training makes the loss fall.
"""

import glob
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "recipes", "librispeech", "train.py")
YAMLS = ["hparams/taste.yaml"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "hparams", "ablations", "*.yaml"))
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from taste_toolkit.data.synthetic_corpus import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(root, seed=7, num_speakers=2, utterances_per_split={"train": 6, "dev": 2, "test": 2}, num_workers=0, progress=False)
    return root


def run_recipe(yaml_file, corpus, prep, out, *extra):
    cmd = [
        sys.executable, TRAIN, yaml_file,
        f"--data_folder={corpus}", f"--prep_folder={prep}", f"--output_folder={out}",
        "--num_units=16", "--codebook_size=16",
        "--decoder_options={unit_transformer: {d_model: 32, num_layers: 1, ffn_dim: 64, dropout: 0.1}, "
        "duration_transformer: {d_model: 32, num_layers: 1, word_layers: 1, ffn_dim: 64, dropout: 0.1, token_context: True}}",
        "--dynamic_batch_sampler_train={max_batch_length: 12, num_buckets: 2, shuffle: True, batch_ordering: random}",
        "--unit_vocoder_training={steps: 3, batch_size: 2, crop_units: 8}",  # a trained vocoder is exported
        "--text_only_epochs=0", "--no_vq_epochs=0",  # one stage of --number_of_epochs (test_recipe_stages.py runs the stages)
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    return proc


def epoch_lines(out):
    with open(os.path.join(out, "train_log.txt")) as f:
        return [line for line in f if line.startswith("epoch:")]


def latest_ckpt(out):
    return sorted(glob.glob(os.path.join(out, "save", "CKPT+*")))[-1]


@pytest.mark.parametrize("yaml_file", YAMLS, ids=os.path.basename)
def test_every_yaml_trains_and_tests(yaml_file, tiny_corpus, tmp_path):
    out = tmp_path / "out"
    # The default speech-out path (Whisper k-means units, speaker vectors, trained vocoder) is
    # run with taste.yaml; the ablations, which change the tokenizer only, use the cheap one.
    cheap = [] if yaml_file == "hparams/taste.yaml" else [
        "--units_name=mel_kmeans", "--speaker_name=none", "--vocoder_name=griffin_lim"]
    if "speaker_supervision" in yaml_file:  # its tokens are trained towards the speaker vectors
        cheap.remove("--speaker_name=none")
    # word_pointer.yaml takes its word times from the Whisper aligner (as on LibriSpeech); the
    # other word-pointer YAMLs read the corpus' metadata.jsonl.
    aligner = ["--word_times=aligner"] if os.path.basename(yaml_file) == "word_pointer.yaml" else []
    proc = run_recipe(yaml_file, tiny_corpus, tmp_path / "prep", out, "--number_of_epochs=1", *cheap, *aligner)
    if aligner:  # one cached alignment per split
        assert len(glob.glob(str(tmp_path / "prep" / "word_times" / "*.json"))) == 3
    results = json.loads((out / "test_results.json").read_text())["test"]
    assert 0.0 <= results["unit_top1"] <= results["unit_top5"] <= 1.0
    assert "unit_top5=" in proc.stdout  # the summary is printed
    for name in ("train_log.txt", "hyperparams.yaml", "env.log", "curves.png"):
        assert (out / name).exists()
    ckpt = latest_ckpt(out)
    assert os.path.exists(os.path.join(ckpt, "decoder.ckpt"))
    assert not os.path.exists(os.path.join(ckpt, "encoder.ckpt"))  # frozen encoder never saved
    if not cheap:  # the export ships the trained vocoder, conditioned on the speaker vector
        from taste_toolkit.api import TasteTokenizer

        tok = TasteTokenizer.from_pretrained(out / "tokenizer")
        assert tok.info()["plugins"]["vocoder"] == "unit_to_spec" and tok.info()["plugins"]["units"] == "whisper_kmeans"
        assert tok.vocoder.speaker_dim == tok.speaker.embedding_dim > 0 and tok.model.decoder.speaker_dim == 0
    if os.path.basename(yaml_file).startswith("prosody_"):  # its loss is trained and logged, on train and dev
        assert all("prosody_loss" in line.split("valid")[0] and "prosody_loss" in line.split("valid", 1)[1]
                   for line in epoch_lines(out)), epoch_lines(out)
    if "text_only" not in yaml_file:
        assert results["token_rate_hz"] > 0
        if not any(k in os.path.basename(yaml_file) for k in ("encoder", "oracle")):  # no attention there
            assert (out / "attention.png").stat().st_size > 1000


def test_resume_matches_uninterrupted_run(tiny_corpus, tmp_path):
    prep = tmp_path / "prep"
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_recipe("hparams/taste.yaml", tiny_corpus, prep, straight, "--number_of_epochs=2")
    run_recipe("hparams/taste.yaml", tiny_corpus, prep, resumed, "--number_of_epochs=1")  # "interrupted" after 1 epoch
    run_recipe("hparams/taste.yaml", tiny_corpus, prep, resumed, "--number_of_epochs=2")  # resumes from the checkpoint
    a, b = epoch_lines(straight), epoch_lines(resumed)
    assert len(a) == len(b) == 2
    assert a[1] == b[1], f"epoch-2 losses differ:\n{a[1]}\n{b[1]}"
    # Same batches, RNG state and optimizer state on CPU: the weights (EMA codebooks
    # included) are bit-identical, as tests/test_reliability_resume.py also asserts
    # for a run killed mid-epoch.
    max_diff, worst = 0.0, None
    for module in ("aggregator", "quantizer", "decoder"):
        sa = torch.load(os.path.join(latest_ckpt(straight), f"{module}.ckpt"), weights_only=True)
        sb_ = torch.load(os.path.join(latest_ckpt(resumed), f"{module}.ckpt"), weights_only=True)
        assert sa.keys() == sb_.keys()
        for k in sa:
            diff = float((sa[k].double() - sb_[k].double()).abs().max()) if sa[k].numel() else 0.0
            if diff > max_diff:
                max_diff, worst = diff, f"{module}.{k}"
    print(f"\nresumed after epoch 1; max |weight difference| to the uninterrupted run = {max_diff}")
    assert max_diff == 0.0, f"{worst} differs after resume by {max_diff}"


def test_loss_falls(tiny_corpus, tmp_path):
    out = tmp_path / "out"
    run_recipe("hparams/taste.yaml", tiny_corpus, tmp_path / "prep", out, "--number_of_epochs=6", "--lr=0.003")
    lines = epoch_lines(out)
    losses = [float(line.split("train loss: ")[1].split(",")[0]) for line in lines]
    assert losses[-1] < 0.8 * losses[0], losses
