"""Corrupt or half-written state: checkpoints, manifests, caches.

* a truncated / modified / unreadable latest checkpoint -> the previous one is loaded, with a warning;
* a save interrupted half-way never becomes a checkpoint (its meta file is written last);
* a truncated manifest is detected and rebuilt by the recipe's data preparation;
* the curves history survives a garbled file.
"""

import csv
import logging
import os
import sys

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer, mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.epoch_loop import EpochCounter

from taste_toolkit.errors import MissingResourceError
from taste_toolkit.training.checkpoints import CHECKSUMS_KEY, RobustCheckpointer, make_robust

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(tmp_path, cls=RobustCheckpointer):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    counter = EpochCounter(10)
    return model, counter, cls(tmp_path / "save", recoverables={"model": model, "counter": counter})


def _save_two(model, ckpt, losses=(2.0, 1.0)):
    """Two checkpoints with different weights; returns their weights and Checkpoint tuples."""
    states, saved = [], []
    for loss in losses:
        with torch.no_grad():
            model.weight.add_(1.0)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        saved.append(ckpt.save_checkpoint(meta={"loss": loss}))
    return states, saved


def _fresh_weights(model):
    with torch.no_grad():
        model.weight.zero_()


def test_truncated_latest_falls_back_with_warning(tmp_path, caplog):
    model, _, ckpt = _setup(tmp_path)
    states, saved = _save_two(model, ckpt)
    assert set(saved[1].meta[CHECKSUMS_KEY]) == {"model.ckpt", "counter.ckpt"}
    path = saved[1].path / "model.ckpt"
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    _fresh_weights(model)
    with caplog.at_level(logging.WARNING), pytest.warns(RuntimeWarning, match="older checkpoint"):
        loaded = ckpt.recover_if_possible()
    assert loaded.path == saved[0].path
    assert torch.equal(model.weight, states[0]["weight"])
    assert any("truncated" in r.getMessage() for r in caplog.records)


def test_modified_file_fails_checksum_and_best_key_falls_back(tmp_path):
    model, _, ckpt = _setup(tmp_path)
    states, saved = _save_two(model, ckpt, losses=(1.0, 2.0))  # the first one is the best
    path = saved[0].path / "model.ckpt"
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF  # same size, other content
    path.write_bytes(bytes(data))
    _fresh_weights(model)
    with pytest.warns(RuntimeWarning, match="checksum"):
        assert ckpt.recover_if_possible(min_key="loss").path == saved[1].path
    assert torch.equal(model.weight, states[1]["weight"])


def test_garbled_meta_is_ignored(tmp_path, caplog):
    model, _, ckpt = _setup(tmp_path)
    states, saved = _save_two(model, ckpt)
    (saved[1].path / "CKPT.yaml").write_text("unixtime: [1, 2\n  : :")
    _fresh_weights(model)
    with caplog.at_level(logging.WARNING):
        assert ckpt.recover_if_possible().path == saved[0].path
    assert torch.equal(model.weight, states[0]["weight"])
    assert any("unreadable" in r.getMessage() for r in caplog.records)


@register_checkpoint_hooks
class DiesWhileSaving:
    """A recoverable whose save is interrupted after writing half a file (like a SIGKILL)."""

    armed = False

    @mark_as_saver
    def save(self, path):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a file")
        if self.armed:
            raise KeyboardInterrupt

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        pass


def test_interrupted_save_is_never_a_checkpoint(tmp_path):
    model = torch.nn.Linear(4, 3)
    dies = DiesWhileSaving()
    ckpt = RobustCheckpointer(tmp_path / "save", recoverables={"model": model, "dies": dies})
    first = ckpt.save_checkpoint()
    dies.armed = True
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint()
    folders = sorted(p for p in (tmp_path / "save").iterdir())
    assert len(folders) == 2  # the half-written folder exists on disk ...
    assert [c.path for c in ckpt.list_checkpoints()] == [first.path]  # ... but is not a checkpoint
    assert ckpt.recover_if_possible().path == first.path
    dies.armed = False
    ckpt.save_checkpoint()  # the next save removes the leftover
    assert len(list((tmp_path / "save").iterdir())) == 2 and len(ckpt.list_checkpoints()) == 2


