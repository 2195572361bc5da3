"""Issue 18, speed where users wait: batched generation, ``taste resynthesize`` RTF, dynamic batching.

Exactness first: each row of a batched generation equals the same prompt decoded
alone (greedy, and sampled for TASLM, whose rows get their own generators). Then
each benchmark runs in its ``--quick`` mode and only the structure of its JSON and
its invariants are checked; timings and ratios are never asserted.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from _taslm_fixtures import SENTENCES, make_tiny_llm
from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.registry import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


# ------------------------------------------------------------------ unit decoders
def _decoder_batch(batch, vocab, speech_dim, speaker_dim, seed=0, concat=False):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (batch,), generator=g)
    n = int(lengths.max())
    speech_lengths = torch.randint(3, 12, (batch,), generator=g) if concat else lengths
    word_ids = torch.stack([torch.arange(n) // 2 for _ in range(batch)])
    return dict(
        tokens=torch.randint(0, vocab, (batch, n), generator=g),  # random ids in the padding too
        token_lengths=lengths,
        speech=torch.randn(batch, int(speech_lengths.max()), speech_dim, generator=g),
        speech_lengths=speech_lengths,
        speaker=torch.randn(batch, speaker_dim, generator=g) if speaker_dim else None,
        word_ids=word_ids,
    )


def _row(data, i):
    n, m = int(data["token_lengths"][i]), int(data["speech_lengths"][i])
    return dict(tokens=data["tokens"][i : i + 1, :n], token_lengths=data["token_lengths"][i : i + 1],
                speech=data["speech"][i : i + 1, :m], speech_lengths=data["speech_lengths"][i : i + 1],
                speaker=None if data["speaker"] is None else data["speaker"][i : i + 1],
                word_ids=data["word_ids"][i : i + 1, :n])


@pytest.mark.parametrize("name,options", [
    ("unit_transformer", {}),
    ("unit_transformer", {"fusion": "concat", "speaker_dim": 6}),
    ("word_pointer_transformer", {}),
])
def test_batched_unit_generation_equals_one_at_a_time(name, options):
    """B = 8 rows of different lengths (random ids in the padding, which must not matter)."""
    torch.manual_seed(3)
    opts = dict(vocab_size=20, num_units=12, speech_dim=8, d_model=32, num_layers=2, num_heads=4, ffn_dim=64,
                dropout=0.0, **options)
    model = build("decoder", name, opts).eval()
    data = _decoder_batch(8, 20, 8, options.get("speaker_dim", 0), concat=options.get("fusion") == "concat")
    extra = {"word_ids": data["word_ids"]} if name == "word_pointer_transformer" else {}
    keys = ("tokens", "token_lengths", "speech", "speech_lengths", "speaker")
    gen = dict(max_len_ratio=6.0, min_len_ratio=1.0)
    units, lengths = model.generate(**{k: data[k] for k in keys}, **extra, **gen)
    assert len(set(lengths.tolist())) > 1  # rows stop at different steps
    for i in range(8):
        row = _row(data, i)
        one_extra = {"word_ids": row["word_ids"]} if name == "word_pointer_transformer" else {}
        one, one_len = model.generate(**{k: row[k] for k in keys}, **one_extra, **gen)
        assert int(one_len) == int(lengths[i]), i
        assert torch.equal(units[i, : int(lengths[i])], one[0, : int(one_len)]), i
        assert (units[i, int(lengths[i]) :] == -1).all()


# ------------------------------------------------------------------ TASLM
@pytest.fixture(scope="module")
def taslm_models(tmp_path_factory):
    from taste_toolkit.taslm.codebook import SpeechCodebook
    from taste_toolkit.taslm.model import build_taslm

    folder = make_tiny_llm(tmp_path_factory.mktemp("tiny_llm_speed"))
    torch.manual_seed(0)
    codebook = SpeechCodebook(torch.randn(2, 8, 4))
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    models = {}
    for head, delay in [("taste_token", 1), ("taste_embedding", 1), ("taste_token", 2)]:
        torch.manual_seed(0)
        model = build_taslm(folder, codebook, head, {"num_quantizers": 2, "codebook_size": 8}, lora=lora, delay=delay)
        with torch.no_grad():  # random adapters and an even fusion: speech and LoRA take part
            model.fusion.logits.copy_(torch.zeros(2))
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.1 * torch.randn_like(p))
        models[(head, delay)] = model.eval()
    return models


def _prompts(count=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        words = SENTENCES[i % len(SENTENCES)].split()[: 1 + i % 4]
        out.append((words, torch.randint(0, 8, (len(words), 2), generator=g)))
    return out


@pytest.mark.parametrize("key", [("taste_token", 1), ("taste_embedding", 1), ("taste_token", 2)])
def test_taslm_generate_batch_equals_one_at_a_time(taslm_models, key):
    from taste_toolkit.taslm.generation import GenerationConfig, generate, generate_batch

    model = taslm_models[key]
    prompts = _prompts()
    configs = [GenerationConfig(max_new_words=6, min_new_words=0, max_new_tokens=30),
               # hot sampling: rows stop at different steps, on EOS, max_new_words or max_new_tokens
               GenerationConfig(max_new_words=3, min_new_words=1, max_new_tokens=12, top_p=1.0, temperature=3.0,
                                seed=1),
               GenerationConfig(max_new_words=8, min_new_words=2, max_new_tokens=14, top_p=0.9,
                                repetition_penalty=1.2, taste_sample=True, seed=3)]
    lengths = []
    for cfg in configs:
        alone = [generate(model, w, c, cfg) for w, c in prompts]
        lengths.append({r.steps for r in alone})
        for use_cache in (True, False):
            together = generate_batch(model, prompts, cfg, use_cache=use_cache)
            assert len(together) == len(prompts)
            for a, b in zip(alone, together):
                assert a.new_token_ids == b.new_token_ids
                assert torch.equal(a.codes, b.codes)
                assert (a.words, a.steps, a.stop_reason, a.num_prompt_words) == (b.words, b.steps, b.stop_reason,
                                                                              b.num_prompt_words)
    assert max(len(steps) for steps in lengths) > 1  # rows of different lengths: per-row stopping is exercised


def test_taslm_generate_batch_bad_inputs(taslm_models):
    from taste_toolkit.taslm.generation import generate_batch

    model = taslm_models[("taste_token", 1)]
    with pytest.raises(InputError, match="No prompts"):
        generate_batch(model, [])
    with pytest.raises(InputError, match="Empty prompt"):
        generate_batch(model, [(["the"], torch.zeros(1, 2, dtype=torch.long)), ([], torch.zeros(0, 2))])


# ------------------------------------------------------------------ corpus durations
def test_librispeech_duration_mix_and_corpus_option():
    from taste_toolkit.data import synthetic_corpus as sc

    d = sc.librispeech_durations(np.random.default_rng(0), 50000)
    assert 12.4 < d.mean() < 13.0 and d.min() >= 1.3 and d.max() <= 24.5
    assert 0.6 < ((d >= 10) & (d <= 16)).mean() < 0.8
    options = dict(seed=5, num_speakers=2, utterances_per_split={"train": 6}, prosody_probability=0.3,
                   durations="librispeech-train-clean-100")
    jobs = sc._plan("/nowhere", options)
    for job in jobs:
        rate = sc.SPEAKER_VOICES[job["speaker"] - 1001][3]
        assert len(job["words"]) == max(2, round(job["target_duration"] * rate / 60))
    # The default mix draws exactly as before the option existed (no target, one sentence each).
    default = sc._plan("/nowhere", dict(options, durations="embedded"))
    assert all("target_duration" not in j and 4 <= len(j["words"]) <= 16 for j in default)
    assert [j["words"] for j in default] == [j["words"] for j in sc._plan("/nowhere", {k: v for k, v in options.items()
                                                                                     if k != "durations"})]
    with pytest.raises(ConfigError, match="durations must be one of"):
        sc.generate_corpus("/nowhere", durations="uniform")


def test_librispeech_mix_corpus_follows_its_targets(tmp_path):
    from taste_toolkit.data import synthetic_corpus as sc

    summary = sc.generate_corpus(tmp_path, seed=3, num_speakers=1, utterances_per_split={"train": 2}, num_workers=0,
                                 durations="librispeech-train-clean-100", progress=False)
    assert summary["options"]["durations"] == "librispeech-train-clean-100"
    with open(tmp_path / "train" / "metadata.jsonl") as f:
        records = [json.loads(line) for line in f]
    for r in records:
        assert abs(r["duration"] - r["target_duration"]) <= 0.25 * r["target_duration"] + 0.5, r


# ------------------------------------------------------------------ the benchmarks, quick mode
def _run_quick(script, tmp_path, timeout=900):
    out = tmp_path / "result.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, script), "--quick", "--output", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_batched_generation_benchmark_quick(tmp_path):
    result = _run_quick("bench_batched_generation.py", tmp_path)
    assert result["machine"]["logical cores"] >= 1
    names = [c["name"] for c in result["cases"]]
    assert names == ["unit_transformer micro", "taslm micro"]
    for c in result["cases"]:
        assert c["identical_outputs"] is True, c
        assert c["generated_tokens"] > 0 and c["batch"] >= 2
        assert c["sequential_seconds"] > 0 and c["batched_seconds"] > 0
        assert c["throughput_ratio"] == pytest.approx(c["sequential_seconds"] / c["batched_seconds"], rel=0.02)
    assert sum(result["cases"][0]["units_per_row"]) == result["cases"][0]["generated_tokens"]
    assert sum(result["cases"][1]["lm_positions_per_row"]) == result["cases"][1]["generated_tokens"]
    assert result["all_identical"] is True
    assert result["target"]["throughput_ratio_at_least"] == 4.0 and result["target"]["met"] is False  # quick never claims it


def test_resynthesize_benchmark_quick(tmp_path):
    result = _run_quick("bench_resynthesize.py", tmp_path)
    (clip,) = result["clips"]
    stages = clip["stage_seconds"]
    assert set(stages) >= {"load", "encode", "aggregate", "decode units", "vocode", "other"}
    assert all(v >= 0 for v in stages.values())
    # The random decoder is held to the input's number of units.
    assert clip["units"] == round(clip["seconds_of_audio"] * clip["unit_frame_rate"]) > 0
    assert result["dominant_stage"] in ("encode", "aggregate", "decode units", "vocode")
    assert sum(result["share_of_processing"].values()) == pytest.approx(1.0, abs=0.01)
    assert result["rtf_processing"] == pytest.approx(
        sum(v for k, v in result["rtf_by_stage"].items() if k != "load"), rel=0.01)
    assert result["rtf_command_with_load"] >= result["rtf_processing"] > 0


def test_dynamic_batching_benchmark_quick(tmp_path):
    result = _run_quick("bench_dynamic_batching.py", tmp_path)
    for proxy in result["padding_proxy"].values():
        fixed, dynamic = proxy["fixed"], proxy["dynamic"]
        assert fixed["real_s"] == pytest.approx(dynamic["real_s"], rel=1e-6)  # every utterance once per epoch
        assert fixed["padded_s"] >= fixed["real_s"] and dynamic["padded_s"] >= dynamic["real_s"]
        assert proxy["padded_audio_ratio_fixed_over_dynamic"] == pytest.approx(
            (1 + fixed["padding_waste"]) / (1 + dynamic["padding_waste"]), rel=0.01)
    paths = result["training"]["paths"]
    assert set(paths) == {"dynamic", "fixed"}
    for p in paths.values():
        assert p["steps"] >= 1 and p["padded_audio_s"] >= p["audio_s"] > 0
    assert result["target"]["met"] is False


def _dynamic_batching_module():
    """``benchmarks/bench_dynamic_batching.py`` as a module (the folder is not a package)."""
    sys.path.insert(0, BENCH)
    try:
        import bench_dynamic_batching
    finally:
        sys.path.remove(BENCH)
    return bench_dynamic_batching


def test_padding_proxy_batches_cover_each_utterance_once():
    bench = _dynamic_batching_module()
    dynamic_batches, fixed_batches, padding_stats = bench.dynamic_batches, bench.fixed_batches, bench.padding_stats
    from taste_toolkit.data.synthetic_corpus import librispeech_durations

    d = librispeech_durations(np.random.default_rng(1), 300)
    for batches in (fixed_batches(len(d), 8, np.random.default_rng(0)), dynamic_batches(d, 0)):
        assert sorted(i for b in batches for i in b) == list(range(len(d)))
    stats = padding_stats(d, [list(range(len(d)))])
    assert stats["padded_s"] == pytest.approx(d.max() * len(d), rel=1e-3)


def test_padding_proxy_quadratic_ratio_counts_batch_size_times_longest_squared():
    bench = _dynamic_batching_module()
    dynamic_batches, fixed_batches, padding_proxy = bench.dynamic_batches, bench.fixed_batches, bench.padding_proxy
    from taste_toolkit.data.synthetic_corpus import librispeech_durations

    d = librispeech_durations(np.random.default_rng(2), 200)
    proxy = padding_proxy(d, epochs=2, seed=0)
    rng = np.random.default_rng(0)  # padding_proxy's own draws, in its order
    fixed = [b for _ in range(2) for b in fixed_batches(len(d), 8, rng)]
    dynamic = [b for e in range(2) for b in dynamic_batches(d, e)]

    def cost(batches):
        return sum(len(b) * max(d[i] for i in b) ** 2 for b in batches)

    assert proxy["padded_length_squared_ratio_fixed_over_dynamic"] == pytest.approx(cost(fixed) / cost(dynamic),
                                                                                    rel=1e-3)
    # Length-sorted batches waste less on a quadratic cost than on a linear one.
    assert proxy["padded_length_squared_ratio_fixed_over_dynamic"] > proxy["padded_audio_ratio_fixed_over_dynamic"] > 1
