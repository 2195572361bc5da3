"""Evaluation harness end to end on a tiny tokenizer and 3 espeak utterances.

Covers the run (systems x metrics, summary, CSVs, plots), resuming, and bad
input: outputs at other sample rates, missing outputs, mismatched IDs, empty
references, duplicate IDs, changed options.
"""

import csv
import glob
import json
import math
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from taste_toolkit.api import TasteTokenizer
from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.evaluation import Evaluation, load_config, load_eval_set, validate_config
from taste_toolkit.evaluation.harness import resample
from taste_toolkit.evaluation.systems import System, register_system
from taste_toolkit.plugins.vocoder.griffin_lim import GriffinLimVocoder
from taste_toolkit.registry import build

NUM_UNITS = 16
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@register_system("test_resampled_copy")
class ResampledCopy(System):
    """The source itself, returned at another rate (22.05 kHz); fails on one chosen utterance."""

    def __init__(self, rate=22050, fail_on=""):
        self.rate, self.fail_on = rate, fail_on

    def reconstruct(self, wav, sample_rate, text, utt_id):
        if utt_id == self.fail_on:
            raise InputError("deliberate failure")
        return resample(wav, sample_rate, self.rate), self.rate, {"speech_tokens": 2, "bits_per_token": 10.0}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from taste_toolkit.data.synthetic_corpus import generate_corpus

    root = str(tmp_path_factory.mktemp("corpus"))
    generate_corpus(root, seed=3, num_speakers=1, utterances_per_split={"test": 3}, num_workers=0, progress=False)
    with open(os.path.join(root, "test", "metadata.jsonl"), encoding="utf-8") as f:
        items = [json.loads(line) for line in f]
    return os.path.join(root, "test"), items


@pytest.fixture(scope="module")
def tokenizer_dir(tiny_taste_model, tiny_whisper_dir, corpus, tmp_path_factory):
    """A tiny untrained TASTE tokenizer with fitted mel_kmeans units and a griffin_lim vocoder."""
    split, items = corpus
    texts = [it["text"].lower() for it in items]
    model, text_tok = tiny_taste_model(tiny_whisper_dir, texts * 10, tmp_path_factory.mktemp("sp"),
                                       num_units=NUM_UNITS, sp_options={"vocab_size": 64, "model_type": "word"})
    ext = build("units", "mel_kmeans", {"num_units": NUM_UNITS, "kmeans_iters": 5})
    root = os.path.dirname(split)
    ext.fit([torch.from_numpy(sf.read(os.path.join(root, it["audio"]), dtype="float32")[0]) for it in items])
    folder = tmp_path_factory.mktemp("export") / "tiny"
    TasteTokenizer(model, text_tok, units=ext, vocoder=GriffinLimVocoder.from_units_extractor(ext, n_iter=4)
                   ).save_pretrained(folder)
    return str(folder)


def make_config(out, split, tokenizer_dir, fail_on="", **extra):
    return {
        "output_folder": str(out),
        "data": {"metadata": split},
        "decoding": {"top_k": 5, "seed": 0, "max_len_ratio": 4.0},
        "systems": [
            {"name": "original", "type": "original"},
            {"name": "units_topline", "type": "units_topline", "options": {"tokenizer": tokenizer_dir}},
            {"name": "tiny", "type": "tokenizer", "options": {"path": tokenizer_dir}},
            {"name": "copy22k", "type": "test_resampled_copy", "options": {"fail_on": fail_on}},
        ],
        "metrics": [{"name": "token_rate"}, {"name": "unit_accuracy"}, {"name": "codebook_usage"},
                    {"name": "mcd"}, {"name": "duration_ratio"},
                    {"name": "duration_consistency", "label": "dur_dtw", "options": {"aligner": "dtw"}},
                    {"name": "utmos"}],
        **extra,
    }


