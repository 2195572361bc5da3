"""Items 2 and 3: aggregator SDPA vs eager attention; unit-decoder KV cache vs recompute.

Both build the toolkit's own plugins through the registry (random weights), so the
timed code is the code that trains and runs.
"""

import torch

from bench_common import GENERATION_REPEATS, Row, device, measure
from taste_toolkit.interfaces import EncoderOutput
from taste_toolkit.registry import build

#: Aggregator geometries: the paper's (distil-large-v3 decoder) and the recipe's (tiny.en decoder).
AGGREGATORS = {
    "paper": dict(d_model=1280, num_layers=2, num_heads=20, ffn_dim=5120, key_dim=1280, value_dim=1280),
    "recipe": dict(d_model=384, num_layers=4, num_heads=6, ffn_dim=1536, key_dim=384, value_dim=384),
    "micro": dict(d_model=32, num_layers=1, num_heads=4, ffn_dim=64, key_dim=32, value_dim=32),
}
#: (geometry, batch, text tokens, encoder frames, train step?, repeats)
AGG_FULL = [
    ("recipe", 16, 40, 250, False, 3),
    ("recipe", 16, 40, 250, True, 3),
    ("paper", 4, 40, 750, False, 3),
    ("paper", 4, 40, 1500, False, 2),
    ("paper", 4, 40, 750, True, 2),
]
AGG_QUICK = [("micro", 2, 8, 50, False, 1), ("micro", 2, 8, 50, True, 1)]

#: Unit decoders: the recipe's (hparams/taste.yaml) and the paper's (CosyVoice-sized core).
DECODERS = {
    "recipe": dict(d_model=256, num_layers=4, num_heads=4, ffn_dim=1024, num_units=256, speech_dim=384,
                   text_layers=1, speech_layers=1),
    "paper": dict(d_model=1024, num_layers=7, num_heads=8, ffn_dim=2048, num_units=4096, speech_dim=1280,
                  speaker_dim=192, text_layers=3, speech_layers=2),
    "micro": dict(d_model=32, num_layers=1, num_heads=4, ffn_dim=64, num_units=20, speech_dim=8,
                  text_layers=1, speech_layers=1),
}
#: (geometry, text tokens, units, recompute too?)
GEN_FULL = [("recipe", 25, 100, True), ("recipe", 25, 500, True), ("paper", 25, 100, True), ("paper", 25, 500, False)]
GEN_QUICK = [("micro", 5, 20, True), ("micro", 5, 50, True)]


def _agg_inputs(batch, tokens, frames, key_dim, value_dim, vocab=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    dev = device()
    ids = torch.randint(0, vocab, (batch, tokens), generator=g)
    word_ids = (torch.arange(tokens) // 2).expand(batch, -1).contiguous()  # ~2 sub-words per word
    token_lengths = torch.full((batch,), tokens)
    token_lengths[1::2] = tokens * 3 // 4  # a mix of lengths, so masks matter
    frame_lengths = torch.full((batch,), frames)
    frame_lengths[1::2] = frames * 3 // 4
    enc = EncoderOutput(torch.randn(batch, frames, key_dim, generator=g).to(dev),
                        torch.randn(batch, frames, value_dim, generator=g).to(dev), frame_lengths.to(dev), 50.0)
    return ids.to(dev), token_lengths.to(dev), word_ids.to(dev), enc


def aggregator_benchmark(quick=False, log=print):
    """Item 2: the ``cross_attention`` aggregator with SDPA vs eager attention."""
    rows = []
    for geometry, batch, tokens, frames, train, repeats in AGG_QUICK if quick else AGG_FULL:
        geo = AGGREGATORS[geometry]
        models = {}
        for impl in ("eager", "sdpa"):
            torch.manual_seed(0)
            models[impl] = build("aggregator", "cross_attention", dict(geo, vocab_size=1000, max_positions=448,
                                                                      attention_implementation=impl)).to(device())
        models["eager"].load_state_dict(models["sdpa"].state_dict())
        inputs = _agg_inputs(batch, tokens, frames, geo["key_dim"], geo["value_dim"])
        timed, outs = {}, {}
        for impl, model in models.items():
            model.train(train)

            def run():
                if train:
                    model.zero_grad(set_to_none=True)
                    out = model(*inputs)
                    out.embeddings.square().mean().backward()
                    return out.embeddings.detach()
                with torch.inference_mode():
                    return model(*inputs).embeddings

            timed[impl], outs[impl] = measure(run, repeats=repeats, warmup=1)
            log(f"  aggregator {geometry} {'train' if train else 'infer'} T={frames} {impl}: {timed[impl].seconds:.3f} s")
        diff = float((outs["eager"] - outs["sdpa"]).abs().max())
        what = "fwd+bwd" if train else "forward"
        rows.append(Row("2 aggregator", f"{geometry} {what} b{batch} N={tokens} T={frames}", "eager", "sdpa",
                        timed["eager"], timed["sdpa"], f"max |eager - sdpa| = {diff:.1e}"))
    return rows


def _gen_inputs(geo, tokens, seed=0):
    g = torch.Generator().manual_seed(seed)
    dev = device()
    data = dict(tokens=torch.randint(0, 1000, (1, tokens), generator=g).to(dev),
                token_lengths=torch.tensor([tokens], device=dev),
                speech=torch.randn(1, tokens, geo["speech_dim"], generator=g).to(dev),
                speech_lengths=torch.tensor([tokens], device=dev))
    if geo.get("speaker_dim"):
        data["speaker"] = torch.randn(1, geo["speaker_dim"], generator=g).to(dev)
    return data


def decoder_benchmark(quick=False, log=print):
    """Item 3: ``unit_transformer.generate`` with the KV cache vs full recompute.

    Greedy decoding with end-of-speech forbidden until ``units`` (min = max length
    ratio), so both paths generate exactly ``units`` units; the outputs are compared.
    Each path: one warm-up run, then the minimum of ``GENERATION_REPEATS`` timed runs.
    """
    rows = []
    model, current = None, None
    for geometry, tokens, units, recompute in GEN_QUICK if quick else GEN_FULL:
        if current != geometry:
            torch.manual_seed(0)
            model = build("decoder", "unit_transformer", dict(DECODERS[geometry], vocab_size=1000, dropout=0.0,
                                                              max_positions=4096)).to(device()).eval()
            current = geometry
        data = _gen_inputs(DECODERS[geometry], tokens)
        ratio = units / tokens
        timed, outs = {}, {}
        for use_cache in ((False, True) if recompute else (True,)):
            def run():
                return model.generate(**data, max_len_ratio=ratio, min_len_ratio=ratio, use_cache=use_cache)

            timed[use_cache], outs[use_cache] = measure(run, repeats=GENERATION_REPEATS, warmup=1)
            log(f"  decoder {geometry} {units} units cache={use_cache}: {timed[use_cache].seconds:.3f} s")
        n = int(outs[True][1][0])
        if recompute:
            same = torch.equal(outs[True][0], outs[False][0])
            note = f"{n} units generated; identical units: {'yes' if same else 'NO'}"
        else:
            # Recompute costs sum_t (prefix + t) position-steps: quadratic in the units.
            factor = units * (tokens + 3 + units / 2) / (100 * (tokens + 3 + 50))
            note = f"{n} units; recompute skipped (would cost ~{factor:.0f}x the 100-unit recompute; see README)"
        rows.append(Row("3 unit decoder", f"{geometry} generate {units} units (N={tokens} text)", "recompute",
                        "KV cache", timed.get(False), timed[True], note))
    return rows
