"""Train the ``unit_to_spec`` vocoder on a manifest, cached on disk by the units' fingerprint.

:func:`fit_unit_vocoder` is meant for data preparation (a few minutes on 2 CPU
cores for the embedded corpus)::

    from taste_toolkit.training.unit_vocoder import fit_unit_vocoder
    path = fit_unit_vocoder(hparams["units"], manifests[train], os.path.join(prep_folder, "vocoder"),
                            unit_file=unit_files[train])
    vocoder = UnitToSpecVocoder.from_pretrained(path)   # or vocoder_options: {unit_to_spec: {checkpoint: path}}

Training: random crops of ``crop_units`` units of the training utterances, the
network predicts their log-magnitude STFT frames and is trained with L1 on the
natural-log magnitude against the true STFT of the same samples (computed on
the fly from the waveform with ``n_fft // 2`` samples of real context on each
side, exactly the frames of the whole utterance's centred STFT). AdamW with a
linear warm-up and cosine decay.

Cache
-----
The result is ``<cache_dir>/unit_to_spec-<key>.safetensors``; ``key`` hashes the
units' fingerprint (:func:`taste_toolkit.data.unit_cache.extractor_fingerprint`),
the manifest (content and audio size/mtime), the vocoder options that shape
the weights (defaults included; not ``n_iter``/``momentum``/``seed``) and the
training options. An unchanged setup reuses the file (no training); a corrupt
file is retrained with a warning.
"""

import functools
import logging
import math
import os
import time

import torch

from taste_toolkit.audio import load_audio
from taste_toolkit.data.unit_cache import (
    _key, _manifest_digest, extractor_fingerprint, load_units, read_manifest,
)  # fmt: skip
from taste_toolkit.errors import ConfigError, DataPreparationError

logger = logging.getLogger(__name__)

#: Bump when the training procedure changes: invalidates cached vocoders.
TRAINING_VERSION = "1"
#: Vocoder options used only at synthesis: they do not enter the cache key.
SYNTHESIS_OPTIONS = ("n_iter", "momentum", "seed")


def _load_pairs(extractor, rows, unit_file, spu, speaker_vectors=None):
    """``[(units (S,), wav (S * spu,), speaker (D,) or None)]`` per manifest row, waveforms zero-extended."""
    from tqdm import tqdm

    cached = load_units(unit_file) if unit_file else None
    pairs = []
    for row in tqdm(rows, desc="vocoder data", unit="utt"):
        wav = load_audio(row["wav"], extractor.sample_rate)
        if cached is not None:
            if row["ID"] not in cached:
                raise DataPreparationError(f"Units file {unit_file!r} has no units for {row['ID']!r}.")
            units = cached[row["ID"]]
        else:
            units, lengths = extractor(wav.unsqueeze(0), torch.tensor([wav.numel()]))
            units = units[0, : int(lengths[0])]
        steps = units.numel()
        if abs(steps * spu - wav.numel()) > 2 * spu:
            raise DataPreparationError(
                f"{row['ID']}: {steps} units for {wav.numel()} samples; the unit rate does not match "
                f"samples_per_unit={spu} of the vocoder."
            )
        full = torch.zeros(steps * spu)
        full[: min(wav.numel(), full.numel())] = wav[: full.numel()]
        speaker = None
        if speaker_vectors is not None:
            if row["ID"] not in speaker_vectors:
                raise DataPreparationError(f"No speaker vector for {row['ID']!r}; compute them for this manifest.")
            speaker = speaker_vectors[row["ID"]].float()
        pairs.append((units.long(), full, speaker))
    return pairs


