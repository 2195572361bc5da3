"""prepare_corpus: manifests of every split, extra training manifests merged into the training split."""

import csv

import pytest

from taste_toolkit.data.corpus_preparation import _merge_manifests, prepare_corpus
from taste_toolkit.errors import DataPreparationError

HEADER = ["ID", "duration", "wav", "spk_id", "wrd"]


def _write(path, rows, header=HEADER):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def _ids(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [row["ID"] for row in csv.DictReader(f)]


def test_merge_keeps_order_and_refuses_duplicates_and_other_columns(tmp_path):
    a = _write(tmp_path / "a.csv", [["u1", "1.0", "/x/1.wav", "s", "HELLO"], ["u2", "2.0", "/x/2.wav", "s", "HI"]])
    b = _write(tmp_path / "b.csv", [["r1", "1.5", "/y/1.wav", "r", "YES"]])
    _merge_manifests([a, b], str(tmp_path / "m.csv"))
    assert _ids(tmp_path / "m.csv") == ["u1", "u2", "r1"]
    with pytest.raises(DataPreparationError, match="'u1' is in both"):
        _merge_manifests([a, a], str(tmp_path / "m2.csv"))
    c = _write(tmp_path / "c.csv", [["r2", "1.0", "/y/2.wav", "r"]], header=HEADER[:4])
    with pytest.raises(DataPreparationError, match="columns"):
        _merge_manifests([a, c], str(tmp_path / "m3.csv"))
    long = _write(tmp_path / "long.csv", [["r3", "31.0", "/y/3.wav", "r", "LONG"], ["r4", "3.0", "/y/4.wav", "r", "OK"]])
    _merge_manifests([a, long], str(tmp_path / "m4.csv"), max_duration=30.0)  # the Whisper window
    assert _ids(tmp_path / "m4.csv") == ["u1", "u2", "r4"]


def test_extra_train_manifests_join_the_training_split(tmp_path):
    """The embedded corpus (tiny) plus an extra CSV: training = both, dev/test untouched."""
    import soundfile as sf

    wav = tmp_path / "r1.wav"
    sf.write(wav, [0.0] * 16000, 16000)
    extra = _write(tmp_path / "extra.csv", [["real-1", "1.0", str(wav), "real", "A REAL VOICE"]])
    hparams = {"data_folder": "", "corpus_folder": str(tmp_path / "corpus"),
               "corpus_options": {"num_speakers": 2, "utterances_per_split": {"train": 4, "dev": 2, "test": 2}},
               "train_splits": ["train"], "dev_splits": ["dev"], "test_splits": ["test"],
               "prep_folder": str(tmp_path / "prep"), "max_duration": 30.0, "skip_prep": False,
               "extra_train_manifests": [extra]}
    manifests, train = prepare_corpus(hparams)
    assert train == "train+extra"
    assert _ids(manifests[train]) == _ids(manifests["train"]) + ["real-1"]
    assert "real-1" not in _ids(manifests["dev"]) + _ids(manifests["test"])
    hparams["extra_train_manifests"] = [str(tmp_path / "missing.csv")]
    with pytest.raises(DataPreparationError, match="does not exist"):
        prepare_corpus(hparams)
