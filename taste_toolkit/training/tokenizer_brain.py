"""SpeechBrain Brain for stage 1: training the TASTE tokenizer (and its ablations).

Loss = unit cross-entropy (teacher forcing, masked) + weighted quantizer loss.
Metrics: teacher-forced unit top-1/top-5 accuracy, per-layer codebook usage,
speech-token rate (Hz) and bitrate (bps). Relative SpeechBrain lengths are turned
into absolute ones here, once; every plugin works with absolute lengths.
"""

import logging
import os

import speechbrain as sb
import torch

from taste_toolkit.bitrate import bitrate
from taste_toolkit.errors import ConfigError, TasteError
from taste_toolkit.interfaces import EncoderOutput
from taste_toolkit.training.checkpoints import make_robust
from taste_toolkit.training.lr_schedules import anneal
from taste_toolkit.utils import relative_to_absolute

logger = logging.getLogger(__name__)


class EncoderOutputCache:
    """In-memory cache of frozen-encoder taps per utterance id (fp16, on CPU).

    The encoder is frozen and deterministic, so its output for an utterance never
    changes: computing it once instead of every epoch is the largest saving of a
    CPU run. Disable it (``cache_encoder_outputs: False``) when the encoder trains
    or the audio is augmented.
    """

    def __init__(self):
        self.store = {}

    def get(self, ids, device, dtype, frame_rate):
        if not all(i in self.store for i in ids):
            return None
        items = [self.store[i] for i in ids]
        lengths = torch.tensor([k.shape[0] for k, _ in items], device=device)
        t = int(lengths.max())
        keys = torch.zeros(len(items), t, items[0][0].shape[-1], device=device, dtype=dtype)
        values = torch.zeros(len(items), t, items[0][1].shape[-1], device=device, dtype=dtype)
        for b, (k, v) in enumerate(items):
            keys[b, : k.shape[0]] = k.to(device, dtype)
            values[b, : v.shape[0]] = v.to(device, dtype)
        return EncoderOutput(keys, values, lengths, frame_rate)

    def put(self, ids, out):
        for b, i in enumerate(ids):
            n = int(out.lengths[b])
            self.store[i] = (out.keys[b, :n].detach().half().cpu(), out.values[b, :n].detach().half().cpu())


class NonFiniteLossError(TasteError, ValueError):
    """Training losses stayed non-finite for more batches than ``nonfinite_patience`` allows."""


