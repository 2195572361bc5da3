"""recipes/librispeech/compare_toplines.py: per-utterance WER of topline runs and their paired bootstrap."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module():
    spec = importlib.util.spec_from_file_location(
        "compare_toplines", os.path.join(ROOT, "recipes", "librispeech", "compare_toplines.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(path, hyps, extra=None):
    refs = {"a": "THE CAT SAT", "b": "A DOG RAN HOME", "c": "HELLO"}
    data = {"references": refs, "hypotheses": {"unit_to_spec_units": hyps, **(extra or {})}}
    path.write_text(json.dumps(data))
    return str(path)


def test_corpus_wer_and_paired_difference(tmp_path, capsys):
    compare = _module()
    perfect = {"a": "the cat sat", "b": "a dog ran home", "c": "hello"}
    worse = {"a": "the bat sat", "b": "a dog ran", "c": "hello there"}  # 1 + 1 + 1 errors over 8 words
    first = _run(tmp_path / "a.json", worse, {"original": perfect})
    second = _run(tmp_path / "b.json", perfect)
    rows = [("worse", compare.per_utterance(first, "unit_to_spec_units")),
            ("original", compare.per_utterance(first, "original")),
            ("perfect", compare.per_utterance(second, "unit_to_spec_units"))]
    table, count = compare.compare(rows, num_resamples=200)
    assert count == 3
    assert table[0]["wer"] == pytest.approx(3 / 8) and "difference" not in table[0]
    assert table[1]["wer"] == table[2]["wer"] == 0.0
    assert table[2]["difference"] == pytest.approx(-3 / 8)  # weighted by reference words: corpus WER
    assert table[2]["low"] <= table[2]["difference"] <= table[2]["high"] <= 0
    assert compare.main([first, f"{first}:original", second]) == 0
    out = capsys.readouterr().out
    assert "| a.json:original | 0.000 | -0.375" in out


def test_refuses_missing_condition_and_disjoint_runs(tmp_path):
    compare = _module()
    first = _run(tmp_path / "a.json", {"a": "the cat sat"})
    with pytest.raises(SystemExit, match="no hypotheses for condition 'original'"):
        compare.per_utterance(first, "original")
    with pytest.raises(SystemExit, match="No topline JSON"):
        compare.per_utterance(str(tmp_path / "missing.json"), "unit_to_spec_units")
    other = _run(tmp_path / "b.json", {"b": "a dog"})
    rows = [(p, compare.per_utterance(p, "unit_to_spec_units")) for p in (first, other)]
    with pytest.raises(SystemExit, match="share no utterance"):
        compare.compare(rows)


def test_session11_vocoder_table_is_what_the_kept_runs_give():
    """RESULTS.md (session 11) quotes these from the kept topline JSONs."""
    compare = _module()
    folder = os.path.join(ROOT, "recipes", "librispeech", "measured", "session11", "vocoder_topline")
    names = ["base_dim128_1500steps", "mel1.0", "4000steps", "dim192_4000steps", "dim192_4000steps_mel1.0"]
    rows = [(n, compare.per_utterance(os.path.join(folder, n + ".json"), "unit_to_spec_units")) for n in names]
    rows.append(("original", compare.per_utterance(os.path.join(folder, names[0] + ".json"), "original")))
    table, count = compare.compare(rows, num_resamples=10000, seed=0)
    assert count == 40
    wer = {row["label"]: round(row["wer"], 3) for row in table}
    assert wer == {"base_dim128_1500steps": 0.645, "mel1.0": 0.577, "4000steps": 0.522,
                   "dim192_4000steps": 0.482, "dim192_4000steps_mel1.0": 0.450, "original": 0.395}
    best = table[4]
    assert best["high"] < 0  # the wider, longer-trained mel vocoder is better than the session-10 one
