#!/usr/bin/env python3
"""Recipe: train a unit HiFi-GAN vocoder (units -> waveform) on the units of the tokenizer recipe.

It prepares the data exactly as ``train.py`` does (same corpus, manifests and unit
cache under ``prep_folder``), then trains SpeechBrain's ``UnitHifiganGenerator``
(the ``unit_hifigan`` vocoder plugin) against an MPD + MSD discriminator with two
optimizers, on random segments of ``segment_units`` units and the matching audio::

    python recipes/librispeech/train_vocoder.py hparams/vocoder/unit_hifigan.yaml
    python recipes/librispeech/train_vocoder.py hparams/vocoder/unit_hifigan.yaml --number_of_epochs=10

Outputs in ``output_folder``: ``train_log.txt``, checkpoints (best = lowest dev
``mel_l1``), ``test_results.json`` (mel L1 distance on the test split),
``samples/*.wav`` (original and vocoded test utterances), ``samples/mels.png`` and
``vocoder.json`` (plugin name + options, to rebuild it with the registry).

Segment convention: units ``[s, s + N)`` pair with samples ``[s * spu, (s + N) * spu)``
(``spu`` = samples per unit) of the audio zero-padded (or cut) to ``S * spu``.
(``mel_kmeans`` unit ``u`` is centred about 160 samples later than sample
``640 u``; the generator's receptive field of several units absorbs the offset.)
Training runs in fp32 (``--precision`` is not used by the GAN steps).
"""

import json
import logging
import os
import sys

import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.distributed import if_main_process, run_on_main

from taste_toolkit.audio import load_audio
from taste_toolkit.data.corpus_preparation import prepare_corpus  # same data preparation as the tokenizer recipe
from taste_toolkit.data.manifest import read_manifest
from taste_toolkit.data.unit_cache import load_units, prepare_units
from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.utils import relative_to_absolute

logger = logging.getLogger(__name__)