class TasteTokenizerBrain(sb.Brain):
    """Trains ``modules.model`` (a :class:`~taste_toolkit.models.tokenizer.TasteModel`).

    Expected hparams: ``cache_encoder_outputs`` (bool), optional ``lr_annealing``,
    ``train_logger``, ``output_folder``, ``seed``.

    Reliability: the checkpointer is made a
    :class:`~taste_toolkit.training.checkpoints.RobustCheckpointer` (atomic,
    checksummed saves; recovery falls back past broken checkpoints); with
    ``--ckpt_interval_steps=N`` a run killed mid-epoch resumes from its last
    intra-epoch checkpoint and, on CPU with a fixed seed, ends with the same
    weights as an uninterrupted run (batch order, RNG, optimizer, quantizer EMA
    and encoder outputs are all reproduced). A non-finite loss is reported with
    its batch's utterance IDs and the quantizer's EMA codebooks are rolled back,
    so one bad batch cannot poison them.
    """

    def __init__(self, modules=None, opt_class=None, hparams=None, run_opts=None, checkpointer=None):
        super().__init__(modules, opt_class, hparams, _steps_win_over_minutes(run_opts), make_robust(checkpointer))
        self._nonfinite_ids = []

    @property
    def _model(self):
        """``modules.model`` itself: under torchrun SpeechBrain wraps it in DDP, which has none of
        its attributes. Forward passes still go through ``self.modules.model`` (the wrapper syncs
        the gradients)."""
        return unwrap_ddp(self.modules.model)

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        # torch's DataLoader draws its worker base seed from the *global* RNG each time
        # it is iterated; a run resumed mid-epoch would then be one draw off (other
        # dropout masks). A generator of its own keeps the global RNG untouched.
        if stage == sb.Stage.TRAIN and not loader_kwargs.get("generator"):
            seed = int(getattr(self.hparams, "seed", 0) or 0)
            loader_kwargs["generator"] = torch.Generator().manual_seed(seed)
        return super().make_dataloader(dataset, stage, ckpt_prefix=ckpt_prefix, **loader_kwargs)

    def on_fit_start(self):
        super().on_fit_start()
        self._init_from_previous_stage()

    def _init_from_previous_stage(self):
        """Initialize from an earlier stage's checkpoint (paper's staged schedule).

        Only when no checkpoint of this run exists yet (a resumed run keeps its own
        weights). Modules are matched by name; parameters the earlier stage did not
        have (e.g. the speech branch of the decoder after text-only) keep their init.
        """
        src = getattr(self.hparams, "init_from", "") or ""
        if not src or getattr(self, "_previous_stage_loaded", False):
            return
        if self.checkpointer is not None and self.checkpointer.find_checkpoint() is not None:
            return
        self._previous_stage_loaded = True
        from taste_toolkit.training.staging import load_previous_stage

        load_previous_stage(src, self._model, getattr(self.hparams, "init_modules", None))

    # -------------------------------------------------------------- forward
    def _encoder_out(self, batch):
        model = self._model
        if not model.needs_audio:
            return None
        wavs, rel = batch.sig
        use_cache = getattr(self.hparams, "cache_encoder_outputs", False)
        enc = model.encoder
        lengths = relative_to_absolute(rel, wavs.shape[1])
        if not use_cache:
            with torch.no_grad():
                return model.encode_audio(wavs, lengths)
        if not hasattr(self, "_enc_cache"):
            self._enc_cache = EncoderOutputCache()
        with torch.no_grad():
            for b, uid in enumerate(batch.id):
                if uid not in self._enc_cache.store:
                    # One utterance at a time, unpadded: its cached output then does not
                    # depend on which batch it first came in, so a resumed run (other
                    # batches in memory) caches bit-identical values.
                    n = int(lengths[b])
                    self._enc_cache.put([uid], model.encode_audio(wavs[b:b + 1, :n], lengths[b:b + 1]))
        # What was stored (fp16-rounded) is what every epoch and every resumed run sees.
        return self._enc_cache.get(batch.id, self.device, wavs.dtype, enc.frame_rate)

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        tokens, tok_rel = batch.tokens
        word_ids, _ = batch.word_ids
        units, unit_rel = batch.units
        tok_lens = relative_to_absolute(tok_rel, tokens.shape[1])
        unit_lens = relative_to_absolute(unit_rel, units.shape[1])
        speaker = batch.spk_emb.data if hasattr(batch, "spk_emb") else None
        unit_words = batch.unit_word_ids.data if hasattr(batch, "unit_word_ids") else None
        enc_out = self._encoder_out(batch)
        prosody = self._prosody_targets(batch, unit_words)
        out = self.modules.model(tokens, tok_lens, word_ids, units, unit_lens, enc_out, speaker, unit_words,
                                 prosody_targets=prosody)
        if stage == sb.Stage.TEST and enc_out is not None and self._attention_example is None:
            self._keep_attention_example(batch, tokens, tok_lens, word_ids, enc_out)
        return out, tok_lens, enc_out

    def _prosody_targets(self, batch, unit_words):
        """Per-word prosody descriptors ``(targets, mask)``, each ``(B, W, K)`` (and the speaker
        vectors ``(B, D)`` when the supervision has a speaker head), or None when unused.

        Computed from the waveform once per utterance, one utterance at a time on its
        own samples and units (so they do not depend on the batch), and kept.
        """
        sup = getattr(self._model, "prosody_supervision", None)
        if sup is None:
            return None
        if unit_words is None:
            raise ConfigError("prosody_supervision_weight > 0 needs the word of every unit (unit_word_ids): the "
                              "recipe adds them when the weight is set; outside it, pass unit_word_starts to "
                              "build_datasets.")
        if not hasattr(self, "_prosody_cache"):
            self._prosody_cache = {}
        wavs, rel = batch.sig
        wav_lens = relative_to_absolute(rel, wavs.shape[1])
        for b, uid in enumerate(batch.id):
            if uid not in self._prosody_cache:
                s = int((unit_words[b] >= 0).sum())
                n = int(wav_lens[b])
                self._prosody_cache[uid] = tuple(t[0].cpu() for t in sup.targets(
                    wavs[b:b + 1, :n], wav_lens[b:b + 1], unit_words[b:b + 1, :s]))
        items = [self._prosody_cache[uid] for uid in batch.id]
        w = max(t.shape[0] for t, _ in items)
        targets = torch.zeros(len(items), w, items[0][0].shape[-1])
        mask = torch.zeros(targets.shape, dtype=torch.bool)
        for b, (t, m) in enumerate(items):
            targets[b, : t.shape[0]], mask[b, : m.shape[0]] = t, m
        if sup.speaker_dim:
            if not hasattr(batch, "spk_target"):
                raise ConfigError("Prosody supervision with a speaker target needs the speaker vectors in the "
                                  "batch (spk_target: build_datasets(..., speaker_targets=...)).")
            return targets.to(self.device), mask.to(self.device), batch.spk_target.data.to(self.device)
        return targets.to(self.device), mask.to(self.device)

    def _keep_attention_example(self, batch, tokens, tok_lens, word_ids, enc_out):
        if self._model.aggregator.needs_unit_word_ids:
            return  # the oracle_spans ceiling pools known spans: no attention to plot
        with torch.no_grad():
            agg = self._model.aggregator(tokens[:1], tok_lens[:1], word_ids[:1], _first(enc_out), need_weights=True)
        if agg is not None and agg.attention is not None:
            n, t = int(tok_lens[0]), int(enc_out.lengths[0])
            self._attention_example = {
                "id": batch.id[0],
                "attention": agg.attention[0, :n, :t].float().cpu(),
                "tokens": tokens[0, :n].tolist(),
                "frame_rate": enc_out.frame_rate,
            }

    def compute_objectives(self, predictions, batch, stage):
        out, tok_lens, enc_out = predictions
        if stage != sb.Stage.TRAIN:
            acc = self._model.decoder.accuracy(out.decoder, topk=(1, 5))
            for k, v in acc.items():
                self._counts[k] = self._counts.get(k, 0) + float(v)
            self._counts["seconds"] = self._counts.get("seconds", 0.0) + float(sum(batch.duration))
            agg = out.aggregator
            if agg is not None:
                self._counts["speech_tokens"] = self._counts.get("speech_tokens", 0.0) + float(agg.lengths.sum())
            self._counts["text_tokens"] = self._counts.get("text_tokens", 0.0) + float(tok_lens.sum())
        if out.quantizer is not None:
            for k, v in out.quantizer.metrics.items():
                self._qmetrics.setdefault(k, []).append(float(v))
            if stage != sb.Stage.TRAIN and out.quantizer.codes is not None:
                self._count_codes(out.quantizer.codes)
        if out.prosody_loss is not None:
            self._counts["prosody_loss"] = self._counts.get("prosody_loss", 0.0) + float(out.prosody_loss.detach())
            self._counts["prosody_batches"] = self._counts.get("prosody_batches", 0) + 1
        if out.attention_loss is not None:
            self._counts["attention_loss"] = self._counts.get("attention_loss", 0.0) + float(out.attention_loss.detach())
            self._counts["attention_batches"] = self._counts.get("attention_batches", 0) + 1
        return out.loss

    def _count_codes(self, codes):
        """Accumulate per-layer code histograms over the whole split (``codes (B, M, R)``, -1 skipped)."""
        k = self._model.quantizer.codebook_size
        hist = self._code_hist
        for r in range(codes.shape[-1]):
            layer = codes[..., r].flatten()
            layer = layer[layer >= 0].cpu()
            h = torch.bincount(layer, minlength=k)
            hist[r] = hist[r] + h if r in hist else h

    def split_codebook_perplexity(self):
        """``{rvq_perplexity_l{r}: exp(entropy)}`` of each layer's code histogram over the split.

        Unlike the per-batch perplexity (bounded by the batch's word count), this is
        the codebook usage of the whole evaluated split.
        """
        out = {}
        for r, h in sorted(getattr(self, "_code_hist", {}).items()):
            prob = h.double() / max(int(h.sum()), 1)
            prob = prob[prob > 0]
            out[f"rvq_perplexity_l{r}"] = round(float(torch.exp(-(prob * prob.log()).sum())), 2)
        return out

    @torch.no_grad()
    def init_quantizer_codebooks(self, train_set, loader_kwargs, max_batches=0):
        """Initialize the RVQ codebooks by k-means over the aggregator's word vectors.

        Runs the encoder (filling its cache) and the aggregator over the training
        set (the first ``max_batches`` batches; 0 = all), so every code starts on
        a distinct vector, instead of the library's k-means on one batch. Does
        nothing when the quantizer has no ``init_codebooks``, is already
        initialised (a resumed run, or loaded weights) or a checkpoint exists.

        Returns
        -------
        dict or None
            The quantizer's report (vectors used, perplexity per layer), or None.
        """
        model = self._model
        q = model.quantizer
        if q is None or not hasattr(q, "init_codebooks"):
            return None
        if self.checkpointer is not None and self.checkpointer.find_checkpoint() is not None:
            return None
        self._init_from_previous_stage()  # the earlier stage's aggregator is what speaks
        if q.initialised:
            return None
        loader = self.make_dataloader(train_set, sb.Stage.VALID, **loader_kwargs)
        was_training = model.training
        model.eval()
        vectors = []
        try:
            from tqdm import tqdm

            total = min(len(loader), max_batches) if max_batches else len(loader)
            for i, batch in enumerate(tqdm(loader, total=total, desc="rvq k-means init", unit="batch")):
                if max_batches and i >= max_batches:
                    break
                batch = batch.to(self.device)
                tokens, tok_rel = batch.tokens
                word_ids, _ = batch.word_ids
                units, _ = batch.units
                tok_lens = relative_to_absolute(tok_rel, tokens.shape[1])
                extra = {}
                if model.aggregator.needs_unit_word_ids:
                    extra["unit_word_ids"] = batch.unit_word_ids.data
                agg = model.aggregator(tokens, tok_lens, word_ids, self._encoder_out(batch), **extra)
                if agg is None:
                    return None
                valid = torch.arange(agg.embeddings.shape[1], device=agg.embeddings.device)[None] < agg.lengths[:, None]
                vectors.append(agg.embeddings[valid].float().cpu())
        finally:
            model.train(was_training)
        report = q.init_codebooks(torch.cat(vectors))
        logger.info("RVQ codebooks initialized by k-means on %d word vectors: %s", report["vectors"], report)
        return report

    def check_loss_isfinite(self, loss):
        """Report a non-finite loss with its batch's IDs and undo the batch's codebook updates.

        The optimizer step of that batch is skipped (no parameter moves); after
        ``nonfinite_patience`` such batches in an epoch a :class:`NonFiniteLossError`
        lists every offending ID.
        """
        if torch.isfinite(loss):
            return
        ids = list(getattr(self, "_batch_ids", []))
        self._nonfinite_ids.extend(ids)
        logger.warning("Non-finite loss (%s) on batch with ids %s; skipping its update.", float(loss), ids)
        self._restore_quantizer_buffers()
        # SpeechBrain would still step with the NaN gradients (unless skip_nonfinite_grads)
        # and turn every weight into NaN: the optimizer step of this batch is skipped.
        self._skip_step = True
        try:
            super().check_loss_isfinite(loss)
        except ValueError as exc:
            raise NonFiniteLossError(
                f"{self.nonfinite_count} batches had a non-finite loss this epoch (more than "
                f"--nonfinite_patience={self.nonfinite_patience}); utterance IDs: {self._nonfinite_ids}. "
                "Check these utterances (silence, wrong transcript), lower the lr or raise max_grad_norm."
            ) from exc

    def optimizers_step(self):
        if getattr(self, "_skip_step", False):
            self._skip_step = False
            self.zero_grad(set_to_none=True)  # the accumulated gradients include the NaN ones
            return
        super().optimizers_step()

    def on_fit_batch_start(self, batch, should_step):
        self._batch_ids = list(batch.id)
        # The quantizer's EMA codebooks are updated inside forward, before the loss is
        # known: keep a copy so a batch with a non-finite loss can be undone.
        q = getattr(self._model, "quantizer", None)
        self._quantizer_buffers = {k: v.detach().clone() for k, v in q.named_buffers()} if q is not None else {}

    def _restore_quantizer_buffers(self):
        saved = getattr(self, "_quantizer_buffers", None)
        if not saved:
            return
        own = dict(self._model.quantizer.named_buffers())
        with torch.no_grad():
            for k, v in saved.items():
                if k in own and own[k].shape == v.shape:
                    own[k].copy_(v)
        logger.warning("Quantizer codebooks restored to their state before that batch.")

    # -------------------------------------------------------------- stages
    def on_stage_start(self, stage, epoch=None):
        self._counts, self._qmetrics, self._code_hist = {}, {}, {}
        self._attention_example = None
        if stage == sb.Stage.TRAIN:
            self._nonfinite_ids = []

    def stage_stats(self, stage_loss, stage=None):
        stats = {"loss": round(float(stage_loss), 4)}
        c = self._counts
        total = c.get("total", 0)
        for k in ("top1", "top5"):
            if total:
                stats[f"unit_{k}"] = round(c[f"{k}_correct"] / total, 4)
        if c.get("boundary_total"):  # decoders that walk the words: how well they time them
            stats["boundary_top1"] = round(c["boundary_top1_correct"] / c["boundary_total"], 4)
        seconds = c.get("seconds", 0.0)
        if seconds and "speech_tokens" in c:
            rate = c["speech_tokens"] / seconds
            stats["token_rate_hz"] = round(rate, 3)
            q = self._model.quantizer
            if q is not None and q.codebook_size:
                stats["bitrate_bps"] = round(bitrate(rate, q.num_quantizers, q.codebook_size), 1) if rate > 0 else 0.0
        if seconds:
            stats["text_token_rate_hz"] = round(c.get("text_tokens", 0.0) / seconds, 3)
        for k, v in self._qmetrics.items():
            stats[k] = round(sum(v) / len(v), 4)
        # Split-level codebook perplexity replaces the per-batch average where codes were counted.
        stats.update(self.split_codebook_perplexity())
        if c.get("prosody_batches"):
            stats["prosody_loss"] = round(c["prosody_loss"] / c["prosody_batches"], 4)
        if c.get("attention_batches"):
            stats["attention_loss"] = round(c["attention_loss"] / c["attention_batches"], 4)
        sup = getattr(self._model, "attention_supervision", None)
        if stage == sb.Stage.TRAIN and sup is not None:
            counts = sup.reset_counts()
            stats["attention_skipped"] = counts["skipped"]
            if counts["skipped"]:
                logger.warning("Attention supervision skipped %d of %d utterances this epoch (no usable "
                               "aligned span: silence, too few frames, or a word longer than %.1f s).",
                               counts["skipped"], counts["skipped"] + counts["used"], sup.max_word_seconds)
        return stats

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_stats = self.stage_stats(stage_loss, stage)
            return
        stats = self.stage_stats(stage_loss, stage)
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            annealing = getattr(self.hparams, "lr_annealing", None)
            if annealing is not None:  # NewBob (dev loss) or LinearEpochDecay (epoch)
                anneal(annealing, self.optimizer, epoch, stats["loss"])
            self.hparams.train_logger.log_stats({"epoch": epoch, "lr": lr}, self.train_stats, stats)
            self.checkpointer.save_and_keep_only(meta={"loss": stats["loss"]}, min_keys=["loss"], num_to_keep=2)
            self._plot_curves(epoch, stats)
        else:
            self.hparams.train_logger.log_stats({"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats)
            self.test_stats = stats
            self._write_test_outputs(stats)

    #: Statistics drawn in ``curves.png`` (subclasses with other losses override it).
    curve_keys = ("loss", "unit_top5")

    def _plot_curves(self, epoch, valid_stats):
        """Append this epoch to ``curves.json`` and redraw ``curves.png`` (:attr:`curve_keys`)."""
        if not sb.utils.distributed.if_main_process():
            return
        from taste_toolkit.training.plots import update_curves

        update_curves(self.hparams.output_folder, epoch, self.train_stats, valid_stats, keys=self.curve_keys)

    def _write_test_outputs(self, stats):
        """Save the attention map of one test utterance (``attention.png``)."""
        if not sb.utils.distributed.if_main_process():
            return
        folder = self.hparams.output_folder
        ex = self._attention_example
        if ex is not None:
            from taste_toolkit.training.plots import plot_attention

            tok = getattr(self.hparams, "text_tokenizer", None)
            labels = [tok.decode([t]) for t in ex["tokens"]] if tok is not None else None
            plot_attention(ex["attention"], os.path.join(folder, "attention.png"), labels, ex["frame_rate"], title=ex["id"])


def unwrap_ddp(module):
    """The module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper; others unchanged."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return module.module if isinstance(module, wrappers) else module


def _steps_win_over_minutes(run_opts):
    """A ``--ckpt_interval_steps`` given on the command line replaces the YAML's ``ckpt_interval_minutes``.

    SpeechBrain exits when both intervals are set; the YAML sets minutes, so asking
    for a step interval would otherwise need ``--ckpt_interval_minutes=0`` as well.
    """
    if run_opts is None:
        return None
    if isinstance(run_opts, dict):
        if int(run_opts.get("ckpt_interval_steps") or 0) > 0 and "ckpt_interval_minutes" not in run_opts:
            run_opts = {**run_opts, "ckpt_interval_minutes": 0}
        return run_opts
    given = set(getattr(run_opts, "overridden_args", set()))
    if "ckpt_interval_steps" in given and int(run_opts.ckpt_interval_steps or 0) > 0 and "ckpt_interval_minutes" not in given:
        import dataclasses  # RunOptions is a frozen dataclass

        run_opts = dataclasses.replace(run_opts, ckpt_interval_minutes=0,
                                       overridden_args=given | {"ckpt_interval_minutes"})
    return run_opts


def _first(enc_out):
    n = int(enc_out.lengths[0])
    return EncoderOutput(enc_out.keys[:1, :n], enc_out.values[:1, :n], enc_out.lengths[:1], enc_out.frame_rate)
