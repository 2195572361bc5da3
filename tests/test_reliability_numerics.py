"""Numerics of the stage-1 Brain: a non-finite loss is reported with its batch IDs and cannot poison the model.

The quantizer's EMA codebooks are updated inside the forward pass, before the loss
is known, so a batch with NaN activations would leave NaN codebooks behind for
good. The Brain rolls them back, SpeechBrain drops the NaN gradients, and after
``nonfinite_patience`` such batches training stops with every offending ID.
Codebook usage is part of the logged stats (dead-code revival itself is tested in
``test_quantizers.py::test_dead_code_replacement_revives_codes``).
"""

import dataclasses
import logging

import pytest
import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch

from taste_toolkit.errors import TasteError
from taste_toolkit.training.tokenizer_brain import NonFiniteLossError, TasteTokenizerBrain

TEXTS = ["the cat sat on the mat", "a dog ran far away", "hello world again"]


@pytest.fixture
def brain(tiny_taste_model, tiny_whisper_dir, tmp_path):
    model, text_tok = tiny_taste_model(tiny_whisper_dir, TEXTS * 5, tmp_path / "sp")
    brain = TasteTokenizerBrain(
        modules={"model": model},
        opt_class=lambda params: torch.optim.AdamW(params, lr=1e-3),
        hparams={"cache_encoder_outputs": False},
        run_opts={"device": "cpu", "nonfinite_patience": 1, "noprogressbar": True},
    )
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    brain.modules.train()
    brain.nonfinite_count = 0  # what Brain._fit_train does at each epoch start
    return brain, text_tok


def _batch(text_tok, ids, seed):
    g = torch.Generator().manual_seed(seed)
    examples = []
    for i, uid in enumerate(ids):
        t = text_tok.encode_words(TEXTS[i % len(TEXTS)])
        examples.append({
            "id": uid, "duration": 1.0,
            "sig": 0.1 * torch.randn(16000, generator=g),
            "tokens": torch.tensor(t.ids), "word_ids": torch.tensor(t.word_ids),
            "units": torch.randint(0, 20, (30,), generator=g),
        })
    return PaddedBatch(examples)


def _nan_aggregator(model):
    return model.aggregator.register_forward_hook(
        lambda module, args, out: dataclasses.replace(out, embeddings=out.embeddings * float("nan")))


def test_nonfinite_loss_is_reported_and_rolled_back(brain, caplog):
    brain, text_tok = brain
    model = brain.modules.model
    loss = brain.fit_batch(_batch(text_tok, ["ok-1", "ok-2"], 0))
    assert torch.isfinite(loss)
    stats = brain.stage_stats(float(loss))
    assert {"rvq_usage_l0", "rvq_usage_l1", "rvq_perplexity_l0"} <= set(stats)  # codebook usage is logged

    buffers = {k: v.clone() for k, v in model.quantizer.named_buffers()}
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    hook = _nan_aggregator(model)
    try:
        with caplog.at_level(logging.WARNING):
            loss = brain.fit_batch(_batch(text_tok, ["bad-1", "bad-2"], 1))
        assert not torch.isfinite(loss)
        assert any("bad-1" in r.getMessage() and "bad-2" in r.getMessage() for r in caplog.records)
        for k, v in model.quantizer.named_buffers():  # EMA codebooks as before the batch, not NaN
            assert torch.equal(v, buffers[k]), k
        for k, v in model.named_parameters():  # no update from NaN gradients
            assert torch.equal(v.detach(), params[k]), k

        with pytest.raises(NonFiniteLossError, match=r"bad-1.*bad-3") as err:  # patience (1) exhausted
            brain.fit_batch(_batch(text_tok, ["bad-3"], 2))
        assert isinstance(err.value, TasteError) and "nonfinite_patience" in str(err.value)
    finally:
        hook.remove()
    assert all(torch.isfinite(v).all() for v in model.quantizer.buffers() if v.is_floating_point())
    assert torch.isfinite(brain.fit_batch(_batch(text_tok, ["ok-3"], 3)))  # training goes on from a sane state
