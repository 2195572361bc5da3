"""SpeechBrain Brain for LM-SPT (frame-rate tokens, resynthesis distillation).

Reuses the TASTE tokenizer Brain for what is shared (frozen-encoder output cache,
staged initialization, non-finite loss logging, NewBob annealing, checkpoints,
``curves.json``) and replaces the step and the statistics:

* loss = ``w_recon`` L1(main decoder log-mel, real log-mel)
  + ``w_distill`` MSE(Whisper(aux decoder log-mel), Whisper(real audio))
  + ``w_commit`` (semantic + acoustic commitment);
* logged per stage: each loss term, token rate (Hz), bitrate of all streams and of
  the semantic stream (bps), codebook usage/perplexity per stream.

The cached encoder ``keys`` of the original audio are also the distillation
target, so the frozen Whisper runs on real audio once per utterance and, per step,
only on the aux decoder's predicted log-mel (forward + backward to its input).
"""

import logging
import os

import speechbrain as sb

from taste_toolkit.training.tokenizer_brain import TasteTokenizerBrain
from taste_toolkit.utils import relative_to_absolute

logger = logging.getLogger(__name__)

class LmsptBrain(TasteTokenizerBrain):
    """Trains ``modules.model`` (an :class:`~taste_toolkit.models.lmspt.LmsptModel`).

    Expected hparams: ``cache_encoder_outputs`` (bool), ``lr_annealing`` (optional),
    ``train_logger``, ``output_folder``, ``checkpointer``.
    """

    curve_keys = ("loss", "recon", "distill")  # curves.png shows LM-SPT's loss terms

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, rel = batch.sig
        wav_lens = relative_to_absolute(rel, wavs.shape[1])
        enc = self._encoder_out(batch)
        mels, mel_lens = self._model.log_mels(wavs, wav_lens)
        out = self.modules.model(enc, mels, mel_lens)  # through the DDP wrapper under torchrun
        if stage == sb.Stage.TEST and self._example is None:
            n = int(mel_lens[0])
            self._example = {
                "id": batch.id[0],
                "mels": [m[0, :n].detach().float().cpu() for m in (mels, out.mels, out.aux_mels)],
            }
        return out, mel_lens

    def compute_objectives(self, predictions, batch, stage):
        out, _ = predictions
        c = self._counts
        c["batches"] = c.get("batches", 0) + 1
        for k, v in out.losses.items():
            c[k] = c.get(k, 0.0) + float(v.detach())
        c["seconds"] = c.get("seconds", 0.0) + float(sum(batch.duration))
        c["speech_tokens"] = c.get("speech_tokens", 0.0) + float(out.tokens.lengths.sum())
        for k, v in out.metrics.items():
            self._qmetrics.setdefault(k, []).append(float(v))
        return out.loss

    def on_stage_start(self, stage, epoch=None):
        super().on_stage_start(stage, epoch)
        self._example = None

    def stage_stats(self, stage_loss, stage=None):
        c = self._counts
        stats = {"loss": round(float(stage_loss), 4)}
        for k in ("recon", "distill", "commit_semantic", "commit_acoustic"):
            if k in c:
                stats[k] = round(c[k] / c["batches"], 5)
        if c.get("seconds"):
            model = self._model
            rate = c["speech_tokens"] / c["seconds"]
            stats["token_rate_hz"] = round(rate, 3)
            stats["bitrate_bps"] = round(rate * model.bits_per_token, 1)
            stats["semantic_bitrate_bps"] = round(rate * model.semantic_quantizer.bits_per_vector, 1)
        for k, v in self._qmetrics.items():
            if "usage" in k or "perplexity" in k:
                stats[k] = round(sum(v) / len(v), 4)
        return stats

    def _write_test_outputs(self, stats):
        """``reconstruction.png``: real, reconstructed and semantic-only (aux) log-mel of one test utterance."""
        if not sb.utils.distributed.if_main_process() or self._example is None:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ex = self._example
        titles = ("original", "reconstruction (all streams)", "aux decoder (semantic stream only)")
        fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
        for ax, mel, title in zip(axes, ex["mels"], titles):
            ax.imshow(mel.T.numpy(), aspect="auto", origin="lower", extent=(0, mel.shape[0] / 100, 0, mel.shape[1]))
            ax.set_title(f"{title}  [{ex['id']}]", fontsize=9)
            ax.set_ylabel("mel bin")
        axes[-1].set_xlabel("time (s)")
        fig.tight_layout()
        fig.savefig(os.path.join(self.hparams.output_folder, "reconstruction.png"), dpi=100)
        plt.close(fig)

