"""recipes/librispeech/wer_by_source.py: WER per clip source, weighted by reference words."""

import csv
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module():
    spec = importlib.util.spec_from_file_location("wer_by_source", os.path.join(ROOT, "recipes", "librispeech",
                                                                                  "wer_by_source.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_weighted_by_reference_words_per_source(tmp_path, capsys):
    rows = [
        {"system": "a", "id": "librivox-1", "wer.ref_text": "one two three four", "wer.utt_wer": "0.5"},
        {"system": "a", "id": "librivox-2", "wer.ref_text": "one two three four five six", "wer.utt_wer": "0.0"},
        {"system": "a", "id": "asterisk-x-y", "wer.ref_text": "hello there", "wer.utt_wer": "1.5"},
        {"system": "a", "id": "asterisk-z", "wer.ref_text": "not scored", "wer.utt_wer": ""},
    ]
    with open(tmp_path / "per_utterance.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    module = _module()
    out = module.wer_by_source(str(tmp_path))
    assert out == {("a", "librivox"): (0.2, 10), ("a", "asterisk"): (1.5, 2)}
    module.main([str(tmp_path)])
    assert "| a | librivox | 0.200 | 10 |" in capsys.readouterr().out
