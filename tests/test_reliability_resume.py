"""Every recipe killed with SIGKILL mid-epoch and restarted ends with the weights of an uninterrupted run.

Each recipe (``task: taste``, ``task: taslm``, ``task: lmspt``, all through
``recipes/librispeech/train.py``) runs at debug size on a tiny corpus (as in
``test_recipe.py``, ``test_taslm_recipe.py`` and ``test_lmspt_recipe.py``), with an
intra-epoch checkpoint after every step (``--ckpt_interval_steps=1``). The
interrupted run is killed at whatever point it has reached once its first
intra-epoch checkpoint after epoch 1 exists (mid-step, or mid-save), then the same
command is rerun. On CPU with a fixed seed the final weights must be bit-identical.
"""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from test_taslm_recipe import TINY_LM, tiny_setup  # noqa: F401  (fixture: tiny tokenizer + manifests)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "recipes", "librispeech", "train.py")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from taste_toolkit.data.synthetic_corpus import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(root, seed=7, num_speakers=2, utterances_per_split={"train": 6, "dev": 1, "test": 1},
                    num_workers=0, progress=False)
    return root


def recipe_cmd(corpus, prep, out, *extra):
    return [
        sys.executable, TRAIN, "hparams/taste.yaml",
        f"--data_folder={corpus}", f"--prep_folder={prep}", f"--output_folder={out}",
        "--num_units=16", "--codebook_size=16", "--number_of_epochs=2", "--text_only_epochs=0", "--no_vq_epochs=0", "--export_folder=",
        "--decoder_options={unit_transformer: {d_model: 32, num_layers: 1, ffn_dim: 64, dropout: 0.1}, "
        "duration_transformer: {d_model: 32, num_layers: 1, word_layers: 1, ffn_dim: 64, dropout: 0.1}}",
        "--dynamic_batch_sampler_train={max_batch_length: 6, num_buckets: 2, shuffle: True, batch_ordering: random}",
        "--test_splits=[]", "--noprogressbar", *extra,
    ]


def taslm_cmd(setup, out, *extra):
    """``task: taslm`` at debug size: 12 training utterances, one per step, LoRA dropout on."""
    return [
        sys.executable, TRAIN, "hparams/taslm_token.yaml", f"--output_folder={out}",
        f"--tokenizer_folder={setup / 'tokenizer'}", f"--manifest_folder={setup / 'manifests'}",
        f"--token_cache={setup / 'cache'}", f"--text_lm_folder={setup / 'text_lm'}", f"--text_lm_options={TINY_LM}",
        "--num_quantizers=2", "--codebook_size=16", "--batch_size=1", "--number_of_epochs=2",
        "--lora={r: 2, alpha: 4, dropout: 0.1, target_modules: [q_proj, v_proj]}",
        f"--minimal_pairs={{folder: {setup / 'minimal_pairs'}, num_pairs: 2, num_speakers: 2, max_chars: 40}}",
        "--noprogressbar", *extra,
    ]


def lmspt_cmd(corpus, prep, whisper, out, *extra):
    """``task: lmspt`` at debug size on the tiny random Whisper."""
    return [
        sys.executable, TRAIN, "hparams/lmspt_25hz.yaml", f"--data_folder={corpus}", f"--prep_folder={prep}",
        f"--output_folder={out}", f"--whisper_source={whisper}", "--number_of_epochs=2", "--d_model=32",
        "--semantic_codebook_size=16", "--acoustic_codebook_size=16", "--acoustic_num_quantizers=2",
        "--export_folder=", "--test_splits=[]", "--noprogressbar",
        "--dynamic_batch_sampler_train={max_batch_length: 6, num_buckets: 2, shuffle: True, batch_ordering: random}",
        *extra,
    ]


# The recipe subprocesses import this working tree's taste_toolkit (not whatever copy is installed).
ENV = dict(os.environ, OMP_NUM_THREADS="1",
           PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p))


def run(cmd):
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nSTDOUT:\n{proc.stdout[-2000:]}\nSTDERR:\n{proc.stderr[-4000:]}"
    return proc


def checkpoints(out):
    found = []
    for folder in glob.glob(os.path.join(out, "save", "CKPT+*")):
        meta_file = os.path.join(folder, "CKPT.yaml")
        try:  # the running recipe may delete an old checkpoint between the glob and the read
            with open(meta_file) as f:
                meta = yaml.safe_load(f) or {}
        except FileNotFoundError:
            continue
        found.append((meta.get("unixtime", 0), folder, meta))
    return [(folder, meta) for _, folder, meta in sorted(found)]


