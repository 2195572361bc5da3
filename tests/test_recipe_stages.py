"""The paper's staged schedule inside one recipe run, and the token measurements it writes (slow; CI runs it)."""

import json
import os

import pytest

from test_recipe import run_recipe, tiny_corpus  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

STAGES = "[{name: text_only, epochs: 1}, {name: no_vq, epochs: 1}, {name: rvq, epochs: 1}]"


def test_staged_run_writes_each_stage_initializes_from_the_last_and_resumes(tiny_corpus, tmp_path):  # noqa: F811
    out, prep = tmp_path / "out", tmp_path / "prep"
    proc = run_recipe("hparams/taste.yaml", tiny_corpus, prep, out, f"--stages={STAGES}")
    for k, name in enumerate(["text_only", "no_vq"]):
        folder = out / "stages" / f"{k}_{name}"
        assert (folder / "test_results.json").exists() and (folder / "train_log.txt").exists()
        assert not (folder / "tokenizer").exists()  # only the last stage exports
    assert "=== stage 3/3: rvq" in proc.stdout
    final = json.loads((out / "test_results.json").read_text())["test"]
    no_vq = json.loads((out / "stages" / "1_no_vq" / "test_results.json").read_text())["test"]
    text_only = json.loads((out / "stages" / "0_text_only" / "test_results.json").read_text())["test"]
    assert "token_rate_hz" not in text_only and "token_rate_hz" in no_vq and "rvq_perplexity_l0" not in no_vq
    # The last stage is the run's: RVQ codebooks (k-means over the training words), export, measurements.
    assert all(final[f"rvq_perplexity_l{r}"] >= 1.0 for r in range(4))
    assert (out / "tokenizer" / "taste_config.json").exists()
    assert 0.0 <= final["align_boundary_error_s"] < 5.0
    for key in ("probe_speaker_acc", "probe_prosody_bacc", "probe_log_duration_r2", "probe_oracle_prosody_bacc",
                "probe_text_only_log_duration_r2", "probe_speaker_chance"):
        assert key in final, key
    assert final["probe_speaker_chance"] == 0.5  # both voices of the tiny corpus are in the probe's training words
    log = (out / "stages" / "1_no_vq" / "train_log.txt").read_text()
    assert "epoch: 1" in log
    # Restarted: the finished stages are skipped, the last one resumes from its checkpoint.
    again = run_recipe("hparams/taste.yaml", tiny_corpus, prep, out, f"--stages={STAGES}")
    assert "=== stage 1/3" not in again.stdout and "=== stage 2/3" not in again.stdout
    assert "=== stage 3/3: rvq" in again.stdout


def test_staged_run_refuses_a_bad_stage_list_before_any_work(tiny_corpus, tmp_path):  # noqa: F811
    import subprocess
    import sys

    from test_recipe import ROOT, TRAIN

    out = tmp_path / "out"
    cmd = [sys.executable, TRAIN, "hparams/taste.yaml", f"--data_folder={tiny_corpus}",
           f"--prep_folder={tmp_path / 'prep'}", f"--output_folder={out}",
           "--stages=[{name: rvq, epochs: 1, init: previous}]"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "no stage comes before" in proc.stderr
    assert not os.path.exists(tmp_path / "prep")  # nothing was prepared


def test_default_schedule_is_text_only_then_no_vq_then_taste_and_zero_turns_it_off():
    from taste_toolkit.errors import ConfigError
    from taste_toolkit.training.staging import parse_stages, stage_plan, warmup_stages

    stages = parse_stages(warmup_stages(3, 5))
    plan = stage_plan(stages, "out")
    assert [(name, folder, o["number_of_epochs"], o["init_from"]) for name, folder, o in plan] == [
        ("text_only", "out/stages/0_text_only", 3, ""),
        ("rvq", "out", 5, "out/stages/0_text_only/save"),
    ]
    assert plan[0][2]["aggregator_name"] == "none" and plan[0][2]["export_folder"] == ""
    assert warmup_stages(0, 5) == []
    # With a no-VQ stage between them, the RVQ stage starts from it (its codebooks are fitted there).
    plan = stage_plan(parse_stages(warmup_stages(3, 4, no_vq_epochs=1)), "out")
    assert [(name, folder, o["number_of_epochs"], o["init_from"]) for name, folder, o in plan] == [
        ("text_only", "out/stages/0_text_only", 3, ""),
        ("no_vq", "out/stages/1_no_vq", 1, "out/stages/0_text_only/save"),
        ("rvq", "out", 4, "out/stages/1_no_vq/save"),
    ]
    assert plan[1][2]["quantizer_name"] == "identity"
    assert [s["name"] for s in warmup_stages(0, 4, no_vq_epochs=1)] == ["no_vq", "rvq"]
    assert warmup_stages(0, 5, no_vq_epochs=0) == []
    for bad in ((-1, 5), (3, "5"), (True, 5), (3, 5, -1)):
        with pytest.raises(ConfigError, match="must be an integer"):
            warmup_stages(*bad)
