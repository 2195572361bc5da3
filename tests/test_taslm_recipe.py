"""End-to-end debug runs of hparams/taslm_token.yaml and taslm_embedding.yaml on a tiny tokenizer + corpus."""

import csv
import json
import os
from pathlib import Path

import pytest
import soundfile as sf
import torch

from taste_toolkit.errors import MissingResourceError

ROOT = Path(__file__).resolve().parents[1]
TINY_LM = ("{vocab_size: 80, hidden_size: 32, intermediate_size: 64, num_layers: 1, num_heads: 4, "
           "num_kv_heads: 2, extra_sentences: 50, steps: 8, batch_size: 8, warmup: 2}")


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory, tiny_whisper_dir, tiny_taste_model, make_wavs):
    """A saved tiny tokenizer and train/dev/test manifests of noise 'utterances' with grammar transcripts."""
    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.training.text_lm import grammar_sentences

    root = tmp_path_factory.mktemp("taslm_recipe")
    texts = [t for t in grammar_sentences(300, seed=7) if len(t) < 50][:20]  # the tiny aggregator takes 64 chars
    model, text_tok = tiny_taste_model(tiny_whisper_dir, texts, root / "sp")
    TasteTokenizer(model, text_tok).save_pretrained(str(root / "tokenizer"))
    wavs, lengths = make_wavs([16000 + 800 * i for i in range(20)], seed=1)
    (root / "manifests").mkdir()
    for split, rows in (("train", range(0, 12)), ("dev", range(12, 16)), ("test", range(16, 20))):
        with open(root / "manifests" / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ID", "duration", "wav", "spk_id", "wrd"])
            for i in rows:
                path = root / f"utt{i}.wav"
                sf.write(path, wavs[i, : lengths[i]].numpy(), 16000)
                w.writerow([f"u{i}", lengths[i].item() / 16000, str(path), str(i % 3), texts[i].upper()])
    return root


def run(yaml, root, out, *extra):
    from taste_toolkit.training.taslm_recipe import main

    main([str(ROOT / "hparams" / yaml), f"--output_folder={out}", f"--tokenizer_folder={root / 'tokenizer'}",
          f"--manifest_folder={root / 'manifests'}", f"--token_cache={root / 'cache'}",
          f"--text_lm_folder={root / 'text_lm'}", f"--text_lm_options={TINY_LM}", "--num_quantizers=2",
          "--codebook_size=16", "--lora={r: 2, alpha: 4, dropout: 0.0, target_modules: [q_proj, v_proj]}",
          "--batch_size=4", "--noprogressbar",
          f"--minimal_pairs={{folder: {root / 'minimal_pairs'}, num_pairs: 2, num_speakers: 2, max_chars: 40}}",
          *extra])


@pytest.mark.slow
@pytest.mark.parametrize("yaml", ["taslm_token.yaml", "taslm_embedding.yaml"])
def test_debug_run_end_to_end_and_resume(tiny_setup, tmp_path, yaml, capsys):
    from taste_toolkit.taslm.model import TaslmModel

    torch.set_num_threads(1)
    out = tmp_path / "run"
    run(yaml, tiny_setup, out, "--number_of_epochs=2")
    results = json.loads((out / "test_results.json").read_text())
    assert {"test", "text_perplexity", "two_choice", "parameters"} <= set(results)
    assert {"taste_acc_l0", "taste_acc_l1", "text_ppl"} <= set(results["test"])
    assert set(results["text_perplexity"]) == {"taslm_with_speech", "taslm_text_only", "base_lm"}
    assert 0 < results["parameters"]["trainable"] < results["parameters"]["total"]
    two_choice = results["two_choice"]
    assert {"token_mismatch", "shuffled_ending", "prosody_minimal_pairs", "speaker_minimal_pairs"} <= set(two_choice)
    for r in two_choice.values():
        assert 0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1
    assert two_choice["speaker_minimal_pairs"]["n"] == two_choice["prosody_minimal_pairs"]["n"] == 2
    assert (out / "curves.png").stat().st_size > 0
    # Only trainable parameters are checkpointed.
    ckpts = sorted((out / "save").glob("CKPT*/trainable.ckpt"))
    saved = torch.load(ckpts[-1], weights_only=True)
    assert saved and all("lora_" in k or not k.startswith("backbone.") for k in saved)
    loaded = TaslmModel.from_pretrained(str(out / "taslm"))
    assert loaded.config["head_name"] == ("taste_token" if "token" in yaml else "taste_embedding")
    if "token" in yaml:
        check_cli(tiny_setup, out / "taslm", tmp_path, capsys)
    # Resume: a longer run continues from the saved epoch instead of starting over.
    run(yaml, tiny_setup, out, "--number_of_epochs=3")
    history = json.loads((out / "curves.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]


def check_cli(root, taslm, tmp_path, capsys):
    """``taste score`` on the built-in sets and on a StoryCloze-style folder; ``taste generate`` errors."""
    import shutil

    from taste_toolkit.cli import main as cli

    common = ["--taslm", str(taslm), "--model", str(root / "tokenizer")]
    capsys.readouterr()
    assert cli(["score", *common, "--manifest", str(root / "manifests" / "test.csv"), "--cache", str(root / "cache")]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"token_mismatch", "shuffled_ending"}
    rows = list(csv.DictReader(open(root / "manifests" / "test.csv")))
    for sub in ("sSC", "tSC"):
        (tmp_path / "sc" / sub).mkdir(parents=True)
        for i, kind in enumerate(("correct", "incorrect")):
            stem = tmp_path / "sc" / sub / f"s0_{kind}"
            shutil.copy(rows[i]["wav"], f"{stem}.wav")
            (stem.parent / f"{stem.name}.txt").write_text(rows[i]["wrd"])
    assert cli(["score", *common, "--folder", str(tmp_path / "sc")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {"sSC", "tSC"} and scores["sSC"]["n"] == 1
    os.remove(tmp_path / "sc" / "tSC" / "s0_correct.txt")
    assert cli(["score", *common, "--folder", str(tmp_path / "sc")]) == 1
    assert "no transcript" in capsys.readouterr().err


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    from taste_toolkit.training.taslm_recipe import load_stage1_tokenizer

    with pytest.raises(MissingResourceError, match="train.py hparams/taste.yaml"):
        load_stage1_tokenizer(str(tmp_path / "nope"))
