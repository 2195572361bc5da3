#!/usr/bin/env python3
"""Batched generation: B prompts in one KV-cached loop vs one prompt at a time.

Two generators, each fed the same B prompts both ways, greedy decoding:

* the unit decoder (``unit_transformer.generate``, the recipe's geometry from
  ``bench_models.DECODERS``; random weights, so the length of each row is set by
  ``min_len_ratio = max_len_ratio`` = ``--units-per-token`` x its text tokens, and
  the rows have different text lengths, so they stop at different steps);
* TASLM (``taslm.generation.generate_batch`` vs ``generate``) on a random Llama of
  the recipe's embedded text-LM geometry (``text_lm.DEFAULTS``: hidden 128, 4
  layers) with the recipe's LoRA, and on a larger one (``--taslm medium``:
  hidden 576, 12 layers, SmolLM-135M-like widths). Every row generates exactly
  ``--new-words`` words (EOS banned until then), a different number of LM
  positions per row.

Throughput = generated units (or LM positions) per second; the ratio is
(tokens/s batched) / (tokens/s one at a time) over the same prompts and the same
tokens, measured in one run: each path gets one untimed warm-up, then the minimum
of ``--repeats`` timed runs. Exactness is checked in the same run (each batched
row equals the prompt decoded alone). Writes JSON (default
``benchmarks/measured/batched_generation.json``)::

    OMP_NUM_THREADS=2 python benchmarks/bench_batched_generation.py
    python benchmarks/bench_batched_generation.py --quick --output /tmp/b.json   # tiny models, seconds
"""

import argparse
import logging
import os
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from bench_common import machine_description, measure, report_json  # noqa: E402

DEFAULT_OUTPUT = os.path.join(HERE, "measured", "batched_generation.json")
TARGET = 4.0

