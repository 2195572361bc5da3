"""Past one process: the stage-1 recipe and ``taste tokenize`` under ``torchrun`` (2 ranks, gloo, CPU).

* ``torchrun --standalone --nproc_per_node=2 recipes/librispeech/train.py hparams/taste.yaml``
  (through ``tests/_ddp_train_driver.py``, which runs the recipe unchanged and
  dumps each rank's weights when ``fit`` returns): SpeechBrain's DDP really
  runs (2 ranks, gloo, the model wrapped), the ranks train on different
  batches, and they end with identical weights -- parameters and buffers (the
  RVQ's EMA codebooks) -- equal to the checkpoint rank 0 saved.
* ``taste tokenize`` under ``torchrun`` writes one shard per rank; ``--merge``
  gives, line for line, the file of a one-process run (bad items in
  ``.errors``, shards removed).
"""

import csv
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "_ddp_train_driver.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# Every process imports this working tree's taste_toolkit, one thread each (2 ranks on shared cores).
ENV = dict(os.environ, OMP_NUM_THREADS="1",
           PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p))
ENV.pop("RANK", None), ENV.pop("WORLD_SIZE", None), ENV.pop("LOCAL_RANK", None)

pytestmark = pytest.mark.slow


def run(cmd, timeout=900):
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    return proc


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from taste_toolkit.data.synthetic_corpus import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(root, seed=7, num_speakers=2, utterances_per_split={"train": 6, "dev": 1, "test": 1},
                    num_workers=0, progress=False)
    return root


def test_torchrun_training_keeps_ranks_identical(tiny_corpus, tmp_path):
    out = tmp_path / "out"
    run(TORCHRUN + [
        DRIVER, "hparams/taste.yaml", "--distributed_backend=gloo", "--device=cpu",
        f"--data_folder={tiny_corpus}", f"--prep_folder={tmp_path / 'prep'}", f"--output_folder={out}",
        "--num_units=16", "--codebook_size=16", "--number_of_epochs=1", "--text_only_epochs=0", "--no_vq_epochs=0", "--export_folder=",
        "--test_splits=[]",
        "--decoder_options={unit_transformer: {d_model: 32, num_layers: 1, ffn_dim: 64, dropout: 0.1}, "
        "duration_transformer: {d_model: 32, num_layers: 1, word_layers: 1, ffn_dim: 64, dropout: 0.1}}",
        "--dynamic_batch_sampler_train={max_batch_length: 6, num_buckets: 2, shuffle: True, batch_ordering: random}",
        "--noprogressbar",
    ])
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for r, report in enumerate(ranks):
        assert (report["rank"], report["world_size"], report["backend"], report["ddp"]) == (r, 2, "gloo", True)
    # DDP shards the batches: each rank ran its own, together every training utterance.
    seen = [{uid for _, ids in report["batches"] for uid in ids} for report in ranks]
    with open(out.parent / "prep" / "manifests" / os.path.basename(tiny_corpus) / "train.csv") as f:
        train_ids = {row["ID"] for row in csv.DictReader(f)}
    assert seen[0] and seen[1] and seen[0] | seen[1] == train_ids
    assert [ids for _, ids in ranks[0]["batches"]] != [ids for _, ids in ranks[1]["batches"]]

    a, b = ranks[0]["weights"], ranks[1]["weights"]
    for module in a:
        assert a[module].keys() == b[module].keys() and a[module]
        for k in a[module]:
            assert torch.equal(a[module][k], b[module][k]), f"{module}.{k} differs between the ranks"
    # what rank 0 checkpointed is what every rank holds
    (ckpt,) = glob.glob(str(out / "save" / "CKPT+*"))
    assert yaml.safe_load(open(os.path.join(ckpt, "CKPT.yaml")))["end-of-epoch"]
    for module in a:
        saved = torch.load(os.path.join(ckpt, f"{module}.ckpt"), weights_only=True)
        assert saved.keys() == a[module].keys()
        for k in saved:
            assert torch.equal(saved[k], a[module][k]), f"the checkpoint's {module}.{k} is not what the ranks hold"
    epochs = [ln for ln in open(out / "train_log.txt") if ln.startswith("epoch:")]
    assert len(epochs) == 1  # logged once (rank 0), not once per rank


# ---------------------------------------------------------------- tokenize

SR = 16000
TEXTS = ["the cat sat on the mat", "a dog ran far away", "hello world again", "the dog sat", "a cat ran"]
N_ITEMS = 9  # odd: the shards have different lengths
BAD = {"u04"}  # a NaN sample: skipped into .errors by whichever rank has it


@pytest.fixture(scope="module")
def tokenize_setup(tiny_taste_model, tiny_whisper_dir, tmp_path_factory):
    from taste_toolkit.api import TasteTokenizer

    root = tmp_path_factory.mktemp("tok_ddp")
    model, text_tok = tiny_taste_model(tiny_whisper_dir, TEXTS * 5, root / "sp")
    TasteTokenizer(model, text_tok).save_pretrained(root / "model")
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(N_ITEMS):
        wav = (0.1 * torch.randn(int(SR * (0.4 + 0.05 * (i % 4))), generator=g)).numpy().astype(np.float32)
        if f"u{i:02d}" in BAD:
            wav[3] = np.nan
        path = root / f"u{i:02d}.wav"
        sf.write(path, wav, SR, subtype="FLOAT")
        rows.append([f"u{i:02d}", f"{len(wav) / SR:.3f}", path.name, "1", TEXTS[i % len(TEXTS)]])
    manifest = root / "items.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([["ID", "duration", "wav", "spk_id", "wrd"]] + rows)
    return {"model": str(root / "model"), "manifest": str(manifest), "ids": [r[0] for r in rows]}


def tokenize_args(setup, output):
    return ["-m", "taste_toolkit.cli", "tokenize", "--model", setup["model"], "--manifest", setup["manifest"],
            "--output", str(output), "--batch-size", "2", "--no-progress"]


def test_torchrun_tokenize_shards_then_merge_equal_one_process(tokenize_setup, tmp_path):
    reference = tmp_path / "one_process.jsonl"
    run([sys.executable] + tokenize_args(tokenize_setup, reference))
    good = [i for i in tokenize_setup["ids"] if i not in BAD]
    assert [json.loads(line)["id"] for line in reference.read_text().splitlines()] == good

    out = tmp_path / "sharded.jsonl"
    proc = run(TORCHRUN + tokenize_args(tokenize_setup, out))
    assert not out.exists()
    for rank in (0, 1):  # rank r took items[r::2]
        shard = [json.loads(line)["id"] for line in open(f"{out}.rank{rank}").read().splitlines()]
        assert shard == [i for i in tokenize_setup["ids"][rank::2] if i not in BAD]
    assert "--merge" in proc.stdout  # each rank says what to do next

    merged = run([sys.executable, "-m", "taste_toolkit.cli", "tokenize", "--merge", str(out),
                  "--manifest", tokenize_setup["manifest"]])
    summary = json.loads(merged.stdout)
    assert summary == {"output": str(out), "records": len(good), "shards": 2, "errors": len(BAD),
                       "missing": len(BAD)}
    assert out.read_text().splitlines() == reference.read_text().splitlines()  # same tokens, same order
    assert {json.loads(line)["id"] for line in open(f"{out}.errors")} == BAD
    assert not glob.glob(f"{out}.rank*")  # merged shards are removed
