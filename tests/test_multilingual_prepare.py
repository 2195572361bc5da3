"""Common Voice and MLS preparation on small trees in the real layouts: MP3, exclusions, NFKC, reuse."""

import csv
import json
import os

import numpy as np
import pytest
import soundfile as sf

from taste_toolkit.data.librispeech import CSV_HEADER, REPORT_FILE
from taste_toolkit.data.manifest import read_manifest
from taste_toolkit.data.multilingual import detect_layout, normalize_transcript, prepare_commonvoice, prepare_mls
from taste_toolkit.errors import ConfigError, DataPreparationError

CAN_WRITE_MP3 = "MP3" in sf.available_formats()
CV_HEADER = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents", "variant",
             "locale", "segment"]


def _tone(seconds, rate, freq=220.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_mp3(path, seconds=1.0, rate=48000):
    sf.write(path, _tone(seconds, rate), rate, format="MP3", subtype="MPEG_LAYER_III")


def _tsv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(CV_HEADER) + "\n")
        for client, clip, sentence in rows:
            f.write("\t".join([client, clip, sentence, "2", "0", "", "", "", "", "es", ""]) + "\n")


@pytest.fixture
def cv_tree(tmp_path):
    root = tmp_path / "cv-corpus" / "es"
    clips = root / "clips"
    os.makedirs(clips)
    good = ["common_voice_es_1.mp3", "common_voice_es_2.mp3", "common_voice_es_3.mp3"]
    if CAN_WRITE_MP3:
        for name in good:
            _write_mp3(clips / name)
        _write_mp3(clips / "common_voice_es_long.mp3", seconds=3.0)
        whole = (clips / "common_voice_es_1.mp3").read_bytes()
        (clips / "common_voice_es_trunc.mp3").write_bytes(whole[: len(whole) // 3])  # cut mid-stream
    (clips / "common_voice_es_garbage.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"not audio" * 50)
    _tsv(root / "train.tsv", [
        ("spkA", good[0], "Ｈｏｌａ　ｍｕｎｄｏ, ¿qué tal?"),   # full-width: NFKC
        ("spkA", good[1], 'Dijo "ﬁn" y se fue.'),              # ligature and quotes (QUOTE_NONE)
        ("spkB", "common_voice_es_garbage.mp3", "no se puede leer"),
        ("spkB", "common_voice_es_missing.mp3", "no existe"),
        ("spkB", "common_voice_es_trunc.mp3", "cortado"),
        ("spkB", "common_voice_es_long.mp3", "demasiado largo"),
    ])
    _tsv(root / "dev.tsv", [("spkC", good[2], "   "), ("spkC", good[2], "dos veces")])
    _tsv(root / "test.tsv", [("spkD", good[2], "el tercero")])
    for other in ("validated.tsv", "invalidated.tsv", "other.tsv"):
        _tsv(root / other, [])
    return str(root)


@pytest.mark.skipif(not CAN_WRITE_MP3, reason="this libsndfile has no MP3 support (needs libsndfile >= 1.1)")
def test_commonvoice_manifests_mp3_and_exclusions(cv_tree, tmp_path):
    assert detect_layout(cv_tree) == "commonvoice"
    save = str(tmp_path / "manifests")
    report = prepare_commonvoice(cv_tree, save, max_duration=2.0)
    train = report["splits"]["train"]
    assert train["kept"] == 2 and train["total_items"] == 6
    assert train["excluded"] == {"audio_decode_error": 1, "audio_missing": 1, "audio_unreadable": 1, "too_long": 1}
    rows = read_manifest(os.path.join(save, "train.csv"), columns=CSV_HEADER)
    assert [r["ID"] for r in rows] == ["common_voice_es_1", "common_voice_es_2"]
    assert rows[0]["wrd"] == "Hola mundo, ¿qué tal?" and rows[1]["wrd"] == 'Dijo "fin" y se fue.'
    assert rows[0]["spk_id"] == "spkA" and float(rows[0]["duration"]) == pytest.approx(1.0, abs=0.01)
    audio, rate = sf.read(rows[0]["wav"])  # the pipeline reads the MP3 itself
    assert rate == 48000 and len(audio) == 48000
    assert train["warnings"]["normalized_transcripts"] == 2
    assert train["warnings"]["non_16k_sample_rate"] == {"common_voice_es_1": 48000, "common_voice_es_2": 48000}
    by_id = {e["id"]: e for e in train["excluded_items"]}
    assert "decoded" in by_id["common_voice_es_trunc"]["detail"]
    assert by_id["common_voice_es_garbage"]["path"].endswith("clips/common_voice_es_garbage.mp3")
    dev = report["splits"]["dev"]  # the same clip twice: ambiguous, none kept
    assert dev["kept"] == 0 and dev["excluded"] == {"duplicate_id": 2}
    with open(os.path.join(save, REPORT_FILE), encoding="utf-8") as f:
        assert json.load(f)["splits"]["test"]["kept"] == 1
    again = prepare_commonvoice(cv_tree, save, max_duration=2.0)
    assert again["reused"] is True
    os.remove(os.path.join(cv_tree, "clips", "common_voice_es_long.mp3"))  # the corpus changed: examined again
    changed = prepare_commonvoice(cv_tree, save, max_duration=2.0)
    assert changed["reused"] is False and changed["splits"]["train"]["excluded"]["audio_missing"] == 2


def test_undecodable_clip_is_excluded_with_a_reason(cv_tree, tmp_path):
    # Runs with or without MP3 support: a file that is not audio is never kept.
    report = prepare_commonvoice(cv_tree, str(tmp_path / "m"), splits=["train"])
    items = {e["id"]: e for e in report["splits"]["train"]["excluded_items"]}
    assert items["common_voice_es_garbage"]["reason"] == "audio_unreadable"
    assert items["common_voice_es_garbage"]["detail"]
    assert items["common_voice_es_missing"]["reason"] == "audio_missing"


def test_commonvoice_errors(cv_tree, tmp_path):
    with pytest.raises(DataPreparationError, match="train_other.tsv does not exist.*clips"):
        prepare_commonvoice(cv_tree, str(tmp_path / "m"), splits=["train_other"])
    with pytest.raises(ConfigError, match="normalization must be one of"):
        prepare_commonvoice(cv_tree, str(tmp_path / "m"), normalization="nfkc")
    with open(os.path.join(cv_tree, "test.tsv"), "w", encoding="utf-8") as f:
        f.write("a\tb\n1\t2\n")
    with pytest.raises(DataPreparationError, match="'path' and 'sentence'"):
        prepare_commonvoice(cv_tree, str(tmp_path / "m"), splits=["test"])


def test_mls_layout(tmp_path):
    root = tmp_path / "mls_spanish"
    for split, ids in (("train", ["10_20_000001", "10_20_000002", "11_21_000001"]), ("dev", ["12_22_000001"])):
        lines = []
        for k, utt in enumerate(ids):
            spk, book, _ = utt.split("_")
            folder = root / split / "audio" / spk / book
            os.makedirs(folder, exist_ok=True)
            if utt != "10_20_000002":  # listed without audio
                sf.write(folder / f"{utt}.flac", _tone(1.0 + k * 0.5, 16000), 16000)
            lines.append(f"{utt}\tｔｅｘｔｏ número {k}")
        lines.append("broken line without tab")
        (root / split).mkdir(exist_ok=True)
        (root / split / "transcripts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert detect_layout(str(root)) == "mls"
    report = prepare_mls(str(root), str(tmp_path / "m"), splits=["train", "dev"])
    train = report["splits"]["train"]
    assert train["kept"] == 2 and train["excluded"] == {"audio_missing": 1, "bad_row": 1}
    with open(tmp_path / "m" / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["spk_id"] for r in rows] == ["10", "11"] and rows[0]["wrd"] == "texto número 0"
    assert float(rows[1]["duration"]) == pytest.approx(2.0)
    assert report["splits"]["dev"]["kept"] == 1


def test_normalize_transcript():
    assert normalize_transcript("Ａ\u3000B\t c") == "A B c"
    assert normalize_transcript("ﬁ", "none") == "ﬁ" and normalize_transcript("ﬁ") == "fi"