class _CropSampler:
    """Random ``crop`` -unit windows of the data with their waveform context.

    Each item: the units of a window ``[u0, u1)`` (shorter windows are padded,
    ``lengths`` tells), and the samples ``[u0 * spu - n_fft // 2, u1 * spu + n_fft // 2)``
    of the zero-extended utterance (zeros outside it), whose non-centred STFT
    gives exactly the centred frames of the whole utterance.

    With ``context > 0`` the window is the ``crop`` units the loss is taken on
    plus up to ``context`` real units on each side (fewer at the utterance's
    ends), and ``weights`` ``(B, W)`` is 1 on the crop and 0 on the context: the
    network then sees, around every unit it is trained on, the neighbours it
    sees at synthesis, instead of the zeros beyond a crop's edge.
    """

    def __init__(self, pairs, crop, spu, half, seed, context=0):
        # (units, wav) pairs or (units, wav, speaker vector) triples
        pairs = [tuple(p) if len(p) == 3 else (*p, None) for p in pairs]
        self.pairs, self.crop, self.spu, self.half = pairs, crop, spu, half
        self.context = int(context)
        self.generator = torch.Generator().manual_seed(seed)
        self.weights = torch.tensor([float(u.numel()) for u, _, _ in pairs])
        self.speaker_dim = pairs[0][2].numel() if pairs and pairs[0][2] is not None else 0

    def sample(self, batch):
        """Return units ``(B, W)``, lengths ``(B,)``, waveforms ``(B, W * spu + n_fft)``,
        speaker vectors ``(B, D)`` or None, and loss weights ``(B, W)`` (``W = crop + 2 * context``)."""
        picks = torch.multinomial(self.weights, batch, replacement=True, generator=self.generator)
        width = self.crop + 2 * self.context
        units = torch.zeros(batch, width, dtype=torch.long)
        weights = torch.zeros(batch, width)
        lengths = torch.zeros(batch, dtype=torch.long)
        wavs = torch.zeros(batch, width * self.spu + 2 * self.half)
        speakers = torch.zeros(batch, self.speaker_dim) if self.speaker_dim else None
        for i, p in enumerate(picks.tolist()):
            u, wav, speaker = self.pairs[p]
            if speakers is not None:
                speakers[i] = speaker
            n = min(self.crop, u.numel())
            start = int(torch.randint(0, u.numel() - n + 1, (1,), generator=self.generator))
            first, last = max(0, start - self.context), min(u.numel(), start + n + self.context)
            units[i, : last - first] = u[first:last]
            weights[i, start - first : start - first + n] = 1.0
            lengths[i] = last - first
            lo, hi = first * self.spu - self.half, last * self.spu + self.half
            seg = wav[max(lo, 0) : min(hi, wav.numel())]
            wavs[i, max(-lo, 0) : max(-lo, 0) + seg.numel()] = seg
        return units, lengths, wavs, speakers, weights


def _target(vocoder, wavs, frames):
    """Natural-log ``|STFT|`` ``(B, frames, n_freq)`` of context-padded crops (non-centred)."""
    opts = vocoder.options
    spec = torch.stft(
        wavs, opts["n_fft"], opts["hop_length"], window=vocoder.window, center=False, return_complex=True
    )
    return spec.abs().clamp(min=opts["log_floor"]).log().transpose(1, 2)[:, :frames]


@functools.lru_cache(maxsize=8)
def _mel_fbanks(n_freq, sample_rate, n_mels, device):
    import torchaudio

    return torchaudio.functional.melscale_fbanks(n_freq, 0.0, sample_rate / 2, n_mels, sample_rate).to(device)


