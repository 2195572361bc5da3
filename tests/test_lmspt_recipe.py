"""LM-SPT through the one recipe entry point (``task: lmspt``): train, test, export, reload (slow)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "recipes", "librispeech", "train.py")

pytestmark = pytest.mark.slow


def test_lmspt_recipe_trains_tests_and_exports(tmp_path, tiny_whisper_dir):
    from taste_toolkit.data.synthetic_corpus import generate_corpus

    corpus = tmp_path / "corpus"
    generate_corpus(corpus, seed=3, num_speakers=2, utterances_per_split={"train": 5, "dev": 2, "test": 2},
                    num_workers=0, progress=False)
    out = tmp_path / "out"
    cmd = [
        sys.executable, TRAIN, "hparams/lmspt_25hz.yaml", f"--data_folder={corpus}", f"--prep_folder={tmp_path / 'prep'}",
        f"--output_folder={out}", f"--whisper_source={tiny_whisper_dir}", "--number_of_epochs=2", "--d_model=32",
        "--semantic_codebook_size=16", "--acoustic_codebook_size=16", "--acoustic_num_quantizers=2",
        "--vocoder_options={whisper_mel_griffin_lim: {n_iter: 2}}",
        "--dynamic_batch_sampler_train={max_batch_length: 12, num_buckets: 2, shuffle: True, batch_ordering: random}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"STDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    results = json.loads((out / "test_results.json").read_text())["test"]
    assert results["token_rate_hz"] == pytest.approx(25.0, rel=0.05)
    assert results["bitrate_bps"] == pytest.approx(results["token_rate_hz"] * 3 * 4, rel=1e-3)
    assert results["recon"] > 0 and results["distill"] > 0
    history = json.loads((out / "curves.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["train"]["loss"] < history[0]["train"]["loss"]
    for name in ("train_log.txt", "curves.png", "reconstruction.png", "tokenizer/taste_config.json"):
        assert (out / name).exists(), name

    from taste_toolkit.lmspt import load_tokenizer

    tok = load_tokenizer(out / "tokenizer")
    assert tok.info()["alignment"] == "frame" and tok.token_rate == 25.0
    import soundfile as sf

    wav, sr = sf.read(next((corpus / "test").rglob("*.flac")), dtype="float32")
    speech = tok.reconstruct(wav, sr)
    assert abs(speech.waveforms[0].numel() - len(wav) * 16000 / sr) < 160
