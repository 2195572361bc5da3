"""``taste tokenize`` killed with SIGKILL mid-run and rerun: every item exactly once, none lost.

The kill is real (a subprocess, killed once some records are on disk, wherever it
is: mid-batch, mid-write); the rerun resumes. The final file must equal, line for
line, the output of an uninterrupted run.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from taste_toolkit.api import TasteTokenizer

SR = 16000
TEXTS = ["the cat sat on the mat", "a dog ran far away", "hello world again", "the dog sat", "a cat ran"]
N_ITEMS = 45

pytestmark = pytest.mark.slow  # ~35 s: three processes that each load torch and the model


@pytest.fixture(scope="module")
def setup(tiny_taste_model, tiny_whisper_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("tok_kill")
    model, text_tok = tiny_taste_model(tiny_whisper_dir, TEXTS * 5, root / "sp")
    TasteTokenizer(model, text_tok).save_pretrained(root / "model")
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(N_ITEMS):
        wav = (0.1 * torch.randn(int(SR * (0.4 + 0.02 * (i % 7))), generator=g)).numpy().astype(np.float32)
        if i % 17 == 5:
            wav[3] = np.nan  # a bad item: logged in .errors, never in the output
        path = root / f"u{i:02d}.wav"
        sf.write(path, wav, SR, subtype="FLOAT")
        rows.append([f"u{i:02d}", f"{len(wav) / SR:.3f}", str(path), "1", TEXTS[i % len(TEXTS)]])
    manifest = root / "items.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([["ID", "duration", "wav", "spk_id", "wrd"]] + rows)
    bad = {r[0] for i, r in enumerate(rows) if i % 17 == 5}
    return {"root": root, "model": str(root / "model"), "manifest": str(manifest), "bad": bad,
            "good": [r[0] for r in rows if r[0] not in bad]}


def _cmd(setup, output):
    return [sys.executable, "-m", "taste_toolkit.cli", "tokenize", "--model", setup["model"],
            "--manifest", setup["manifest"], "--output", str(output), "--batch-size", "1", "--no-progress"]


ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _ids(path):
    return [json.loads(line)["id"] for line in open(path).read().splitlines()]


def test_sigkill_then_rerun_neither_duplicates_nor_loses(setup, tmp_path):
    reference = tmp_path / "reference.jsonl"
    subprocess.run(_cmd(setup, reference), env=ENV, check=True, capture_output=True, timeout=300)
    assert _ids(reference) == setup["good"]

    out = tmp_path / "killed.jsonl"
    proc = subprocess.Popen(_cmd(setup, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and out.stat().st_size > 0 and out.read_bytes().count(b"\n") >= 5:
                time.sleep(0.013)  # land somewhere inside the next item, not right after a flush
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done_before = out.read_bytes().count(b"\n")
    assert 5 <= done_before < len(setup["good"])

    rerun = subprocess.run(_cmd(setup, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout)
    assert summary["already_done"] == done_before
    assert summary["tokenized"] == len(setup["good"]) - done_before
    assert out.read_text().splitlines() == reference.read_text().splitlines()  # all, once each, same tokens
    errors = [json.loads(line)["id"] for line in open(str(out) + ".errors")]
    assert set(errors) == setup["bad"]
    print(f"\ntokenize killed after {done_before} of {len(setup['good'])} records; rerun added "
          f"{summary['tokenized']}; final file identical to an uninterrupted run")