#: Random Llama backbones for TASLM: (hidden, layers, heads, kv heads, intermediate, BPE vocab).
TASLM_GEOMETRIES = {
    "recipe": dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=344, vocab=512),
    "medium": dict(hidden_size=576, num_layers=12, num_heads=9, num_kv_heads=3, intermediate_size=1536, vocab=512),
    "micro": dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64, vocab=160),
}
RECIPE_LORA = {"r": 16, "alpha": 32, "dropout": 0.0,
               "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def _ratio_entry(name, batch, tokens, seq, bat, identical, extra=None):
    seq_tps, bat_tps = tokens / seq.seconds, tokens / bat.seconds
    entry = {
        "name": name, "batch": batch, "generated_tokens": tokens,
        "sequential_seconds": round(seq.seconds, 4), "batched_seconds": round(bat.seconds, 4),
        "sequential_tokens_per_s": round(seq_tps, 1), "batched_tokens_per_s": round(bat_tps, 1),
        "throughput_ratio": round(bat_tps / seq_tps, 2), "identical_outputs": bool(identical),
    }
    entry.update(extra or {})
    return entry


# ------------------------------------------------------------------ unit decoder
def unit_decoder_case(geometry, batch, units_per_token, repeats, log=print, seed=0):
    """Unit decoder: ``batch`` prompts of different text lengths, batched vs one by one."""
    from bench_models import DECODERS

    from taste_toolkit.registry import build

    geo = DECODERS[geometry]
    torch.manual_seed(seed)
    model = build("decoder", "unit_transformer", dict(geo, vocab_size=1000, dropout=0.0, max_positions=4096)).eval()
    g = torch.Generator().manual_seed(seed)
    low, high = (3, 8) if geometry == "micro" else (12, 30)
    lengths = torch.randint(low, high + 1, (batch,), generator=g)
    n = int(lengths.max())
    tokens = torch.randint(0, 1000, (batch, n), generator=g)
    speech = torch.randn(batch, n, geo["speech_dim"], generator=g)
    speaker = torch.randn(batch, geo["speaker_dim"], generator=g) if geo.get("speaker_dim") else None
    opts = dict(max_len_ratio=units_per_token, min_len_ratio=units_per_token)

    def one(i):
        k = int(lengths[i])
        return model.generate(tokens[i : i + 1, :k], lengths[i : i + 1], speech[i : i + 1, :k], lengths[i : i + 1],
                              None if speaker is None else speaker[i : i + 1], **opts)

    def sequential():
        return [one(i) for i in range(batch)]

    def batched():
        return model.generate(tokens, lengths, speech, lengths, speaker, **opts)

    seq, seq_out = measure(sequential, repeats=repeats, warmup=1)
    bat, (units, unit_lengths) = measure(batched, repeats=repeats, warmup=1)
    identical = all(int(unit_lengths[i]) == int(l[0]) and torch.equal(units[i, : int(l[0])], u[0])
                    for i, (u, l) in enumerate(seq_out))
    total = int(unit_lengths.sum())
    entry = _ratio_entry(f"unit_transformer {geometry}", batch, total, seq, bat, identical,
                         {"text_tokens_per_row": lengths.tolist(), "units_per_row": unit_lengths.tolist()})
    log(f"  unit decoder {geometry} B={batch}: one at a time {seq.seconds:.3f} s, batched {bat.seconds:.3f} s, "
        f"ratio {entry['throughput_ratio']:.2f}x, identical: {identical}")
    return entry


# ------------------------------------------------------------------ TASLM
def build_random_taslm(folder, geometry, seed=0):
    """A TASLM on a random-init Llama of ``geometry`` with a BPE fitted on grammar sentences.

    Returns ``(model, sentences)``.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from taste_toolkit.taslm.codebook import SpeechCodebook
    from taste_toolkit.taslm.model import build_taslm
    from taste_toolkit.training.text_lm import grammar_sentences, train_bpe_tokenizer

    geo = TASLM_GEOMETRIES[geometry]
    sentences = grammar_sentences(400, seed=4321)
    tok = train_bpe_tokenizer(sentences, geo["vocab"], folder)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=geo["hidden_size"],
                         intermediate_size=geo["intermediate_size"], num_hidden_layers=geo["num_layers"],
                         num_attention_heads=geo["num_heads"], num_key_value_heads=geo["num_kv_heads"],
                         max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    R, K = (2, 8) if geometry == "micro" else (4, 256)
    codebook = SpeechCodebook(torch.randn(R, K, 16 if geometry == "micro" else 64))
    torch.manual_seed(seed)
    lora = dict(RECIPE_LORA, r=4, alpha=8) if geometry == "micro" else RECIPE_LORA
    model = build_taslm(folder, codebook, "taste_token", {"num_quantizers": R, "codebook_size": K}, lora=lora)
    with torch.no_grad():  # random adapters and an even fusion, so speech and LoRA take part
        model.fusion.logits.copy_(torch.zeros(2))
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn_like(p))
    return model.eval(), sentences


def taslm_case(geometry, batch, new_words, repeats, log=print, seed=0):
    """TASLM: ``batch`` prompts (2-6 words of grammar sentences), batched vs one by one."""
    from taste_toolkit.taslm.generation import GenerationConfig, generate, generate_batch

    with tempfile.TemporaryDirectory() as folder:
        model, sentences = build_random_taslm(folder, geometry, seed)
        g = torch.Generator().manual_seed(seed)
        R, K = model.codebook.num_quantizers, model.codebook.codebook_size
        prompts = []
        for i in range(batch):
            words = sentences[i].split()[: 2 + i % 5]
            prompts.append((words, torch.randint(0, K, (len(words), R), generator=g)))
        cfg = GenerationConfig(max_new_words=new_words, min_new_words=new_words, max_new_tokens=6 * new_words)
        seq, seq_out = measure(lambda: [generate(model, w, c, cfg) for w, c in prompts], repeats=repeats, warmup=1)
        bat, bat_out = measure(lambda: generate_batch(model, prompts, cfg), repeats=repeats, warmup=1)
        identical = all(a.new_token_ids == b.new_token_ids and torch.equal(a.codes, b.codes)
                        for a, b in zip(seq_out, bat_out))
        steps = [r.steps for r in bat_out]
        params = sum(p.numel() for p in model.parameters())
    entry = _ratio_entry(f"taslm {geometry}", batch, sum(steps), seq, bat, identical,
                         {"lm_positions_per_row": steps, "new_words_per_row": [len(r.new_words) for r in bat_out],
                          "parameters": params, "backbone": {k: v for k, v in TASLM_GEOMETRIES[geometry].items()}})
    log(f"  TASLM {geometry} B={batch}: one at a time {seq.seconds:.3f} s, batched {bat.seconds:.3f} s, "
        f"ratio {entry['throughput_ratio']:.2f}x, identical: {identical}")
    return entry


def run(quick=False, batch=8, repeats=3, units_per_token=10.0, new_words=20, taslm=("recipe", "medium"),
        log=print):
    """All cases; returns the JSON-ready result."""
    if quick:
        batch, repeats, units_per_token, new_words, taslm = min(batch, 4), 1, 4.0, 4, ("micro",)
    cases = [unit_decoder_case("micro" if quick else "recipe", batch, units_per_token, repeats, log)]
    cases += [taslm_case(g, batch, new_words, repeats, log) for g in taslm]
    ratios = [c["throughput_ratio"] for c in cases]
    return {
        "benchmark": "batched generation (B prompts at once vs one at a time, greedy, KV cache)",
        "command": "python benchmarks/bench_batched_generation.py" + (" --quick" if quick else ""),
        "machine": machine_description(),
        "settings": {"batch": batch, "repeats": repeats, "warmup": 1, "units_per_token": units_per_token,
                     "taslm_new_words": new_words, "timing": "min over repeats after one warm-up, per path"},
        "cases": cases,
        "target": {"throughput_ratio_at_least": TARGET, "min_ratio": min(ratios),
                   "met": bool(min(ratios) >= TARGET) and not quick},
        "all_identical": all(c["identical_outputs"] for c in cases),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models, B<=4, 1 repeat (the smoke test)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--units-per-token", type=float, default=10.0)
    parser.add_argument("--new-words", type=int, default=20)
    parser.add_argument("--taslm", default="recipe,medium", help="TASLM geometries, comma-separated")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Every row runs to its set length on purpose (random weights): not worth a warning per call.
    logging.getLogger("taste_toolkit.plugins.decoder.unit_transformer").setLevel(logging.ERROR)
    result = run(args.quick, args.batch, args.repeats, args.units_per_token, args.new_words,
                 tuple(g for g in args.taslm.split(",") if g))
    report_json(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
