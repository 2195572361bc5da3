"""recipes/librispeech/evaluate_reconstruction.py on a tiny tokenizer and 2 espeak utterances.

Runs the real offline ASR (Whisper tiny.en, int8) and the real metrics, so it
is marked slow (~30-60 s on the shared machine).
"""

import csv
import importlib.util
import json
import math
import os

import pytest
import soundfile as sf
import torch

from taste_toolkit.api import TasteTokenizer
from taste_toolkit.errors import InputError
from taste_toolkit.plugins.vocoder.griffin_lim import GriffinLimVocoder
from taste_toolkit.registry import build

pytestmark = pytest.mark.slow

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "recipes", "librispeech", "evaluate_reconstruction.py")
NUM_UNITS = 16


def _load_script():
    spec = importlib.util.spec_from_file_location("evaluate_reconstruction", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    from taste_toolkit.data.synthetic_corpus import generate_corpus

    root = str(tmp_path_factory.mktemp("corpus"))
    generate_corpus(root, seed=3, num_speakers=1, utterances_per_split={"test": 2}, num_workers=0, progress=False)
    return os.path.join(root, "test")


@pytest.fixture(scope="module")
def items(split_dir):
    with open(os.path.join(split_dir, "metadata.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def tokenizer_dir(tiny_taste_model, tiny_whisper_dir, split_dir, items, tmp_path_factory):
    """A tiny untrained TASTE tokenizer with fitted mel_kmeans units and a griffin_lim vocoder."""
    texts = [it["text"].lower() for it in items]
    model, text_tok = tiny_taste_model(tiny_whisper_dir, texts * 10, tmp_path_factory.mktemp("sp"), num_units=NUM_UNITS,
                                       sp_options={"vocab_size": 64, "model_type": "word"})
    root = os.path.dirname(split_dir)
    ext = build("units", "mel_kmeans", {"num_units": NUM_UNITS, "kmeans_iters": 5})
    ext.fit([torch.from_numpy(sf.read(os.path.join(root, it["audio"]), dtype="float32")[0]) for it in items])
    vocoder = GriffinLimVocoder.from_units_extractor(ext, n_iter=4)
    folder = tmp_path_factory.mktemp("export") / "tiny"
    TasteTokenizer(model, text_tok, units=ext, vocoder=vocoder).save_pretrained(folder)
    return str(folder)


def _argv(tokenizer_dir, split_dir, out, *extra):
    return ["--system", f"tiny={tokenizer_dir}", "--split-dir", split_dir, "--output", str(out), "--limit", "2",
            "--max-len-ratio", "4", "--threads", "1", "--no-progress", *extra]


def _csv(out):
    with open(os.path.join(out, "per_utterance.csv"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_end_to_end_outputs_and_resume(tokenizer_dir, split_dir, items, tmp_path, monkeypatch):
    script = _load_script()
    out = tmp_path / "eval"
    result = script.main(_argv(tokenizer_dir, split_dir, out))

    rows = _csv(out)
    ids = [it["id"] for it in items]
    assert sorted((r["row"], r["id"]) for r in rows) == sorted(
        (row, i) for row in ("original", "units_topline", "tiny") for i in ids)
    for r in (r for r in rows if r["row"] == "original"):
        for key in ("wer", "log_mel_dist", "mcd_db", "f0_rmse_hz", "f0_corr", "duration_ratio",
                    "consistency_asr", "consistency_meta"):
            assert math.isfinite(float(r[key])), (key, r[key])
        # The source against itself: exact zeros/ones; the ASR must understand espeak.
        assert float(r["log_mel_dist"]) == 0.0 and float(r["mcd_db"]) == 0.0
        assert float(r["duration_ratio"]) == 1.0 and float(r["consistency_asr"]) == 1.0
        assert float(r["f0_corr"]) == pytest.approx(1.0)
        assert float(r["wer"]) <= 0.5, r["hyp_text"]
    for r in (r for r in rows if r["row"] != "original"):
        assert float(r["log_mel_dist"]) > 0 and float(r["duration_ratio"]) > 0
    topline = [r for r in rows if r["row"] == "units_topline"]
    for r in topline:  # n // 640 + 1 units -> at most one unit longer than the source
        assert 1.0 <= float(r["duration_ratio"]) <= 1.0 + 640 / (16000 * float(r["duration_s"])) + 1e-6
    tiny = [r for r in rows if r["row"] == "tiny"]
    assert all(int(r["speech_tokens"]) == len(it["words"]) for r, it in zip(
        sorted(tiny, key=lambda r: r["id"]), sorted(items, key=lambda i: i["id"])))

    summary = {s["row"]: s for s in result["rows"]}
    assert list(summary) == ["original", "units_topline", "tiny"]
    assert summary["units_topline"]["token_rate_hz"] == 25.0 and summary["units_topline"]["bitrate_bps"] == 100.0
    words = sum(len(it["words"]) for it in items)
    seconds = sum(float(r["duration_s"]) for r in tiny)
    assert summary["tiny"]["token_rate_hz"] == pytest.approx(words / seconds)
    assert summary["tiny"]["bitrate_bps"] == pytest.approx(8.0 * words / seconds)  # 2 x log2(16) bits per word

    md = (out / "summary.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and "row" not in line.split("|")[1]]
    assert [line.split("|")[1].strip() for line in table[:3]] == ["original", "units_topline", "tiny"]
    assert json.loads((out / "summary.json").read_text())["utterances"] == 2
    assert (out / "reconstruction.png").stat().st_size > 10_000
    for row in ("original", "units_topline", "tiny"):
        assert (out / "wavs" / row / f"{ids[0]}.wav").is_file()

    # A rerun computes nothing (every row x utterance is in the CSV) and rewrites the same summary.
    def fail(*args, **kwargs):
        raise AssertionError("rerun recomputed a finished row")

    monkeypatch.setattr(script, "score", fail)
    monkeypatch.setattr(script, "reconstruct", fail)
    again = script.main(_argv(tokenizer_dir, split_dir, out))
    assert _csv(out) == rows
    assert again["rows"] == result["rows"] == json.loads((out / "summary.json").read_text())["rows"]

    # Other decoding settings in the same folder are refused instead of mixed.
    with pytest.raises(InputError, match="other settings"):
        script.main(_argv(tokenizer_dir, split_dir, out, "--top-k", "5"))


def test_parse_systems_and_helpers():
    script = _load_script()
    assert script.parse_systems(["a=x", "b=y=z"]) == {"a": "x", "b": "y=z"}
    for bad in (["a"], ["original=x"], ["a=x", "a=y"]):
        with pytest.raises(InputError):
            script.parse_systems(bad)
    assert script.longest_run([1, 1, 2, 2, 2, 1]) == 3 and script.longest_run([]) == 0
    ref = [("Hello,", 0.0, 0.4), ("big", 0.4, 0.6), ("world", 0.6, 1.0)]
    hyp = [("hello", 0.0, 0.5), ("world!", 0.5, 0.8)]
    assert script.matched_durations(ref, hyp) == [(0.4, 0.5), (pytest.approx(0.4), pytest.approx(0.3))]
