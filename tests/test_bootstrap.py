"""Paired bootstrap / bootstrap CI: coverage on synthetic data, determinism, bad input, harness report."""

import csv
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.evaluation.bootstrap import bootstrap_ci, format_ci, paired_bootstrap


def test_ci_covers_the_true_shift_about_95_percent_of_the_time():
    """200 simulated evaluations (40 paired utterances, true shift 0.1): the 95% CI holds it ~95% of the time."""
    rng = np.random.default_rng(123)
    trials, n, shift, hits = 200, 40, 0.1, 0
    for t in range(trials):
        base = rng.normal(0.5, 0.2, n)  # per-utterance difficulty, shared by both systems
        a = base + shift + rng.normal(0, 0.1, n)
        b = base + rng.normal(0, 0.1, n)
        r = paired_bootstrap(a, b, num_resamples=1000, seed=t)
        hits += r["ci_low"] <= shift <= r["ci_high"]
    assert 0.89 <= hits / trials <= 0.99, hits / trials


def test_clear_shift_is_separated_and_p_value_is_small():
    rng = np.random.default_rng(0)
    b = rng.normal(0, 1, 60)
    r = paired_bootstrap(b + 0.5, b, num_resamples=2000)
    assert r["difference"] == pytest.approx(0.5) and r["ci_low"] == pytest.approx(0.5)  # constant shift: no spread
    a = b + 0.5 + rng.normal(0, 0.3, 60)
    r = paired_bootstrap(a, b, num_resamples=2000)
    assert 0 < r["ci_low"] < r["difference"] < r["ci_high"] and r["p_le_zero"] < 0.01
    assert paired_bootstrap(b, a, num_resamples=2000)["p_le_zero"] > 0.99


def test_identical_inputs_give_zero_width_ci_at_zero():
    x = np.linspace(0, 1, 25)
    r = paired_bootstrap(x, x.copy())
    assert r["difference"] == r["ci_low"] == r["ci_high"] == 0.0 and r["p_le_zero"] == 1.0 and r["n"] == 25


def test_deterministic_with_the_seed():
    rng = np.random.default_rng(5)
    a, b = rng.random(30), rng.random(30)
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(list(a), list(b), seed=3)
    assert paired_bootstrap(a, b, seed=3)["ci_low"] != paired_bootstrap(a, b, seed=4)["ci_low"]
    assert bootstrap_ci(a, seed=1) == bootstrap_ci(a, seed=1)


def test_two_choice_accuracy_ci_and_weights():
    wins = [1] * 30 + [0] * 10
    r = bootstrap_ci(wins, seed=0)
    assert r["mean"] == 0.75 and 0.6 < r["ci_low"] < 0.75 < r["ci_high"] < 0.9
    assert format_ci(r, 2, key="mean") == f"0.75 [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
    # Weighted = pooled ratio: per-utterance error rates weighted by words give corpus WER.
    errors, words = np.array([1, 0, 3]), np.array([10, 5, 5])
    pooled = bootstrap_ci(errors / words, weights=words)
    assert pooled["mean"] == pytest.approx(errors.sum() / words.sum())


@pytest.mark.parametrize("a,b,kw,match", [
    ([1, 2, 3], [1, 2], {}, "a has 3 values, b has 2"),
    ([], [], {}, "a is empty"),
    ([1, float("nan")], [1, 2], {}, "non-finite"),
    ([[1, 2]], [[1, 2]], {}, "one-dimensional"),
    (["x"], [1], {}, "sequence of numbers"),
    ([1, 2], [1, 2], {"confidence": 95}, "confidence must be in"),
    ([1, 2], [1, 2], {"num_resamples": 0}, "num_resamples"),
    ([1, 2], [1, 2], {"weights": [1, 0]}, "weights must be > 0"),
    ([1, 2], [1, 2], {"weights": [1]}, "weights has 1 values for 2"),
])
def test_bad_input_is_a_clear_error(a, b, kw, match):
    with pytest.raises(InputError, match=match):
        paired_bootstrap(a, b, **kw)


def test_bootstrap_ci_bad_input():
    with pytest.raises(InputError, match="values is empty"):
        bootstrap_ci([])


# ---------------------------------------------------------------- harness report


class _Metric:
    """Stands in for a built metric: per-utterance ``score`` column ``x`` weighted by ``w``."""

    columns, precision, fields = {"x": "X"}, {}, ("x", "w")

    def paired_values(self, row):
        return {"x": (float(row["x"]), float(row["w"]))}


