"""Stage-1 data pipeline: resampling, downmixing, text/audio mismatch, missing units."""

import csv

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.dataio.batch import PaddedBatch

from taste_toolkit.errors import InputError
from taste_toolkit.interfaces import TextTokenizer, TokenizedText
from taste_toolkit.training.data import build_datasets, filter_mismatched


class WordTokenizer(TextTokenizer):
    """One id per character of each word (deterministic, no files needed)."""

    @property
    def vocab_size(self):
        return 256

    def encode_words(self, text):
        words = text.lower().split()
        if not words:
            raise InputError("empty transcript")
        ids, word_ids = [], []
        for i, w in enumerate(words):
            for ch in w[:2]:  # at most two "sub-words" per word
                ids.append(ord(ch) % 256)
                word_ids.append(i)
        return TokenizedText(ids, word_ids, words)

    def decode(self, ids):
        return "".join(map(chr, ids))


def write(path, seconds, sr=16000, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    x = 0.1 * rng.standard_normal((int(seconds * sr), channels)).astype(np.float32)
    sf.write(path, x if channels > 1 else x[:, 0], sr)


@pytest.fixture
def manifest(tmp_path):
    rows = [
        ("a", 2.0, 16000, 1, "HELLO THERE FRIEND"),
        ("b", 2.0, 22050, 2, "STEREO AND RESAMPLED"),  # stereo at 22.05 kHz
        ("c", 20.0, 16000, 1, "ONE"),  # one word for 20 s: cannot match
        ("d", 1.0, 16000, 1, " ".join(["WORD"] * 30)),  # 30 words per second
        ("e", 1.5, 16000, 1, "NO UNITS HERE"),  # no units extracted
    ]
    path = tmp_path / "train.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "duration", "wav", "spk_id", "wrd"])
        for i, (uid, dur, sr, ch, text) in enumerate(rows):
            wav = tmp_path / f"{uid}.wav"
            write(wav, dur, sr, ch, seed=i)
            w.writerow([uid, dur, str(wav), "1", text])
    units = {uid: torch.randint(0, 16, (int(dur * 25) + 1,)) for uid, dur, *_ in rows if uid != "e"}
    return path, units


def test_pipeline_filters_and_reports(manifest, caplog):
    path, units = manifest
    with caplog.at_level("WARNING"):
        ds = build_datasets({"train": path}, WordTokenizer(), {"train": units})["train"]
    ids = {ds[i]["id"] for i in range(len(ds))}
    assert ids == {"a", "b"}
    text = caplog.text
    assert "more than 3.0 s per word" in text and "more than 8.0 words per second" in text
    assert "have no units" in text and "'e'" in text


def test_items_are_resampled_downmixed_and_aligned(manifest):
    path, units = manifest
    ds = build_datasets({"train": path}, WordTokenizer(), {"train": units})["train"]
    item = next(ds[i] for i in range(len(ds)) if ds[i]["id"] == "b")
    assert item["sig"].dim() == 1 and item["sig"].numel() == 32000  # 2 s at 16 kHz, mono
    assert len(item["tokens"]) == len(item["word_ids"]) == 6  # 3 words x 2 sub-words
    assert item["word_ids"].tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(item["units"], units["b"])
    batch = PaddedBatch([ds[i] for i in range(len(ds))])
    assert batch.sig.data.shape[0] == 2


def test_speaker_targets_come_apart_from_the_decoders_speaker_vectors(manifest):
    path, units = manifest
    vectors = {uid: torch.full((3,), float(i)) for i, uid in enumerate(sorted(units))}
    ds = build_datasets({"train": path}, WordTokenizer(), {"train": units}, speaker_targets=vectors)["train"]
    for i in range(len(ds)):
        item = ds[i]
        assert torch.equal(item["spk_target"], vectors[item["id"]]) and "spk_emb" not in item
    plain = build_datasets({"train": path}, WordTokenizer(), {"train": units})["train"]
    assert "spk_target" not in plain[0]


def test_filter_thresholds_are_options(manifest):
    path, units = manifest
    ds = build_datasets({"train": path}, WordTokenizer(), {"train": units},
                        mismatch_filter={"max_seconds_per_word": 30.0, "max_words_per_second": 50.0})["train"]
    assert {ds[i]["id"] for i in range(len(ds))} == {"a", "b", "c", "d"}


def test_split_with_nothing_usable_is_a_clear_error(manifest):
    path, _ = manifest
    with pytest.raises(InputError, match="no usable utterance"):
        build_datasets({"train": path}, WordTokenizer(), {"train": {}})


def test_filter_mismatched_counts_by_reason(manifest):
    from speechbrain.dataio.dataset import DynamicItemDataset

    path, _ = manifest
    dropped = filter_mismatched(DynamicItemDataset.from_csv(str(path)), "train")
    assert sorted(i for ids in dropped.values() for i in ids) == ["c", "d"]