def rows_of(out, label):
    with open(os.path.join(out, "scores", f"{label}.csv"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_run_summary_resume_and_bad_outputs(corpus, tokenizer_dir, tmp_path, monkeypatch):
    split, items = corpus
    out = tmp_path / "eval"
    fail = items[1]["id"]
    result = Evaluation(make_config(out, split, tokenizer_dir, fail), progress=False).run()
    s = result["systems"]
    assert list(s) == ["original", "units_topline", "tiny", "copy22k"]

    # The source against itself: exact known answers.
    assert s["original"]["mcd"]["mcd_db"] == 0.0 and s["original"]["duration_ratio"]["duration_ratio"] == 1.0
    assert s["original"]["dur_dtw"]["consistency"] == 1.0
    assert s["original"]["token_rate"]["token_rate_hz"] is None  # not applicable -> null in JSON

    # A 22.05 kHz output is resampled to the source's 16 kHz: same length, (almost) the same spectrum.
    assert s["copy22k"]["duration_ratio"]["duration_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert s["copy22k"]["mcd"]["mcd_db"] < 0.5 < s["units_topline"]["mcd"]["mcd_db"]
    # The failed utterance is missing: counted, with its reason, and in no average.
    assert s["copy22k"]["missing"] == 1 and s["copy22k"]["utterances"] == 2
    assert result["missing"]["copy22k"] == {fail: "deliberate failure"}
    assert s["copy22k"]["mcd"]["scored"] == 2 and s["tiny"]["mcd"]["scored"] == 3
    seconds = sum(it["duration"] for it in items if it["id"] != fail)
    assert s["copy22k"]["token_rate"]["token_rate_hz"] == pytest.approx(4 / seconds, rel=1e-3)

    # Tokenizer rows: one speech token per word, 2 RVQ layers x 4 bits, teacher-forced accuracy in [0, 1].
    words = sum(len(it["words"]) for it in items)
    total = sum(it["duration"] for it in items)
    assert s["tiny"]["token_rate"]["token_rate_hz"] == pytest.approx(words / total, rel=1e-3)
    assert s["tiny"]["token_rate"]["bitrate_bps"] == pytest.approx(8 * words / total, rel=1e-3)
    assert 0 <= s["tiny"]["unit_accuracy"]["unit_top1"] <= s["tiny"]["unit_accuracy"]["unit_top5"] <= 1
    assert 0 < s["tiny"]["codebook_usage"]["usage"] <= 1
    assert s["units_topline"]["token_rate"]["token_rate_hz"] == pytest.approx(25.0, rel=0.02)
    assert s["units_topline"]["unit_accuracy"]["unit_top1"] is None

    # Report files: skipped metric with its reason, missing outputs, per-utterance CSV, plots.
    md = (out / "summary.md").read_text()
    assert md.splitlines()[0].startswith("| System | utts | missing | Hz | bps |")
    assert "`utmos`: no UTMOS model given" in md and "`copy22k`: 1 utterance(s)" in md
    with open(out / "per_utterance.csv", newline="", encoding="utf-8") as f:
        wide = list(csv.DictReader(f))
    assert len(wide) == 4 * 3 - 1 and "mcd.mcd_db" in wide[0]
    for name in ("durations.png", f"f0_{items[0]['id']}.png", "attention_tiny.png"):
        assert (out / "plots" / name).stat().st_size > 5_000, name

    # Rerun: nothing is reconstructed or scored again, same summary.
    def boom(*args, **kwargs):
        raise AssertionError("finished work was redone")

    from taste_toolkit.plugins.metric.mcd import MelCepstralDistortion
    from taste_toolkit.evaluation import systems

    monkeypatch.setattr(systems.TokenizerSystem, "reconstruct", boom)
    monkeypatch.setattr(MelCepstralDistortion, "score", boom)
    before = rows_of(out, "mcd")
    again = Evaluation(make_config(out, split, tokenizer_dir, fail), progress=False).run()
    assert again["systems"] == result["systems"] and rows_of(out, "mcd") == before
    monkeypatch.undo()

    # A regenerated output (different audio -> different output_id) is scored again, only it.
    meta = out / "outputs" / "tiny" / f"{items[0]['id']}.json"
    extras = json.loads(meta.read_text())
    meta.write_text(json.dumps({**extras, "output_id": "changed"}))
    Evaluation(make_config(out, split, tokenizer_dir, fail, metrics=[{"name": "mcd"}]), progress=False).run()
    new_rows = rows_of(out, "mcd")
    assert len(new_rows) == len(before) + 1 and new_rows[-1]["output_id"] == "changed"

    # Other options for an existing system are refused, not mixed in.
    cfg = make_config(out, split, tokenizer_dir, fail)
    cfg["systems"][3]["options"]["rate"] = 8000
    with pytest.raises(InputError, match="copy22k.*other options"):
        Evaluation(cfg, progress=False).run()


def test_a_retrained_model_at_the_same_path_is_not_mixed_with_old_outputs(corpus, tokenizer_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    split, _ = corpus
    model_dir = tmp_path / "tok"
    shutil.copytree(tokenizer_dir, model_dir)
    cfg = {"output_folder": str(tmp_path / "eval"), "data": {"metadata": split, "limit": 1},
           "decoding": {"top_k": 5, "seed": 0, "max_len_ratio": 4.0},
           "systems": [{"name": "tiny", "type": "tokenizer", "options": {"path": str(model_dir)}}],
           "metrics": [{"name": "token_rate"}]}
    Evaluation(cfg, progress=False).run()
    Evaluation(cfg, progress=False).run()  # same weights: reused
    weights = load_file(str(model_dir / "model.safetensors"))
    key = next(k for k, v in weights.items() if v.is_floating_point())
    weights[key] = weights[key] + 0.5  # "retrained" in place
    save_file(weights, str(model_dir / "model.safetensors"))
    with pytest.raises(InputError, match="tiny.*other options"):
        Evaluation(cfg, progress=False).run()


def test_directory_system_mismatched_ids_and_empty_reference(corpus, tmp_path):
    split, items = corpus
    # An evaluation set where one transcript is empty.
    data = tmp_path / "set"
    data.mkdir()
    with open(data / "metadata.jsonl", "w", encoding="utf-8") as f:
        for k, it in enumerate(items):
            shutil.copy(os.path.join(os.path.dirname(split), it["audio"]), data / f"{it['id']}.flac")
            f.write(json.dumps({"id": it["id"], "audio": f"{it['id']}.flac", "text": "" if k == 2 else it["text"]}) + "\n")
    # Outputs made elsewhere at 22.05 kHz: one right ID, one unknown ID, one utterance without a file.
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    wav, sr = sf.read(data / f"{items[0]['id']}.flac", dtype="float32")
    sf.write(outputs / f"{items[0]['id']}.wav", resample(wav, sr, 22050), 22050)
    sf.write(outputs / "spk-999-0000.wav", wav, sr)
    config = {"output_folder": str(tmp_path / "eval"), "data": {"metadata": str(data)},
              "systems": [{"name": "original", "type": "original"},
                          {"name": "elsewhere", "type": "directory", "options": {"folder": str(outputs)}},
                          {"name": "absent", "type": "tokenizer", "options": {"path": str(tmp_path / "nope")}}],
              "metrics": [{"name": "duration_ratio"}, {"name": "wer"}]}
    result = Evaluation(config, progress=False).run()
    s = result["systems"]
    assert result["unmatched_ids"] == {"elsewhere": ["spk-999-0000"]}
    # A system whose model is not there is skipped with the reason; its utterances are all missing.
    assert "not found" in result["skipped_systems"]["absent"] and s["absent"]["missing"] == 3
    assert s["elsewhere"]["missing"] == 2 and s["elsewhere"]["duration_ratio"]["scored"] == 1
    assert s["elsewhere"]["duration_ratio"]["duration_ratio"] == pytest.approx(1.0, abs=1e-3)
    # The empty transcript is not scored by WER (reported), the other two are.
    assert s["original"]["wer"]["scored"] == 2
    assert result["metric_errors"]["wer"]["original"] == {items[2]["id"]: "empty reference transcript"}
    md = open(os.path.join(config["output_folder"], "summary.md"), encoding="utf-8").read()
    assert "spk-999-0000" in md and "empty reference transcript" in md and "Skipped systems" in md
    assert s["original"]["wer"]["wer"] < 0.8  # tiny.en reads espeak (int8, beam 5)


def test_eval_set_and_config_errors(corpus, tmp_path):
    split, items = corpus
    dup = tmp_path / "metadata.jsonl"
    line = json.dumps({"id": "x", "audio": os.path.join(os.path.dirname(split), items[0]["audio"]), "text": "a"})
    dup.write_text(line + "\n" + line + "\n")
    with pytest.raises(InputError, match="duplicate utterance IDs"):
        load_eval_set(str(dup))
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"id": "y", "audio": "nowhere.wav", "text": "a"}) + "\n")
    with pytest.raises(InputError, match="not found"):
        load_eval_set(str(missing))
    assert [u.id for u in load_eval_set(split, limit=2)] == [it["id"] for it in items[:2]]
    assert load_eval_set(split)[0].words[0][0] == items[0]["words"][0]
    base = {"output_folder": "x", "data": {"metadata": split}, "metrics": [{"name": "mcd"}]}
    with pytest.raises(ConfigError, match="unique"):
        validate_config({**base, "systems": [{"name": "a", "type": "original"}, {"name": "a", "type": "original"}]})
    with pytest.raises(ConfigError, match="label"):
        validate_config({**base, "systems": [{"name": "a", "type": "original"}],
                         "metrics": [{"name": "wer"}, {"name": "wer"}]})
    from taste_toolkit.evaluation import build_system

    with pytest.raises(ConfigError, match="unknown type"):
        build_system({"name": "c", "type": "encodec"})


def test_forced_alignment_times_every_word(corpus):
    from taste_toolkit.metrics.asr import OfflineASR

    split, items = corpus
    wav, sr = sf.read(os.path.join(os.path.dirname(split), items[0]["audio"]), dtype="float32")
    words = OfflineASR(compute_type="int8", cpu_threads=1).align_words(wav, sr, items[0]["text"])
    assert [w.lower() for w, _, _ in words] == [w.lower() for w in items[0]["words"]]
    starts = np.array([s for _, s, _ in words])
    assert np.all(np.diff(starts) >= 0) and all(s <= e <= len(wav) / sr + 0.05 for _, s, e in words)


def test_cli_verb_reports_config_errors(tmp_path, capsys):
    from taste_toolkit.cli import main

    assert main(["evaluate", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_folder: x\ndata: {metadata: y}\nsystems: [{name: a, type: original}]\nmetrics: [{name: mcd}]\n")
    assert main(["evaluate", "--config", str(bad), "--metrics", "wer"]) == 1
    assert "--metrics names ['wer']" in capsys.readouterr().err


def test_word_walking_decoder_is_teacher_forced_on_reference_word_times(corpus, tiny_taste_model, tiny_whisper_dir,
                                                                         tmp_path):
    """A word_pointer tokenizer needs the word of every unit to be teacher-forced: the harness
    passes the reference word times; without them its unit accuracy is skipped, not an error."""
    from taste_toolkit.evaluation.systems import teacher_forced_counts

    split, items = corpus
    model, text_tok = tiny_taste_model(tiny_whisper_dir, [it["text"].lower() for it in items] * 10, tmp_path,
                                       num_units=NUM_UNITS, sp_options={"vocab_size": 64, "model_type": "word"},
                                       decoder_name="word_pointer_transformer")
    ext = build("units", "mel_kmeans", {"num_units": NUM_UNITS, "kmeans_iters": 5})
    wavs = [sf.read(os.path.join(os.path.dirname(split), it["audio"]), dtype="float32")[0] for it in items]
    ext.fit([torch.from_numpy(w) for w in wavs])
    tok = TasteTokenizer(model.eval(), text_tok, units=ext)
    item, wav = items[0], wavs[0]
    tokens = tok.encode(wav, 16000, item["text"])
    with torch.no_grad():
        units = ext(torch.from_numpy(wav)[None], torch.tensor([wav.size]))[0][0]
    assert teacher_forced_counts(tok, tokens, units, None) == {}
    words = list(zip(item["words"], item["word_start"], item["word_end"]))
    counts = teacher_forced_counts(tok, tokens, units, words)
    # Targets: every unit, one boundary between consecutive words, end of speech.
    assert counts["tf_total"] == units.numel() + len(words)
    assert 0 <= counts["tf_top1"] <= counts["tf_top5"] <= counts["tf_total"]


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "hparams", "evaluate", "*.yaml"))
                                       + glob.glob(os.path.join(REPO, "recipes", "*", "measured", "*", "*.yaml"))),
                         ids=lambda p: os.path.relpath(p, REPO))