def test_paired_comparisons_from_score_csvs(tmp_path):
    from taste_toolkit.evaluation.report import paired_comparisons, paired_markdown

    os.makedirs(tmp_path / "scores")
    ids = [f"u{i}" for i in range(20)]
    rng = np.random.default_rng(0)
    base = rng.random(20)
    values = {"ref": base, "better": base + 0.2 + rng.normal(0, 0.05, 20), "same": base}
    with open(tmp_path / "scores" / "m.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["system", "id", "output_id", "error", "x", "w"])
        w.writeheader()
        for name, vals in values.items():
            for i, v in zip(ids, vals):
                w.writerow({"system": name, "id": i, "output_id": "o", "error": "", "x": v, "w": 2})
        w.writerow({"system": "better", "id": "u0", "output_id": "o", "error": "failed", "x": "", "w": ""})
    ev = SimpleNamespace(out=str(tmp_path), ids=ids, metrics={"m": _Metric()},
                         config={"reference_system": "ref", "systems": [{"name": n} for n in values],
                                 "bootstrap": {"num_resamples": 500, "seed": 0, "confidence": 0.95}})
    paired = paired_comparisons(ev)
    assert set(paired["m"]["x"]) == {"better", "same"}
    better, same = paired["m"]["x"]["better"], paired["m"]["x"]["same"]
    assert better["n"] == 20 and 0.15 < better["ci_low"] < better["difference"] < better["ci_high"] < 0.25
    assert same["difference"] == same["ci_low"] == same["ci_high"] == 0.0
    text = "\n".join(paired_markdown(ev, paired))
    assert "Paired bootstrap vs `ref`" in text and "| m | X | better | +0.2" in text


def test_reference_system_config(tmp_path):
    import yaml

    from taste_toolkit.evaluation.harness import load_config, validate_config

    base = {"output_folder": "x", "data": {"metadata": "y"}, "metrics": [{"name": "mcd"}],
            "systems": [{"name": "original", "type": "original"}, {"name": "a", "type": "directory"}]}
    cfg = validate_config(dict(base))
    assert cfg["reference_system"] == "a" and cfg["bootstrap"]["num_resamples"] == 10000
    with pytest.raises(ConfigError, match="reference_system 'b' is not one of the systems"):
        validate_config({**base, "reference_system": "b"})
    with pytest.raises(ConfigError, match="bootstrap must be a mapping"):
        validate_config({**base, "bootstrap": {"resamples": 10}})
    with pytest.raises(ConfigError, match="integer num_resamples"):
        validate_config({**base, "bootstrap": {"num_resamples": "many"}})
    # --systems without the configured reference falls back to the default reference.
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({**base, "reference_system": "original"}))
    assert load_config(str(path), {"systems": ["a"]})["reference_system"] == "a"
    assert load_config(str(path))["reference_system"] == "original"


@pytest.mark.slow
def test_evaluation_run_reports_paired_bootstrap(tmp_path):
    """A run with two directory systems: a copy of the source and a 20%-slowed copy, vs the copy."""
    from scipy.signal import resample as fft_resample

    from taste_toolkit.data.synthetic_corpus import generate_corpus
    from taste_toolkit.evaluation import Evaluation

    root = tmp_path / "corpus"
    generate_corpus(root, seed=3, num_speakers=1, utterances_per_split={"test": 4}, num_workers=0, progress=False)
    items = [json.loads(line) for line in open(root / "test" / "metadata.jsonl")]
    for name in ("copy", "slow"):
        (tmp_path / name).mkdir()
    for it in items:
        wav, sr = sf.read(root / it["audio"], dtype="float32")
        shutil.copy(root / it["audio"], tmp_path / "copy" / f"{it['id']}.flac")
        sf.write(tmp_path / "slow" / f"{it['id']}.wav", fft_resample(wav, int(len(wav) * 1.2)), sr)
    config = {"output_folder": str(tmp_path / "eval"), "data": {"metadata": str(root / "test")},
              "reference_system": "copy", "bootstrap": {"num_resamples": 300},
              "systems": [{"name": "original", "type": "original"},
                          {"name": "copy", "type": "directory", "options": {"folder": str(tmp_path / "copy")}},
                          {"name": "slow", "type": "directory", "options": {"folder": str(tmp_path / "slow")}}],
              "metrics": [{"name": "duration_ratio"},
                          {"name": "duration_consistency", "label": "dur_dtw", "options": {"aligner": "dtw"}}]}
    result = Evaluation(config, progress=False).run()
    ratio = result["paired_bootstrap"]["duration_ratio"]["duration_ratio"]
    assert ratio["slow"]["difference"] == pytest.approx(0.2, abs=0.01) and ratio["slow"]["n"] == 4
    assert ratio["original"]["difference"] == pytest.approx(0.0, abs=1e-3)
    cons = result["paired_bootstrap"]["dur_dtw"]["consistency"]["slow"]
    assert cons["difference"] < 0 and cons["ci_high"] <= 0
    md = open(tmp_path / "eval" / "summary.md", encoding="utf-8").read()
    assert "Paired bootstrap vs `copy`" in md and "| dur_dtw | Dur. cons. | slow |" in md
