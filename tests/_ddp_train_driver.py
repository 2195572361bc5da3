"""Run ``recipes/librispeech/train.py`` unchanged (argv as for it) and dump what each rank holds.

Used by ``tests/test_distributed.py`` under ``torchrun``. The only addition to the
recipe is a hook on :class:`~taste_toolkit.training.tokenizer_brain.TasteTokenizerBrain`:
the ids of every training batch this rank ran are recorded, and when ``fit``
returns (before any test-time checkpoint loading) the rank writes
``<output_folder>/rank<r>.pt`` with its trained modules' state dicts (parameters
and buffers, e.g. the RVQ's EMA codebooks), the batch ids, and how it ran
(world size, backend, whether the model was wrapped in DDP).
"""

import os
import runpy
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "recipes", "librispeech", "train.py")
MODULES = ("aggregator", "quantizer", "decoder")


def main():
    from taste_toolkit.training.tokenizer_brain import TasteTokenizerBrain

    fit, batch_start = TasteTokenizerBrain.fit, TasteTokenizerBrain.on_fit_batch_start
    batches = []

    def on_fit_batch_start(self, batch, should_step):
        batches.append((int(self.hparams.epoch_counter.current), list(batch.id)))
        return batch_start(self, batch, should_step)

    def fit_and_dump(self, *args, **kwargs):
        out = fit(self, *args, **kwargs)
        dist = torch.distributed
        model = self.hparams.model
        report = {
            "rank": dist.get_rank() if dist.is_initialized() else 0,
            "world_size": dist.get_world_size() if dist.is_initialized() else 1,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "ddp": isinstance(self.modules.model, torch.nn.parallel.DistributedDataParallel),
            "batches": batches,
            "weights": {m: {k: v.detach().cpu().clone() for k, v in getattr(model, m).state_dict().items()}
                        for m in MODULES},
        }
        torch.save(report, os.path.join(self.hparams.output_folder, f"rank{report['rank']}.pt"))
        return out

    TasteTokenizerBrain.on_fit_batch_start = on_fit_batch_start
    TasteTokenizerBrain.fit = fit_and_dump
    sys.argv = [TRAIN] + sys.argv[1:]
    runpy.run_path(TRAIN, run_name="__main__")


if __name__ == "__main__":
    main()