def test_shipped_evaluation_configs_name_real_systems_and_metrics(path):
    """Every config under hparams/evaluate/ (and each kept with a measurement under
    recipes/*/measured/) loads, and its system types and metrics (with
    their options) exist: a typo fails here, not after the first minutes of a run."""
    from taste_toolkit.evaluation.systems import system_types

    config = load_config(path)
    assert set(s["type"] for s in config["systems"]) <= set(system_types()), path
    for spec in config["metrics"]:
        build("metric", spec["name"], spec.get("options") or {})


def test_tokenizer_system_passes_decoder_specific_decoding_options(corpus, tokenizer_dir):
    """Keys beyond top_k/temperature/seed/max_len_ratio reach the decoder's generate (and are checked there)."""
    from taste_toolkit.evaluation.systems import TokenizerSystem

    split, items = corpus
    wav, sr = sf.read(os.path.join(os.path.dirname(split), items[0]["audio"]), dtype="float32")
    system = TokenizerSystem(tokenizer_dir, decoding={"max_len_ratio": 4.0, "switch_penalty": 1.0})
    # the tiny tokenizer's autoregressive decoder has no switch_penalty: refused by name, not dropped
    with pytest.raises(InputError, match="Unknown decoding option 'switch_penalty'"):
        system.reconstruct(torch.from_numpy(wav), sr, items[0]["text"], items[0]["id"])
    system = TokenizerSystem(tokenizer_dir, decoding={"max_len_ratio": 4.0, "min_len_ratio": 3.0})
    seen, decode = {}, system.tok.decode

    def spy(tokens, **options):
        seen.update(options)
        return decode(tokens, **options)

    system.tok.decode = spy
    system.reconstruct(torch.from_numpy(wav), sr, items[0]["text"], items[0]["id"])
    assert seen["min_len_ratio"] == 3.0 and seen["max_len_ratio"] == 4.0 and seen["top_k"] == 0