def _mel_filters(vocoder, n_mels=80):
    """``(n_freq, n_mels)`` HTK mel filterbank over the vocoder's linear bins (Whisper's 80 bands).

    Built once per geometry and device, not at every training step.
    """
    opts = vocoder.options
    return _mel_fbanks(opts["n_fft"] // 2 + 1, opts["sample_rate"], n_mels, vocoder.window.device)


def spectral_l1(vocoder, units, lengths, wavs, speaker=None, delta_weight=0.0, mel_weight=0.0, weights=None):
    """Mean L1 between predicted and true log-magnitudes over valid frames (the training loss).

    With ``delta_weight > 0`` the L1 between their frame-to-frame differences
    (along time) is added with that weight: a plain L1 is minimized by a spectrum
    smeared over the units a unit id can stand for, and smeared timing is what
    costs intelligibility most (RESULTS.md, "Where Griffin-Lim stops").

    With ``mel_weight > 0`` the L1 between the log mel spectra (80 bands, of the
    predicted and the true magnitude) is added with that weight. The linear L1
    spends half its weight on 4-8 kHz; the mel bands put it where the formants
    are, which is what an ASR (and a listener) reads.

    Arguments
    ---------
    vocoder : UnitToSpecVocoder
    units : torch.Tensor
        ``(B, C)`` unit ids.
    lengths : torch.Tensor
        ``(B,)`` valid units.
    wavs : torch.Tensor
        ``(B, C * samples_per_unit + n_fft)`` waveform crops with ``n_fft // 2``
        samples of context on each side (see :class:`_CropSampler`).
    speaker : torch.Tensor, optional
        ``(B, speaker_dim)`` for a speaker-conditioned vocoder.
    delta_weight : float
        Weight of the L1 on the temporal differences (0 = plain L1).
    mel_weight : float
        Weight of the log-mel L1 (0 = none).
    weights : torch.Tensor, optional
        ``(B, C)`` per-unit loss weights (0 on context units the loss skips);
        None = every valid unit.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    pred, frame_lengths = vocoder.spectrogram(units, lengths, speaker)
    target = _target(vocoder, wavs, pred.shape[1])
    mask = (torch.arange(pred.shape[1])[None] < frame_lengths[:, None]).to(pred.dtype)
    if weights is not None:  # unit weights -> the frames each unit owns
        mask = mask * weights.repeat_interleave(vocoder.frames_per_unit, dim=1)[:, : pred.shape[1]]
    mask = mask.unsqueeze(-1)
    loss = ((pred - target).abs() * mask).sum() / (mask.sum() * pred.shape[-1]).clamp(min=1)
    if delta_weight > 0:
        pair_mask = mask[:, 1:] * mask[:, :-1]  # both frames of a difference are valid
        delta = ((pred.diff(dim=1) - target.diff(dim=1)).abs() * pair_mask).sum()
        loss = loss + delta_weight * delta / (pair_mask.sum() * pred.shape[-1]).clamp(min=1)
    if mel_weight > 0:
        fb = _mel_filters(vocoder)
        floor = vocoder.options["log_floor"]
        pred_mel = (pred.exp() @ fb).clamp(min=floor).log()
        true_mel = (target.exp() @ fb).clamp(min=floor).log()
        mel = ((pred_mel - true_mel).abs() * mask).sum() / (mask.sum() * fb.shape[1]).clamp(min=1)
        loss = loss + mel_weight * mel
    return loss


def train_unit_vocoder(vocoder, pairs, steps=1500, batch_size=16, crop_units=40, lr=3e-3,
                       warmup=100, seed=0, unit_noise=0.1, delta_weight=0.0, mel_weight=0.0, progress=True,
                       context_units=0):
    """Train ``vocoder`` in place on ``(units, waveform)`` pairs.

    Arguments
    ---------
    vocoder : UnitToSpecVocoder
    pairs : list of tuple
        Units ``(S,)`` and the waveform ``(S * samples_per_unit,)`` (zero-extended),
        plus the utterance's speaker vector ``(speaker_dim,)`` for a vocoder with
        ``speaker_dim > 0``.
    steps, batch_size, crop_units : int
        Optimizer steps, crops per step, units per crop.
    lr : float
        Peak AdamW learning rate (linear warm-up over ``warmup`` steps, cosine decay).
    seed : int
        Seeds the initialization and the crops.
    unit_noise : float
        Fraction of input units replaced by random ids (the target is unchanged):
        regularizes, and teaches robustness to a unit decoder's errors.
    delta_weight, mel_weight : float
        Weights of the temporal-difference and log-mel L1 (see :func:`spectral_l1`).
    progress : bool
        Show a tqdm bar with the running loss.
    context_units : int
        Real units given on each side of a crop, outside the loss (see
        :class:`_CropSampler`); ``vocoder.receptive_field_units`` covers the
        network's whole reach. It did not make the units topline better on the
        embedded corpus (RESULTS.md, session 13), so the default is 0.

    Returns
    -------
    dict
        ``first_loss``, ``final_loss`` (mean of the last 50 steps), ``steps``, ``seconds``.
    """
    from tqdm import tqdm

    if not pairs:
        raise DataPreparationError("No training utterances for the vocoder.")
    if delta_weight < 0 or mel_weight < 0:
        raise ConfigError(f"unit_to_spec training needs delta_weight >= 0 and mel_weight >= 0 (0 turns a "
                          f"term off); got delta_weight={delta_weight}, mel_weight={mel_weight}.")
    torch.manual_seed(seed)
    for module in vocoder.net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    if context_units < 0:
        raise ConfigError(f"unit_to_spec training needs context_units >= 0; got {context_units}.")
    sampler = _CropSampler(pairs, crop_units, vocoder.samples_per_unit, vocoder.options["n_fft"] // 2, seed,
                           context=context_units)
    with torch.no_grad():  # start from the mean log-spectrum: the loss starts low
        units, lengths, wavs, _, _ = sampler.sample(64)
        frames = int(lengths.max()) * vocoder.frames_per_unit
        vocoder.net.out.bias.copy_(_target(vocoder, wavs, frames).mean(dim=(0, 1)))
    vocoder.train()
    opt = torch.optim.AdamW(vocoder.parameters(), lr=lr, weight_decay=1e-4)

    def schedule(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    losses, started = [], time.time()
    bar = tqdm(range(steps), desc="unit_to_spec vocoder", unit="step", disable=not progress)
    for _ in bar:
        units, lengths, wavs, speakers, weights = sampler.sample(batch_size)
        if unit_noise > 0:
            swap = torch.rand(units.shape, generator=sampler.generator) < unit_noise
            noise = torch.randint(0, vocoder.num_units, units.shape, generator=sampler.generator)
            units = torch.where(swap, noise, units)
        loss = spectral_l1(vocoder, units, lengths, wavs, speakers, delta_weight=delta_weight,
                           mel_weight=mel_weight, weights=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vocoder.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if len(losses) % 25 == 0:
            bar.set_postfix(loss=f"{sum(losses[-25:]) / 25:.3f}")
    vocoder.eval()
    tail = losses[-50:]
    return {
        "first_loss": losses[0] if losses else float("nan"),
        "final_loss": sum(tail) / len(tail) if tail else float("nan"),
        "steps": steps,
        "seconds": round(time.time() - started, 1),
    }


def _speaker_digest(speaker_vectors, rows):
    """Hash of the training rows' speaker vectors (rounded: float noise must not retrain)."""
    import hashlib

    digest = hashlib.sha256()
    for row in rows:
        vector = speaker_vectors.get(row["ID"])
        if vector is not None:
            digest.update(row["ID"].encode())
            digest.update((vector.float() * 1e4).round().to(torch.int64).numpy().tobytes())
    return digest.hexdigest()[:16]


def fit_unit_vocoder(extractor, manifest, cache_dir, unit_file=None, vocoder_options=None, steps=1500,
                     batch_size=16, crop_units=40, lr=3e-3, seed=0, unit_noise=0.1, max_utterances=None,
                     progress=True, speaker_vectors=None, extra_manifests=(), delta_weight=0.0,
                     mel_weight=0.0, context_units=0):
    """Train (or reuse) a ``unit_to_spec`` vocoder for a fitted unit extractor.

    Arguments
    ---------
    extractor : UnitExtractor
        The fitted units plugin (its fingerprint keys the cache and is stored).
    manifest : str
        SpeechBrain CSV of the training split (``ID, wav, ...``).
    cache_dir : str
        Output folder (created).
    unit_file : str, optional
        Units file of that split from :func:`~taste_toolkit.data.unit_cache.prepare_units`
        (otherwise the units are computed with ``extractor``).
    vocoder_options : dict, optional
        :class:`~taste_toolkit.plugins.vocoder.unit_to_spec.UnitToSpecVocoder` options
        (``num_units``, ``sample_rate``, ``samples_per_unit`` and
        ``units_fingerprint`` come from the extractor).
    steps, batch_size, crop_units, lr, seed, unit_noise, delta_weight, mel_weight, context_units
        Training options (see :func:`train_unit_vocoder`).
    max_utterances : int, optional
        Train on at most this many utterances (the first ones of the manifest).
    progress : bool
        tqdm progress bars.
    speaker_vectors : dict, optional
        ``{utterance ID: (D,) tensor}`` from the speaker plugin
        (:func:`taste_toolkit.training.data.compute_speaker_vectors`); required
        when ``vocoder_options["speaker_dim"] > 0``, refused otherwise.
    extra_manifests : list of str
        More training audio (``ID, wav`` manifests, e.g. the real voice of
        :func:`taste_toolkit.data.asterisk.prepare_asterisk_split`); their units are
        computed with ``extractor``. The vocoder needs no transcripts.

    Returns
    -------
    str
        Path of the trained vocoder (load it with ``UnitToSpecVocoder.from_pretrained``).
    """
    from taste_toolkit.plugins.vocoder.unit_to_spec import UnitToSpecVocoder

    if not bool(getattr(extractor, "fitted", True)):
        raise ConfigError("fit_unit_vocoder needs a fitted unit extractor; run prepare_units first.")
    spu = getattr(extractor, "samples_per_unit", None) or round(extractor.sample_rate / extractor.frame_rate)
    options = dict(vocoder_options or {})
    fixed = {"num_units": int(extractor.num_units), "sample_rate": int(extractor.sample_rate),
             "samples_per_unit": int(spu), "units_fingerprint": extractor_fingerprint(extractor)}
    for k, v in fixed.items():
        if k in options and options[k] != v:
            raise ConfigError(f"vocoder option {k}={options[k]!r} contradicts the unit extractor ({v!r}).")
    options.update(fixed)
    rows = read_manifest(manifest)
    if max_utterances is not None:
        rows = rows[:max_utterances]
    speaker_dim = int(options.get("speaker_dim", 0))
    if bool(speaker_dim) != (speaker_vectors is not None):
        raise ConfigError(
            f"unit_to_spec speaker_dim={speaker_dim} needs speaker vectors exactly when it is > 0; got "
            f"{'none' if speaker_vectors is None else 'speaker vectors'}. Set speaker_dim to the speaker "
            "plugin's embedding_dim and pass its vectors, or neither."
        )
    extra = [(path, read_manifest(path)) for path in extra_manifests or ()]
    if speaker_vectors is not None:
        dims = {int(v.numel()) for v in speaker_vectors.values()}
        if dims != {speaker_dim}:
            raise ConfigError(f"unit_to_spec speaker_dim={speaker_dim} but the speaker vectors have widths {sorted(dims)}.")
    training = dict(steps=steps, batch_size=batch_size, crop_units=crop_units, lr=lr, seed=seed,
                    unit_noise=unit_noise, max_utterances=max_utterances)
    if delta_weight:  # only when set, so the caches of plain-L1 vocoders stay valid
        training["delta_weight"] = float(delta_weight)
    if mel_weight:
        training["mel_weight"] = float(mel_weight)
    if context_units:
        training["context_units"] = int(context_units)
    # Every option that shapes the weights, defaults included (synthesis options do not).
    resolved = {k: v for k, v in UnitToSpecVocoder(**options).options.items() if k not in SYNTHESIS_OPTIONS}
    key_parts = [TRAINING_VERSION, resolved, training, _manifest_digest(manifest, rows)]
    key_parts += [_manifest_digest(path, extra_rows) for path, extra_rows in extra]
    if speaker_vectors is not None:  # other speaker vectors (another speaker model) train other weights
        key_parts.append(_speaker_digest(speaker_vectors, rows + [r for _, more in extra for r in more]))
    key = _key(*key_parts)
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"unit_to_spec-{key}.safetensors")
    if os.path.isfile(path):
        try:
            UnitToSpecVocoder.from_pretrained(path)
            logger.info("Reusing trained unit_to_spec vocoder %s", path)
            return path
        except Exception as exc:  # corrupt: retrain
            logger.warning("Cached vocoder %s is unusable (%s); training it again.", path, exc)
    vocoder = UnitToSpecVocoder(**options)
    pairs = _load_pairs(extractor, rows, unit_file, int(spu), speaker_vectors)
    for _, extra_rows in extra:
        pairs += _load_pairs(extractor, extra_rows, None, int(spu), speaker_vectors)
    summary = train_unit_vocoder(vocoder, pairs, steps=steps, batch_size=batch_size, crop_units=crop_units,
                                 lr=lr, seed=seed, unit_noise=unit_noise, delta_weight=delta_weight,
                                 mel_weight=mel_weight, progress=progress, context_units=context_units)
    summary.update(training, utterances=len(pairs), manifest=os.path.abspath(manifest),
                   extra_manifests=[os.path.abspath(path) for path, _ in extra])
    logger.info("unit_to_spec vocoder trained in %.0f s (L1 %.3f -> %.3f): %s",
                summary["seconds"], summary["first_loss"], summary["final_loss"], path)
    vocoder.save(path, metadata=summary)
    return path


