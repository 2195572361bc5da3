"""Tests for LibriSpeech preparation (taste_toolkit.data.librispeech + the recipe wrapper)."""

import csv
import importlib.util
import json
import os
import time

import numpy as np
import pytest
import soundfile as sf

from taste_toolkit.data.librispeech import prepare_librispeech
from taste_toolkit.errors import ConfigError, DataPreparationError

SR = 16000
RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes", "librispeech",
                      "librispeech_prepare.py")


def _signal(seconds, seed, sr=SR):
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(t.size)).astype(
        np.float32)


def _write_chapter(split_dir, spk, chap, utts, transcripts=None):
    """utts: {utt: seconds}; transcripts: {utt: text} (default: a text for each utt)."""
    folder = os.path.join(split_dir, spk, chap)
    os.makedirs(folder, exist_ok=True)
    for i, (utt, sec) in enumerate(utts.items()):
        sf.write(os.path.join(folder, f"{spk}-{chap}-{utt}.flac"), _signal(sec, i), SR)
    if transcripts is None:
        transcripts = {u: f"HELLO WORLD NUMBER {u}" for u in utts}
    with open(os.path.join(folder, f"{spk}-{chap}.trans.txt"), "w") as f:
        for utt, text in transcripts.items():
            f.write(f"{spk}-{chap}-{utt} {text}\n".replace(" \n", "\n"))
    return folder


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def clean_corpus(tmp_path):
    data = tmp_path / "LibriSpeech"
    split = data / "dev-clean"
    _write_chapter(str(split), "84", "121123", {"0000": 1.0, "0001": 2.5, "0002": 1.5})
    _write_chapter(str(split), "174", "50561", {"0000": 2.0, "0001": 0.75})
    return data


def test_normal_case_csv(clean_corpus, tmp_path):
    save = tmp_path / "save"
    rep = prepare_librispeech(str(clean_corpus), str(save), splits=["dev-clean"])
    rows = _read_csv(save / "dev-clean.csv")
    with open(save / "dev-clean.csv") as f:
        assert f.readline().strip() == "ID,duration,wav,spk_id,wrd"
    ids = [r["ID"] for r in rows]
    assert ids == sorted(ids) == ["174-50561-0000", "174-50561-0001", "84-121123-0000",
                                  "84-121123-0001", "84-121123-0002"]
    expected = {"174-50561-0000": 2.0, "174-50561-0001": 0.75, "84-121123-0000": 1.0,
                "84-121123-0001": 2.5, "84-121123-0002": 1.5}
    for r in rows:
        assert float(r["duration"]) == pytest.approx(expected[r["ID"]], abs=1e-6)
        assert os.path.isabs(r["wav"]) and os.path.isfile(r["wav"])
        assert os.path.basename(r["wav"]) == r["ID"] + ".flac"
        assert r["spk_id"] == r["ID"].split("-")[0]
        assert r["wrd"] == "HELLO WORLD NUMBER " + r["ID"].split("-")[2]
    split = rep["splits"]["dev-clean"]
    assert (split["kept"], split["n_excluded"], split["total_items"]) == (5, 0, 5)
    assert split["kept_hours"] == pytest.approx(7.75 / 3600)
    assert rep["reused"] is False
    on_disk = json.loads((save / "prepare_report.json").read_text())
    assert on_disk["splits"]["dev-clean"]["kept"] == 5


def test_wav_accepted_and_non_16k_warned(tmp_path):
    data = tmp_path / "LS"
    folder = _write_chapter(str(data / "dev-clean"), "1", "2", {"0001": 1.0})
    sf.write(os.path.join(folder, "1-2-0002.wav"), _signal(1.0, 5, 22050), 22050)
    with open(os.path.join(folder, "1-2.trans.txt"), "a") as f:
        f.write("1-2-0002 A WAV FILE\n")
    rep = prepare_librispeech(str(data), str(tmp_path / "s"), splits=["dev-clean"])
    rows = _read_csv(tmp_path / "s" / "dev-clean.csv")
    assert [r["wav"].rsplit(".", 1)[1] for r in rows] == ["flac", "wav"]
    assert float(rows[1]["duration"]) == pytest.approx(1.0, abs=1e-4)
    assert rep["splits"]["dev-clean"]["warnings"]["non_16k_sample_rate"] == {"1-2-0002": 22050}