def test_plain_speechbrain_checkpoint_falls_back_on_load_error(tmp_path):
    model, _, plain = _setup(tmp_path, cls=Checkpointer)
    states, saved = _save_two(model, plain)
    assert CHECKSUMS_KEY not in saved[1].meta
    path = saved[1].path / "model.ckpt"
    path.write_bytes(path.read_bytes()[:100])
    robust = make_robust(plain)
    assert robust is plain and isinstance(robust, RobustCheckpointer)
    _fresh_weights(model)
    with pytest.warns(RuntimeWarning, match="loading failed"):
        assert robust.recover_if_possible().path == saved[0].path
    assert torch.equal(model.weight, states[0]["weight"])


def test_all_broken_is_a_clear_error_and_none_is_a_fresh_start(tmp_path):
    model, _, ckpt = _setup(tmp_path)
    assert ckpt.recover_if_possible() is None  # nothing saved yet: a fresh run
    _, saved = _save_two(model, ckpt)
    for c in saved:
        (c.path / "model.ckpt").write_bytes(b"")
    with pytest.raises(MissingResourceError, match="Delete them"):
        ckpt.recover_if_possible()


def test_intra_epoch_dataloader_position_is_reset_on_fallback(tmp_path):
    """A broken intra-epoch checkpoint must not leave its data-loader skip position behind."""
    from speechbrain.dataio.dataloader import SaveableDataLoader

    model = torch.nn.Linear(4, 3)
    loader = SaveableDataLoader(list(range(10)), batch_size=2)
    # plain SpeechBrain checkpoints (no checksums): the loader's file loads before the model's fails
    ckpt = Checkpointer(tmp_path / "save", recoverables={"loader": loader, "model": model})
    ckpt.save_checkpoint(end_of_epoch=True)
    it = iter(loader)
    next(it), next(it), next(it)
    intra = ckpt.save_checkpoint(end_of_epoch=False)
    (intra.path / "model.ckpt").write_bytes(b"garbage")
    fresh = SaveableDataLoader(list(range(10)), batch_size=2)
    ckpt.recoverables["loader"] = fresh
    with pytest.warns(RuntimeWarning, match="loading failed"):
        make_robust(ckpt).recover_if_possible()
    assert fresh._speechbrain_recovery_skip_to is None
    assert [b.tolist() for b in fresh][0] == [0, 1]  # the epoch starts from its first batch


# ---------------------------------------------------------------- manifests


def _tiny_librispeech(root):
    import numpy as np
    import soundfile as sf

    chapter = root / "train" / "1" / "2"
    chapter.mkdir(parents=True)
    lines = []
    for i in range(6):
        uid = f"1-2-{i:04d}"
        sf.write(chapter / f"{uid}.flac", 0.1 * np.sin(np.arange(8000 + 800 * i) / 7.0), 16000)
        lines.append(f"{uid} HELLO WORLD NUMBER {i}")
    (chapter / "1-2.trans.txt").write_text("\n".join(lines) + "\n")


def test_truncated_manifest_is_detected_and_rebuilt(tmp_path, caplog):
    sys.path.insert(0, os.path.join(ROOT, "recipes", "librispeech"))
    from librispeech_prepare import check_manifest, prepare_librispeech

    _tiny_librispeech(tmp_path / "data")
    save = tmp_path / "manifests"
    report = prepare_librispeech(str(tmp_path / "data"), str(save), splits=["train"])
    manifest = save / "train.csv"
    original = manifest.read_text()
    assert report["splits"]["train"]["kept"] == 6 and check_manifest(str(manifest), 6) is None
    assert prepare_librispeech(str(tmp_path / "data"), str(save), splits=["train"])["reused"]

    manifest.write_text(original[: len(original) * 2 // 3])  # cut mid-row
    assert "rows" in check_manifest(str(manifest), 6) or "fields" in check_manifest(str(manifest), 6)
    with caplog.at_level(logging.WARNING):
        again = prepare_librispeech(str(tmp_path / "data"), str(save), splits=["train"])
    assert not again["reused"] and manifest.read_text() == original
    assert any("rebuilding" in r.getMessage() for r in caplog.records)

    manifest.write_bytes(b"\xff\xfe\x00garbage")
    assert check_manifest(str(manifest), 6) is not None
    prepare_librispeech(str(tmp_path / "data"), str(save), splits=["train"])
    assert manifest.read_text() == original
    with open(manifest, newline="") as f:
        assert len(list(csv.DictReader(f))) == 6