def final_weights(out, modules):
    folder = [f for f, meta in checkpoints(out) if meta.get("end-of-epoch")][-1]
    return {m: torch.load(os.path.join(folder, f"{m}.ckpt"), weights_only=True) for m in modules}


def kill_when_mid_epoch_2(cmd, out, timeout=600):
    """Start ``cmd``; SIGKILL it as soon as an intra-epoch checkpoint of epoch 2 exists."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    start = time.time()
    try:
        while time.time() - start < timeout:
            if proc.poll() is not None:
                pytest.fail(f"the run ended (code {proc.returncode}) before it could be killed:\n{proc.stderr.read()[-3000:]}")
            ckpts = checkpoints(out)
            if any(m.get("end-of-epoch") for _, m in ckpts) and not ckpts[-1][1].get("end-of-epoch"):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return ckpts[-1][0]
            time.sleep(0.05)
        pytest.fail("no intra-epoch checkpoint of epoch 2 appeared in time")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def kill_resume_and_compare(make_cmd, straight, resumed, modules):
    """Run ``make_cmd(out)`` straight; run it again killed mid-epoch 2 and resumed; compare the final weights.

    Returns the step of epoch 2 the killed run had checkpointed.
    """
    run(make_cmd(straight))
    kill_when_mid_epoch_2(make_cmd(resumed, "--ckpt_interval_steps=1"), resumed)
    latest, meta = checkpoints(resumed)[-1]  # what the restart must load: an intra-epoch checkpoint
    assert not meta["end-of-epoch"]
    with open(os.path.join(latest, "brain.ckpt")) as f:
        step = yaml.safe_load(f)["step"]
    assert step >= 1
    run(make_cmd(resumed, "--ckpt_interval_steps=1"))
    assert f"Loading a checkpoint from {latest}" in open(os.path.join(resumed, "log.txt")).read()

    a, b = final_weights(straight, modules), final_weights(resumed, modules)
    max_diff, worst = 0.0, None
    for module in a:
        assert a[module].keys() == b[module].keys()
        assert a[module], f"{module}.ckpt holds no tensor"
        for k in a[module]:
            if a[module][k].numel():
                diff = float((a[module][k].double() - b[module][k].double()).abs().max())
                if diff > max_diff or worst is None:
                    max_diff, worst = max(diff, max_diff), f"{module}.{k}"
    print(f"\nkilled after epoch-2 step {step}; max |weight difference| after resuming = {max_diff}")
    assert max_diff == 0.0, f"{worst} differs after resume by {max_diff}"
    # both runs logged the same two epochs (the resumed one once each)
    lines = [[ln for ln in open(os.path.join(o, "train_log.txt")) if ln.startswith("epoch:")] for o in (straight, resumed)]
    assert len(lines[0]) == len(lines[1]) == 2
    assert lines[0][1].split("valid loss:")[1] == lines[1][1].split("valid loss:")[1]
    return step


def test_sigkill_mid_epoch_resumes_to_identical_weights(tiny_corpus, tmp_path):
    prep = tmp_path / "prep"
    kill_resume_and_compare(lambda out, *extra: recipe_cmd(tiny_corpus, prep, out, *extra),
                            tmp_path / "straight", tmp_path / "resumed", ("aggregator", "quantizer", "decoder"))


def test_taslm_sigkill_mid_epoch_resumes_to_identical_weights(tiny_setup, tmp_path):  # noqa: F811
    kill_resume_and_compare(lambda out, *extra: taslm_cmd(tiny_setup, out, *extra),
                            tmp_path / "straight", tmp_path / "resumed", ("trainable",))


def test_lmspt_sigkill_mid_epoch_resumes_to_identical_weights(tiny_corpus, tiny_whisper_dir, tmp_path):
    prep = tmp_path / "prep"
    modules = ("semantic_downsampler", "acoustic_downsampler", "semantic_quantizer", "acoustic_quantizer",
               "decoder", "aux_decoder")
    kill_resume_and_compare(lambda out, *extra: lmspt_cmd(tiny_corpus, prep, tiny_whisper_dir, out, *extra),
                            tmp_path / "straight", tmp_path / "resumed", modules)