def fit_recipe_vocoder(hparams, manifest, unit_file, speaker_vectors=None):
    """Train (or reuse) the recipe's ``unit_to_spec`` vocoder; return its ``vocoder_options`` block.

    The block's options that shape the weights (``dim``, ``speaker_dim`` ...) go to
    training; the returned block keeps only the synthesis options and the
    ``checkpoint``, which is what :func:`taste_toolkit.training.export.build_vocoder`
    loads. The vocoder is conditioned on the tokenizer's speaker plugin whenever
    it has one (``speaker_dim`` = its ``embedding_dim``) unless the block sets
    ``speaker_dim: 0``. Runs on the main process only (the others wait).

    Arguments
    ---------
    hparams : dict
        Loaded recipe hparams (``units``, ``speaker``, ``vocoder_options``,
        ``unit_vocoder_training``, ``prep_folder``).
    manifest, unit_file : str
        Training split manifest and its units file.
    speaker_vectors : dict, optional
        ``{ID: (D,)}`` from :func:`taste_toolkit.training.data.compute_speaker_vectors`.
    """
    from speechbrain.utils.distributed import run_on_main

    block = dict((hparams.get("vocoder_options") or {}).get("unit_to_spec") or {})
    synthesis = {k: block.pop(k) for k in SYNTHESIS_OPTIONS if k in block}
    speaker = hparams.get("speaker")
    available = int(getattr(speaker, "embedding_dim", 0) or 0) if speaker is not None else 0
    speaker_dim = int(block.pop("speaker_dim", available))
    if speaker_dim and speaker_dim != available:
        raise ConfigError(
            f"vocoder_options.unit_to_spec.speaker_dim={speaker_dim} but the speaker plugin gives "
            f"{available or 'no'} vectors; set speaker_name (e.g. resemblyzer) or speaker_dim: 0."
        )
    if speaker_dim:
        block["speaker_dim"] = speaker_dim
    training = dict(hparams.get("unit_vocoder_training") or {})
    extra = list(training.pop("extra_manifests", None) or [])
    if speaker_dim and extra:
        from taste_toolkit.training.data import compute_speaker_vectors

        more = compute_speaker_vectors(speaker, {f"extra{i}": p for i, p in enumerate(extra)},
                                       os.path.join(hparams["prep_folder"], "speaker"))
        speaker_vectors = {**(speaker_vectors or {}), **more}
    checkpoint = run_on_main(fit_unit_vocoder, kwargs=dict(
        extractor=hparams["units"], manifest=manifest, unit_file=unit_file, vocoder_options=block,
        cache_dir=os.path.join(hparams["prep_folder"], "vocoder"), extra_manifests=extra,
        speaker_vectors=speaker_vectors if speaker_dim else None, **training,
    ))  # fmt: skip
    return {**synthesis, "checkpoint": checkpoint}