class UnitHifiganBrain(sb.Brain):
    """GAN training: discriminator step, then generator step, on every batch."""

    def init_optimizers(self):
        """Two optimizers and schedulers (as SpeechBrain's HiFi-GAN recipes)."""
        self.optimizer_g = self.hparams.opt_class_generator(self.modules.vocoder.parameters())
        self.optimizer_d = self.hparams.opt_class_discriminator(self.modules.discriminator.parameters())
        self.optimizers_dict = {"optimizer_g": self.optimizer_g, "optimizer_d": self.optimizer_d}
        self.scheduler_g = self.hparams.sch_class_generator(self.optimizer_g)
        self.scheduler_d = self.hparams.sch_class_discriminator(self.optimizer_d)
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer_g", self.optimizer_g)
            self.checkpointer.add_recoverable("optimizer_d", self.optimizer_d)
            self.checkpointer.add_recoverable("scheduler_g", self.scheduler_g)
            self.checkpointer.add_recoverable("scheduler_d", self.scheduler_d)

    def _step(self, optimizer, loss, module):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), self.hparams.max_grad_norm)
        optimizer.step()

    def fit_batch(self, batch):
        batch = batch.to(self.device)
        units, _ = batch.units  # (B, N): equal-length segments, no padding
        y, _ = batch.sig  # (B, N * spu)
        y_hat, _ = self.modules.vocoder(units)
        y, y_hat = y.unsqueeze(1), y_hat.unsqueeze(1)  # (B, 1, L) as SpeechBrain's losses expect
        disc = self.modules.discriminator
        stats = {}
        if self.optimizer_step >= self.hparams.discriminator_start_step:
            # Discriminator on the current generator output (detached) ...
            scores_fake, _ = disc(y_hat.detach())
            scores_real, _ = disc(y)
            loss_d = self.hparams.discriminator_loss(scores_fake, scores_real)
            self._step(self.optimizer_d, loss_d["D_loss"], disc)
            stats.update(loss_d)
            # ... then the generator against the updated discriminator.
            scores_fake, feats_fake = disc(y_hat)
            with torch.no_grad():
                _, feats_real = disc(y)
            loss_g = self.hparams.generator_loss(sb.Stage.TRAIN, y_hat, y, scores_fake, feats_fake, feats_real)
        else:  # warm-up: reconstruction losses only
            loss_g = self.hparams.generator_loss(sb.Stage.TRAIN, y_hat, y)
        self._step(self.optimizer_g, loss_g["G_loss"], self.modules.vocoder)
        self.optimizer_step += 1
        stats.update(loss_g)
        for key, value in stats.items():  # per-key means (D terms are absent in warm-up)
            if torch.is_tensor(value) or isinstance(value, float):
                value = float(value.detach()) if torch.is_tensor(value) else value
                total, count = self.train_sums.get(key, (0.0, 0))
                self.train_sums[key] = (total + value, count + 1)
        return loss_g["G_loss"].detach().cpu()

    def on_stage_start(self, stage, epoch=None):
        self.train_sums = {}  # {loss name: (sum, batches)}
        self.mel_l1 = []  # per-utterance distances of this stage
        self.examples = []  # (id, original, vocoded) kept for the test outputs

    @torch.no_grad()
    def evaluate_batch(self, batch, stage):
        batch = batch.to(self.device)
        units, rel = batch.units
        unit_lens = relative_to_absolute(rel, units.shape[1])
        y, _ = batch.sig  # every row padded to its S * spu samples, then to the batch max
        y_hat, wav_lens = self.modules.vocoder(units, unit_lens)
        dists = mel_l1(self.hparams.mel_spectrogram, y_hat, y[:, : y_hat.shape[1]], wav_lens, self.hparams.mel_hop_length)
        self.mel_l1 += dists.tolist()
        if stage == sb.Stage.TEST:
            for i, uid in enumerate(batch.id):
                if len(self.examples) < self.hparams.num_test_examples:
                    n = int(wav_lens[i])
                    self.examples.append((uid, y[i, :n].cpu(), y_hat[i, :n].cpu()))
        return dists.mean().cpu()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_stats = {k: round(total / count, 4) for k, (total, count) in self.train_sums.items()}
            return
        stats = {"mel_l1": round(sum(self.mel_l1) / max(1, len(self.mel_l1)), 4)}
        if stage == sb.Stage.VALID:
            lrs = {"lr_g": self.optimizer_g.param_groups[0]["lr"], "lr_d": self.optimizer_d.param_groups[0]["lr"]}
            self.scheduler_g.step()
            self.scheduler_d.step()
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, **lrs}, train_stats=getattr(self, "train_stats", {}), valid_stats=stats
            )
            self.checkpointer.save_and_keep_only(meta={"epoch": epoch, **stats}, min_keys=["mel_l1"])
        else:
            stats["num_utterances"] = len(self.mel_l1)
            self.test_stats = stats
            self.hparams.train_logger.log_stats(
                {"epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats
            )
            if if_main_process():
                write_examples(self.examples, self.hparams)


def mel_l1(mel_fn, y_hat, y, wav_lens, hop_length):
    """Per-utterance mean |log-mel(vocoded) - log-mel(original)| over valid frames.

    ``y_hat, y`` are ``(B, L)`` (zeros after each length), ``wav_lens (B,)``; frames
    (centred STFT) ``0 .. wav_len // hop`` are valid. Returns ``(B,)``.
    """
    mels = mel_fn(audio=torch.stack([y_hat, y]).float())  # (2, B, n_mels, F)
    diff = (mels[0] - mels[1]).abs().mean(dim=1)  # (B, F)
    valid = torch.arange(diff.shape[1], device=diff.device)[None] <= (wav_lens // hop_length)[:, None]
    return (diff * valid).sum(1) / valid.sum(1)


def write_examples(examples, hparams):
    """Original and vocoded wavs + one PNG of their log-mels (original above vocoded).

    ``hparams`` needs ``samples_folder``, ``sample_rate``, ``mel_spectrogram`` and
    ``mel_hop_length`` attributes (the Brain's ``self.hparams``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile

    folder = hparams.samples_folder
    os.makedirs(folder, exist_ok=True)
    if not examples:
        return
    fig, axes = plt.subplots(2, len(examples), figsize=(4 * len(examples), 5), squeeze=False)
    for col, (uid, original, vocoded) in enumerate(examples):
        mels = [hparams.mel_spectrogram(audio=wav.float()).numpy() for wav in (original, vocoded)]
        for row, (name, wav) in enumerate((("original", original), ("vocoded", vocoded))):
            soundfile.write(os.path.join(folder, f"{uid}_{name}.wav"), wav.numpy(), hparams.sample_rate)
            # One colour scale per column (the original's), so levels compare directly.
            axes[row][col].imshow(
                mels[row], aspect="auto", origin="lower", cmap="magma", vmin=mels[0].min(), vmax=mels[0].max()
            )
            axes[row][col].set_title(f"{uid} {name}", fontsize=8)
            axes[row][col].set_xlabel(f"frame (hop {hparams.mel_hop_length})")
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "mels.png"), dpi=90)
    plt.close(fig)


def check_rates(units, vocoder):
    """The vocoder must render exactly one unit's worth of samples per unit."""
    rate = units.sample_rate / units.frame_rate
    if abs(rate - vocoder.samples_per_unit) > 1e-6 or units.sample_rate != vocoder.sample_rate:
        raise ConfigError(
            f"Units are at {units.frame_rate} Hz and {units.sample_rate} Hz audio ({rate:g} samples per "
            f"unit), but the vocoder renders {vocoder.samples_per_unit} samples per unit at "
            f"{vocoder.sample_rate} Hz; set samples_per_unit / sample_rate / upsample_factors to match."
        )
    if units.num_units != vocoder.num_units:
        raise ConfigError(f"Units have {units.num_units} ids but the vocoder embeds {vocoder.num_units}; set num_units.")


def build_vocoder_datasets(manifests, units, hparams):
    """``{split: DynamicItemDataset}``: random segments for training, whole utterances otherwise."""
    spu, sr, seg = hparams["samples_per_unit"], hparams["sample_rate"], hparams["segment_units"]
    if seg < 1:
        raise ConfigError(f"segment_units must be >= 1, got {seg}.")

    def fitted_audio(wav, utt_units):
        audio = load_audio(wav, sr)[: utt_units.numel() * spu]
        return torch.nn.functional.pad(audio, (0, utt_units.numel() * spu - audio.numel()))

    datasets = {}
    for split, path in manifests.items():
        split_units = units[split]
        rows = {r["ID"]: r for r in read_manifest(path) if r["ID"] in split_units}
        if not rows:
            raise InputError(f"Split {split!r} ({path}) has no utterance with units; prepare the units again.")
        training = split == hparams["train_split"]

        @sb.utils.data_pipeline.takes("id", "wav")
        @sb.utils.data_pipeline.provides("units", "sig")
        def pipeline(uid, wav, _units=split_units, _training=training):
            utt_units = _units[uid].long()
            audio = fitted_audio(wav, utt_units)
            if _training:
                if utt_units.numel() < seg:  # too short: loop it (as SpeechBrain's recipe does)
                    times = -(-seg // utt_units.numel())
                    utt_units, audio = utt_units.repeat(times), audio.repeat(times)
                start = int(torch.randint(0, utt_units.numel() - seg + 1, ()))
                utt_units, audio = utt_units[start : start + seg], audio[start * spu : (start + seg) * spu]
            yield utt_units
            yield audio

        data = {uid: {"wav": r["wav"], "duration": float(r.get("duration") or 0.0)} for uid, r in rows.items()}
        ds = DynamicItemDataset(data, dynamic_items=[pipeline], output_keys=["id", "units", "sig"])
        if not training:
            n = hparams["valid_utterances"] if split in hparams["dev_splits"] else 0
            ds = ds.filtered_sorted(sort_key="duration", select_n=n or None)
        datasets[split] = ds
    return datasets


def main():
    from taste_toolkit.hparams_loader import setup_experiment

    hparams, run_opts = setup_experiment(sys.argv[1:])
    check_rates(hparams["units"], hparams["vocoder"])

    manifests, train = prepare_corpus(hparams)
    splits = {train: manifests[train]}
    splits.update({s: manifests[s] for s in hparams["dev_splits"] + hparams["test_splits"]})
    unit_files = run_on_main(
        prepare_units,
        kwargs=dict(extractor=hparams["units"], manifests=splits, cache_dir=os.path.join(hparams["prep_folder"], "units"), fit_split=train),
    )
    units = {s: load_units(p) for s, p in unit_files.items()}
    hparams["train_split"] = train
    datasets = build_vocoder_datasets(splits, units, hparams)

    brain = UnitHifiganBrain(modules=hparams["modules"], hparams=hparams, run_opts=run_opts, checkpointer=hparams["checkpointer"])
    brain.fit(
        hparams["epoch_counter"],
        datasets[train],
        datasets[hparams["dev_splits"][0]],
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    results = {}
    for split in hparams["test_splits"]:
        brain.evaluate(datasets[split], min_key="mel_l1", test_loader_kwargs=hparams["test_dataloader_opts"])
        results[split] = brain.test_stats
    if if_main_process():
        with open(os.path.join(hparams["output_folder"], "test_results.json"), "w") as f:
            json.dump(results, f, indent=2)
        vocoder = hparams["vocoder"]
        with open(os.path.join(hparams["output_folder"], "vocoder.json"), "w") as f:
            json.dump({"kind": "vocoder", "name": vocoder.registry_name, "options": vocoder.options}, f, indent=2)
        for split, stats in results.items():
            print(f"[{split}] mel_l1={stats['mel_l1']} over {stats['num_utterances']} utterances")


if __name__ == "__main__":
    main()
