"""Item 4 (backbone level): Llama-3.2-1B-shaped generation, KV cache vs full recompute.

TASLM's cost per generated word is one backbone step (text token + speech token
share a position), so 50 greedy steps of a randomly initialized
``LlamaForCausalLM`` with Llama-3.2-1B's shape stand for 50 words. The official
TASLM recomputes the whole sequence at every step (reference-taste.md section 11);
the toolkit keeps a KV cache. Used when ``benchmarks/taslm_generation.py`` (the
TASLM-level measurement) is not available; :func:`llama_generation` is the one
function ``run.py`` calls.
"""

import torch

from bench_common import GENERATION_REPEATS, Row, device, measure

#: Llama-3.2-1B's shape (random weights).
LLAMA_1B = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True, max_position_embeddings=2048,
                rope_theta=500000.0)
LLAMA_MICRO = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=128, vocab_size=1000, tie_word_embeddings=True, max_position_embeddings=256)


@torch.inference_mode()
def greedy(model, prompt, steps, use_cache):
    """``steps`` greedy tokens after ``prompt (1, P)``; with a KV cache or recomputing all positions."""
    ids, new, past = prompt, [], None
    for step in range(steps):
        if use_cache:
            out = model(input_ids=ids if past is None else new[-1], past_key_values=past, use_cache=True,
                        logits_to_keep=1)
            past = out.past_key_values
        else:
            out = model(input_ids=ids, use_cache=False, logits_to_keep=1)
        new.append(out.logits[:, -1].argmax(-1, keepdim=True))
        if not use_cache:
            ids = torch.cat([ids, new[-1]], dim=1)
    return torch.cat(new, dim=1)


def llama_generation(quick=False, log=print, steps=None, prompt_length=20):
    """Rows for item 4: ``steps`` (50) generation steps, cached vs recomputed.

    Each path gets a 2-step warm-up run, then the minimum of ``GENERATION_REPEATS``
    timed runs is reported.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    steps = steps or (10 if quick else 50)
    shape = LLAMA_MICRO if quick else LLAMA_1B
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    torch.manual_seed(0)
    config = LlamaConfig(**shape, attn_implementation="sdpa")
    model = LlamaForCausalLM(config).to(device(), dtype).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e9
    prompt = torch.randint(0, shape["vocab_size"], (1, prompt_length), generator=torch.Generator().manual_seed(1))
    prompt = prompt.to(device())
    timed, outs = {}, {}
    for use_cache in (False, True):
        greedy(model, prompt, 2, use_cache)  # warm-up: allocator, kernels (a short run does it)
        timed[use_cache], outs[use_cache] = measure(lambda: greedy(model, prompt, steps, use_cache),
                                                    repeats=GENERATION_REPEATS)
        log(f"  llama generation cache={use_cache}: {timed[use_cache].seconds:.2f} s")
    same = torch.equal(outs[True], outs[False])
    name = "Llama-3.2-1B shape" if not quick else "micro Llama"
    note = (f"backbone level ({params:.2f} B params, {str(dtype).replace('torch.', '')}, prompt {prompt_length}); "
            f"identical tokens: {'yes' if same else 'NO'}")
    del model
    return [Row("4 TASLM generation", f"{name}, {steps} steps (words)", "recompute", "KV cache",
                timed[False], timed[True], note)]