def test_idempotent_and_redo(clean_corpus, tmp_path):
    save = tmp_path / "save"
    prepare_librispeech(str(clean_corpus), str(save), splits=["dev-clean"])
    csv_path = save / "dev-clean.csv"
    mtime = csv_path.stat().st_mtime_ns
    time.sleep(0.02)
    rep2 = prepare_librispeech(str(clean_corpus), str(save), splits=["dev-clean"])
    assert rep2["reused"] is True and rep2["splits"]["dev-clean"]["kept"] == 5
    assert csv_path.stat().st_mtime_ns == mtime

    # Changed option -> redo with the new limit.
    rep3 = prepare_librispeech(str(clean_corpus), str(save), splits=["dev-clean"],
                               max_duration=1.8)
    assert rep3["reused"] is False
    assert csv_path.stat().st_mtime_ns != mtime
    assert rep3["splits"]["dev-clean"]["excluded"] == {"too_long": 2}
    assert len(_read_csv(csv_path)) == 3

    # Changed data (a new utterance) -> redo, even with the same options.
    _write_chapter(str(clean_corpus / "dev-clean"), "99", "1", {"0000": 1.0})
    rep4 = prepare_librispeech(str(clean_corpus), str(save), splits=["dev-clean"],
                               max_duration=1.8)
    assert rep4["reused"] is False and rep4["splits"]["dev-clean"]["kept"] == 4

    # A file rewritten in place with the same size is noticed through its mtime.
    wav = str(clean_corpus / "dev-clean" / "99" / "1" / "99-1-0000.flac")
    st = os.stat(wav)
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert prepare_librispeech(str(clean_corpus), str(save), splits=["dev-clean"],
                               max_duration=1.8)["reused"] is False

    # A deleted CSV is rebuilt.
    csv_path.unlink()
    assert prepare_librispeech(str(clean_corpus), str(save), splits=["dev-clean"],
                               max_duration=1.8)["reused"] is False
    assert csv_path.is_file()


def test_missing_folders_raise(tmp_path, clean_corpus):
    with pytest.raises(DataPreparationError) as err:
        prepare_librispeech(str(tmp_path / "nope"), str(tmp_path / "s"))
    assert str(tmp_path / "nope") in str(err.value) and "trans.txt" in str(err.value)
    with pytest.raises(DataPreparationError) as err:
        prepare_librispeech(str(clean_corpus), str(tmp_path / "s"), splits=["train-clean-100"])
    assert str(clean_corpus / "train-clean-100") in str(err.value)
    assert "<spk>-<chapter>-<utt>.flac" in str(err.value)
    assert not (tmp_path / "s").exists()


def test_bad_options_raise(clean_corpus, tmp_path):
    for kwargs in ({"max_duration": 0.5, "min_duration": 1.0}, {"min_duration": -1.0},
                   {"select_n_sentences": [1, 2]}, {"select_n_sentences": 0}, {"splits": []}):
        kwargs.setdefault("splits", ["dev-clean"])
        with pytest.raises(ConfigError):
            prepare_librispeech(str(clean_corpus), str(tmp_path / "s"), **kwargs)


