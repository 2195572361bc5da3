#!/usr/bin/env python3
"""TASLM generation speed with vs without the KV cache, measured in one run.

Loads a trained TASLM (``<output_folder>/taslm`` of the TASLM recipe), takes the
first half of a test utterance (words + TASTE codes from the recipe's token cache,
or a built-in text prompt with pad codes) and generates the same continuation
twice under greedy decoding: with ``past_key_values`` (one new position per step)
and recomputing the whole sequence every step (the official loop). Each path gets a
short warm-up run, then ``--repeats`` timed runs of which the fastest is kept. Prints
tokens/s of each, their ratio, and whether both produced the same tokens::

    python benchmarks/taslm_generation.py --taslm results/taslm_token/1986/taslm --new-words 40
"""

import argparse
import glob
import json
import os
import sys

import torch


def prompt_from_cache(cache_dir, num_quantizers):
    files = sorted(glob.glob(os.path.join(cache_dir, "test_*.pt")))
    for path in files:
        records = torch.load(path, weights_only=True)
        for r in records:
            if r["codes"].shape[1] == num_quantizers:
                k = max(1, len(r["words"]) // 2)
                return r["words"][:k], r["codes"][:k]
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--taslm", default="results/taslm_token/1986/taslm", help="trained TASLM folder")
    parser.add_argument("--token-cache", default="results/prepared/taslm_tokens", help="TASLM token cache")
    parser.add_argument("--new-words", type=int, default=40, help="words to generate (EOS banned until then)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per path after the warm-up; the fastest is reported (default: 3)")
    parser.add_argument("--output", default="", help="also write the JSON result here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from taste_toolkit.taslm.generation import GenerationConfig, generate
    from taste_toolkit.taslm.model import TaslmModel

    model = TaslmModel.from_pretrained(args.taslm)
    R = model.codebook.num_quantizers
    prompt = prompt_from_cache(args.token_cache, R) or ("the teacher found".split(), torch.zeros(3, R, dtype=torch.long))
    cfg = GenerationConfig(max_new_words=args.new_words, min_new_words=args.new_words, max_new_tokens=8 * args.new_words)
    best = {}
    for use_cache in (True, False):
        generate(model, *prompt, GenerationConfig(max_new_words=2), use_cache=use_cache)  # warm-up
        runs = [generate(model, *prompt, cfg, use_cache=use_cache) for _ in range(max(1, args.repeats))]
        best[use_cache] = max(runs, key=lambda r: r.tokens_per_second)  # the least disturbed run
    cached, full = best[True], best[False]
    same_vectors = cached.codes.shape == full.codes.shape and torch.allclose(
        model.codebook.embed(cached.codes), model.codebook.embed(full.codes), atol=1e-4)
    result = {
        "taslm": args.taslm, "threads": args.threads, "repeats": max(1, args.repeats), "prompt_words": len(prompt[0]),
        "generated_words": len(cached.new_words), "lm_steps": cached.steps,
        "kv_cache_tokens_per_s": round(cached.tokens_per_second, 1),
        "no_cache_tokens_per_s": round(full.tokens_per_second, 1),
        "speedup": round(cached.tokens_per_second / full.tokens_per_second, 2),
        "same_text_tokens": cached.new_token_ids == full.new_token_ids,
        "same_taste_codes": torch.equal(cached.codes, full.codes),
        # Duplicate codewords in a degenerate RVQ make ties: compare the vectors the codes stand for.
        "same_taste_vectors": same_vectors,
        "same_output": cached.new_token_ids == full.new_token_ids and same_vectors,  # read by run.py
        "example": " ".join(cached.words[:30]),
    }
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
