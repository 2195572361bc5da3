"""SpeechBrain Brain for TASLM (stage 2): LoRA + fusion + TASTE head on a frozen LM.

Metrics per stage: loss, text perplexity (with the TASTE stream), TASTE token
accuracy per RVQ layer (top-1 of the token head; codes of the re-quantized mean
for the embedding head). Only trainable parameters reach the optimizer and the
checkpoint (see :class:`taste_toolkit.taslm.model.TrainableParameters`).

Resuming is exact as for stage 1 (:class:`~taste_toolkit.training.tokenizer_brain.TasteTokenizerBrain`):
atomic, checksummed checkpoints, ``--ckpt_interval_steps=N`` on the command line
wins over the YAML's ``ckpt_interval_minutes``, and the training loader draws its
worker seed from its own generator, so a run killed mid-epoch and restarted ends
with the weights of an uninterrupted run (CPU, fixed seed).
"""

import logging
import math

import speechbrain as sb
import torch

from taste_toolkit.training.checkpoints import make_robust
from taste_toolkit.training.lr_schedules import anneal
from taste_toolkit.training.tokenizer_brain import _steps_win_over_minutes, unwrap_ddp

logger = logging.getLogger(__name__)


class TaslmBrain(sb.Brain):
    """Trains ``modules.model`` (a :class:`~taste_toolkit.taslm.model.TaslmModel`).

    Expected hparams: ``train_logger``, ``output_folder``, ``seed``, optional ``lr_annealing``.
    """

    def __init__(self, modules=None, opt_class=None, hparams=None, run_opts=None, checkpointer=None):
        super().__init__(modules, opt_class, hparams, _steps_win_over_minutes(run_opts), make_robust(checkpointer))

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        # Iterating a DataLoader without a generator draws its base seed from the global
        # RNG: a run resumed mid-epoch would be one draw off (other LoRA dropout masks).
        if stage == sb.Stage.TRAIN and not loader_kwargs.get("generator"):
            loader_kwargs["generator"] = torch.Generator().manual_seed(int(getattr(self.hparams, "seed", 0) or 0))
        return super().make_dataloader(dataset, stage, ckpt_prefix=ckpt_prefix, **loader_kwargs)

    def init_optimizers(self):
        """One optimizer over the trainable parameters only (the frozen LM has none in it)."""
        params = [p for p in self.modules.parameters() if p.requires_grad]
        self.optimizer = self.opt_class(params)
        self.optimizers_dict = {"opt_class": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        return self.modules.model(batch)

    def compute_objectives(self, predictions, batch, stage):
        for k, v in predictions.stats.items():
            self._counts[k] = self._counts.get(k, 0.0) + float(v)
        return predictions.loss

    def on_stage_start(self, stage, epoch=None):
        self._counts = {}

    def stage_stats(self, stage_loss, stage=None):
        c = self._counts
        stats = {"loss": round(float(stage_loss), 4)}
        if c.get("text_count"):
            stats["text_ppl"] = round(math.exp(c["text_nll_sum"] / c["text_count"]), 3)
        n = c.get("taste_count", 0)
        if n:
            accs = [c[k] / n for k in sorted(c) if k.startswith("taste_correct_l")]
            for r, a in enumerate(accs):
                stats[f"taste_acc_l{r}"] = round(a, 4)
            stats["taste_acc_mean"] = round(sum(accs) / len(accs), 4)
            if "taste_sum_correct" in c:
                stats["taste_code_sum_acc"] = round(c["taste_sum_correct"] / n, 4)
            if "taste_mse_sum" in c:
                stats["taste_mse"] = round(c["taste_mse_sum"] / n, 5)
        return stats

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stats = self.stage_stats(stage_loss)
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            annealing = getattr(self.hparams, "lr_annealing", None)
            if annealing is not None:  # NewBob (dev loss) or LinearEpochDecay (epoch)
                anneal(annealing, self.optimizer, epoch, stats["loss"])
            fusion = getattr(unwrap_ddp(self.modules.model), "fusion", None)  # DDP under torchrun
            if fusion is not None and hasattr(fusion, "weights"):
                stats["fusion_speech_weight"] = round(float(fusion.weights[1]), 4)
            self.hparams.train_logger.log_stats({"epoch": epoch, "lr": lr}, self.train_stats, stats)
            self.checkpointer.save_and_keep_only(meta={"loss": stats["loss"]}, min_keys=["loss"], num_to_keep=2)
            self._plot_curves(epoch, stats)
        else:
            self.hparams.train_logger.log_stats({"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats)
            self.test_stats = stats

    def _plot_curves(self, epoch, valid_stats):
        """Append to ``curves.json`` and redraw ``curves.png`` (loss, text perplexity, TASTE accuracy)."""
        if not sb.utils.distributed.if_main_process():
            return
        from taste_toolkit.training.plots import update_curves

        update_curves(self.hparams.output_folder, epoch, self.train_stats, valid_stats,
                      keys=("loss", "text_ppl", "taste_acc_mean"))
