"""Acoustic minimal pairs: generation (prosody / speaker), caching, bad options, loading and scoring."""

import os
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from _taslm_fixtures import make_tiny_llm
from taste_toolkit.data.minimal_pairs import generate_minimal_pairs, plan_pairs, read_pair_manifest
from taste_toolkit.errors import ConfigError, DataPreparationError, InputError, MissingResourceError
from taste_toolkit.taslm.scoring import load_minimal_pairs, pairs_from_records, two_choice_accuracy


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("minimal_pairs")
    generate_minimal_pairs(folder, num_pairs=3, seed=5, num_speakers=3)
    return folder


def _audio(folder, member):
    return sf.read(os.path.join(folder, member["audio"]), dtype="int16")[0]


def test_prosody_pairs_change_one_word_only(pairs_dir):
    pairs = [p for p in read_pair_manifest(pairs_dir) if p["kind"] == "prosody"]
    assert [p["label"] for p in pairs] == ["slow", "fast", "high"]  # labels cycle over the pairs
    for p in pairs:
        good, bad, k = p["good"], p["bad"], p["changed_word"]
        assert (pairs_dir / "prosody" / f"{p['id']}_pos.txt").read_text().strip() == p["text"]
        assert (pairs_dir / "prosody" / f"{p['id']}_neg.txt").read_text().strip() == p["text"]
        assert good["prosody"] == [None] * len(p["words"])
        assert [i for i, label in enumerate(bad["prosody"]) if label] == [k] and bad["prosody"][k] == p["label"]
        assert set(good["voices"]) == set(bad["voices"]) and len(set(good["voices"])) == 1
        assert not np.array_equal(_audio(pairs_dir, good), _audio(pairs_dir, bad))
    slow, fast = pairs[0], pairs[1]
    assert slow["bad"]["duration"] > slow["good"]["duration"] + 0.1
    assert fast["bad"]["duration"] < fast["good"]["duration"]
    k = slow["changed_word"]
    span = lambda m: m["word_end"][k] - m["word_start"][k]  # noqa: E731
    assert span(slow["bad"]) > span(slow["good"]) + 0.1  # the slowed word itself got longer


def test_speaker_pairs_switch_voice_mid_utterance(pairs_dir):
    pairs = [p for p in read_pair_manifest(pairs_dir) if p["kind"] == "speaker"]
    assert len(pairs) == 3
    for p in pairs:
        good, bad, k = p["good"], p["bad"], p["changed_word"]
        n = len(p["words"])
        assert k == n // 2 and len(set(good["voices"])) == 1 and len(set(bad["voices"])) == 2
        assert bad["voices"][:k] == good["voices"][:k] and bad["voices"][k] != good["voices"][k]
        assert good["prosody"] == bad["prosody"] == [None] * n
        # Same splice: the first half's samples are identical, only the second half's voice differs.
        a, b = _audio(pairs_dir, good), _audio(pairs_dir, bad)
        cut = int(good["word_start"][k] * 16000)
        assert good["word_start"][k] == bad["word_start"][k] and np.array_equal(a[:cut], b[:cut])
        assert np.all(np.diff(bad["word_start"]) > 0) and len(bad["word_end"]) == n


def test_manifests_cache_and_determinism(pairs_dir):
    with open(pairs_dir / "minimal_pairs_speaker.csv") as f:
        lines = f.read().splitlines()
    assert lines[0] == "ID,duration,wav,spk_id,wrd" and len(lines) == 1 + 2 * 3
    assert lines[1].startswith("speaker-0000_pos,") and lines[2].startswith("speaker-0000_neg,")
    before = os.path.getmtime(pairs_dir / "manifest.jsonl")
    generate_minimal_pairs(pairs_dir, num_pairs=3, seed=5, num_speakers=3)  # same options: nothing redone
    assert os.path.getmtime(pairs_dir / "manifest.jsonl") == before
    assert plan_pairs(3, seed=5, num_speakers=3) == plan_pairs(3, seed=5, num_speakers=3)
    assert plan_pairs(3, seed=5, num_speakers=3) != plan_pairs(3, seed=6, num_speakers=3)


def test_bad_options_and_foreign_folders(tmp_path):
    with pytest.raises(ConfigError, match="kinds must be among"):
        generate_minimal_pairs(tmp_path, kinds=("sentiment",))
    with pytest.raises(ConfigError, match="num_speakers >= 2"):
        generate_minimal_pairs(tmp_path, num_speakers=1)
    with pytest.raises(ConfigError, match="num_pairs"):
        generate_minimal_pairs(tmp_path, num_pairs=0)
    (tmp_path / "prosody").mkdir()
    (tmp_path / "prosody" / "mine.wav").write_bytes(b"")
    with pytest.raises(DataPreparationError, match="not made by this generator"):
        generate_minimal_pairs(tmp_path, num_pairs=1, kinds=("prosody",))
    with pytest.raises(MissingResourceError, match="No minimal pairs"):
        load_minimal_pairs(str(tmp_path / "none"), tokenizer=None)


def test_pairs_from_records_errors():
    codes = torch.zeros(2, 2, dtype=torch.long)
    rec = lambda i, w: {"id": i, "words": w, "codes": codes}  # noqa: E731
    with pytest.raises(InputError, match="has no _neg member"):
        pairs_from_records([rec("a_pos", ["x", "y"])])
    with pytest.raises(InputError, match="words differ"):
        pairs_from_records([rec("a_pos", ["x", "y"]), rec("a_neg", ["x", "z"])])
    with pytest.raises(InputError, match="not named"):
        pairs_from_records([rec("a", ["x", "y"])])


class _FakeTokenizer:
    """Word-level 'TASTE tokens' from the audio's loudness per word slot: enough to load and score pairs."""

    fingerprint = "fake-1"

    def encode(self, wavs, rates, texts):
        out = []
        for wav, text in zip(wavs, texts):
            words = text.lower().split()
            parts = np.array_split(np.abs(np.asarray(wav, dtype=np.float64)), len(words))
            level = torch.tensor([min(7, int(p.mean() * 80)) for p in parts])
            out.append(SimpleNamespace(words=words, level="word", codes=torch.stack([level, level.flip(0)], 1)))
        return out


def test_loaded_pairs_score_with_two_choice_accuracy(pairs_dir, tmp_path):
    from taste_toolkit.taslm.codebook import SpeechCodebook
    from taste_toolkit.taslm.model import build_taslm

    torch.set_num_threads(1)
    sets = load_minimal_pairs(str(pairs_dir), _FakeTokenizer(), cache_dir=str(tmp_path / "tokens"))
    assert set(sets) == {"prosody_minimal_pairs", "speaker_minimal_pairs"}
    for pairs in sets.values():
        assert len(pairs) == 3 and all(p["good"][0] == p["bad"][0] for p in pairs)
    assert len(os.listdir(tmp_path / "tokens")) == 2  # cached per kind
    torch.manual_seed(0)
    model = build_taslm(make_tiny_llm(tmp_path / "llm"), SpeechCodebook(torch.randn(2, 8, 4)), "taste_token",
                        {"num_quantizers": 2, "codebook_size": 8},
                        lora={"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})
    for pairs in sets.values():
        r = two_choice_accuracy(model, pairs, num_resamples=200)
        assert r["n"] == 3 and r["chance"] == 0.5 and 0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1