@pytest.fixture
def broken_corpus(tmp_path):
    """One item per exclusion reason plus two good ones."""
    data = tmp_path / "LS"
    split = str(data / "test-clean")
    rng = np.random.default_rng(0)
    texts = {u: f"TEXT {u}" for u in ("0000", "0001", "0002", "0003", "0004", "0005", "0006",
                                      "0008", "0009", "0010")}
    texts["0004"] = ""          # empty transcript
    texts.pop("0005")           # audio without transcript
    texts["0007"] = "NO AUDIO"  # transcript without audio
    folder = _write_chapter(split, "7", "8", {"0000": 1.0, "0001": 1.2, "0004": 1.0,
                                              "0005": 1.0, "0006": 4.0}, texts)
    # Random bytes named .flac: soundfile cannot read the header.
    with open(os.path.join(folder, "7-8-0002.flac"), "wb") as f:
        f.write(rng.bytes(4000))
    # Truncated flac: the header is fine, decoding fails.
    sf.write(os.path.join(folder, "7-8-0003.flac"), _signal(2.0, 3), SR)
    path = os.path.join(folder, "7-8-0003.flac")
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[: len(blob) // 2])
    # Float WAV with a NaN sample.
    x = _signal(1.0, 8)
    x[1234] = np.nan
    sf.write(os.path.join(folder, "7-8-0008.wav"), x, SR, subtype="FLOAT")
    # Zero-length audio.
    sf.write(os.path.join(folder, "7-8-0009.wav"), np.zeros(0, np.float32), SR)
    # Same ID as .flac and .wav: ambiguous.
    sf.write(os.path.join(folder, "7-8-0010.flac"), _signal(1.0, 10), SR)
    sf.write(os.path.join(folder, "7-8-0010.wav"), _signal(1.0, 10), SR)
    # A file whose name is not <spk>-<chapter>-<utt>.
    sf.write(os.path.join(folder, "notes.wav"), _signal(1.0, 11), SR)
    # Too short (with min_duration=0.6).
    _write_chapter(split, "9", "1", {"0000": 0.5})
    return data


def test_every_exclusion_reason_is_reported(broken_corpus, tmp_path):
    save = tmp_path / "save"
    rep = prepare_librispeech(str(broken_corpus), str(save), splits=["test-clean"],
                              max_duration=3.0, min_duration=0.6)
    split = rep["splits"]["test-clean"]
    by_id = {}
    for item in split["excluded_items"]:
        by_id.setdefault(item["id"], []).append(item["reason"])
    assert by_id == {
        "7-8-0002": ["audio_unreadable"],
        "7-8-0003": ["audio_decode_error"],
        "7-8-0004": ["empty_transcript"],
        "7-8-0005": ["audio_without_transcript"],
        "7-8-0006": ["too_long"],
        "7-8-0007": ["transcript_without_audio"],
        "7-8-0008": ["audio_non_finite"],
        "7-8-0009": ["audio_zero_length"],
        "7-8-0010": ["duplicate_id", "duplicate_id"],
        "9-1-0000": ["too_short"],
        "notes": ["unexpected_name"],
    }
    assert [r["ID"] for r in _read_csv(save / "test-clean.csv")] == ["7-8-0000", "7-8-0001"]
    # Paths are given for every item that has audio.
    for item in split["excluded_items"]:
        assert (item["path"] is None) == (item["reason"] == "transcript_without_audio")
        assert item["path"] is None or os.path.isfile(item["path"])
    # Accounting: 13 audio files + 1 transcript-only ID.
    assert split["total_items"] == 14
    assert split["kept"] + sum(split["excluded"].values()) + split["not_selected"] == 14
    assert split["n_excluded"] == len(split["excluded_items"]) == 12
    assert split["excluded"]["duplicate_id"] == 2
    on_disk = json.loads((save / "prepare_report.json").read_text())
    assert on_disk["splits"]["test-clean"]["excluded"] == split["excluded"]


def test_summary_is_logged(broken_corpus, tmp_path, caplog):
    caplog.set_level("INFO", logger="taste_toolkit.data.librispeech")
    prepare_librispeech(str(broken_corpus), str(tmp_path / "s"), splits=["test-clean"],
                        max_duration=3.0, min_duration=0.6)
    lines = [r.getMessage() for r in caplog.records if "test-clean" in r.getMessage()]
    assert len(lines) == 1
    assert "kept 2" in lines[0] and "excluded 12" in lines[0] and "too_long=1" in lines[0]


def test_select_n_sentences_counts_the_rest(clean_corpus, tmp_path):
    rep = prepare_librispeech(str(clean_corpus), str(tmp_path / "s"), splits=["dev-clean"],
                              select_n_sentences=2)
    split = rep["splits"]["dev-clean"]
    assert (split["kept"], split["not_selected"], split["total_items"]) == (2, 3, 5)
    rows = _read_csv(tmp_path / "s" / "dev-clean.csv")
    assert [r["ID"] for r in rows] == ["174-50561-0000", "174-50561-0001"]


def test_skip_prep_writes_nothing(clean_corpus, tmp_path):
    assert prepare_librispeech(str(clean_corpus), str(tmp_path / "s"), skip_prep=True) == {}
    assert not (tmp_path / "s").exists()


def test_recipe_module_reexports_and_cli(clean_corpus, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("librispeech_prepare", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.prepare_librispeech is prepare_librispeech
    assert module.main([str(clean_corpus), str(tmp_path / "s"), "--splits", "dev-clean",
                        "--max_duration", "2.2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["splits"]["dev-clean"]["kept"] == 4
    assert out["splits"]["dev-clean"]["excluded"] == {"too_long": 1}
