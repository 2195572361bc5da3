"""``whisper_kmeans`` units plugin: k-means over frozen Whisper encoder states.

Closer to CosyVoice's S3 tokens (quantized states of a supervised ASR encoder)
than ``mel_kmeans``, and still offline with the default ``builtin:tiny.en``:
the 50 Hz hidden states of one layer of a frozen Whisper encoder, ``stack``
consecutive frames concatenated into one vector (25 Hz by default),
standardized per dimension and clustered by k-means
(:mod:`taste_toolkit.kmeans`).

Same contract as ``mel_kmeans``
-------------------------------
This is a subclass of :class:`~taste_toolkit.plugins.units.mel_kmeans.MelKMeansUnits`
with Whisper features as the clustered vectors, so unit count, frame rate,
``samples_per_unit = 320 * stack``, :meth:`num_frames` (``S = n // (320 * stack) + 1``),
input checks, padding and the unit table are the same, and the unit cache,
decoders and vocoders work unchanged.

How the Whisper frames are matched to the units: each utterance is zero-extended
to ``S * 320 * stack`` samples (exactly the samples ``mel_kmeans`` frames: the
last unit covers the last samples plus trailing silence) and encoded on its own
in the encoder plugin's ``unpadded`` mode, which gives exactly ``S * stack``
encoder frames (frame ``t`` = mel frames ``2t, 2t + 1`` = samples around
``320 t``). Frames are never trimmed. The one exception is the 30-s Whisper
window: an utterance whose extension would pass 480000 samples is encoded up to
480000 samples and its last frame is repeated for the (at most ``stack``)
missing frames. Audio longer than 30 s raises :class:`InputError`.

Batch invariance: every utterance goes through Whisper alone (batch of one,
its own samples only), so it gives bit-identical units alone or padded in a
batch; the cost is the same as a masked batch on CPU.

Unit table (for the ``griffin_lim`` vocoder)
--------------------------------------------
``unit_log_mels`` ``(V, stack, n_mels)`` holds, per unit, the mean raw log-mel
(``mel_kmeans``'s definition and :attr:`mel_options`) of the fit frames
assigned to it by the final k-means assignment; a unit with no frame (rare)
takes the log-mel of the fit vector nearest to its centroid.

Where the Whisper weights live
------------------------------
``builtin:`` sources are reproducible from the installed package, so their
weights are *not* part of the state (``state_dict`` holds only the k-means
state): unit-cache files and standalone folders stay small and name the source.
Any other source (hub id, local folder) is held as the submodule ``whisper``
whose weights *are* in the state, like the ``whisper`` encoder plugin: a
standalone export writes the Whisper ``config.json`` into the folder and
rebuilds with ``source="./", init_weights=False``, and the unit fingerprint
covers the weights. The unit cache keys a local source by its path: clear the
cache if you overwrite the weights in place.
"""

import torch
import torch.nn.functional as F

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.kmeans import assign
from taste_toolkit.plugins.encoder.whisper import WhisperTapEncoder
from taste_toolkit.plugins.units.mel_kmeans import MelKMeansUnits, random_subset, standardized_kmeans
from taste_toolkit.registry import register

#: Whisper encoder frame hop in samples at 16 kHz (50 Hz).
WHISPER_HOP = 320


@register("units", "whisper_kmeans")
class WhisperKMeansUnits(MelKMeansUnits):
    """k-means units over stacked Whisper encoder states (default 256 units at 25 Hz).

    Arguments
    ---------
    num_units : int
        Number of clusters (unit vocabulary V), e.g. 256 or 1024.
    source : str
        Whisper to use (see :class:`~taste_toolkit.plugins.encoder.whisper.WhisperTapEncoder`):
        ``builtin:tiny.en``, a hub id, a transformers or CTranslate2 folder.
    layer : int
        Encoder layer whose output is clustered: ``-1`` = last block after the final
        LayerNorm (HF ``last_hidden_state``), ``k`` in ``0..num_layers`` = HF
        ``hidden_states[k]`` (0 = convolutional front end + positions).
    stack : int
        Consecutive 50 Hz Whisper frames per unit; unit rate = 50 / stack Hz.
    n_mels, n_fft : int
        Log-mel geometry of the unit table (``mel_kmeans``'s definition, hop 320).
    fit_frames : int
        Maximum number of unit vectors used by k-means (a seeded uniform subset).
        Lower default than ``mel_kmeans``: a vector has ``stack * d_model`` values
        (768 for tiny.en) plus its log-mel, and the fit holds up to twice this many.
    kmeans_iters : int
        Lloyd iterations.
    seed : int
        Seed of the subsampling and k-means.
    init_weights : bool
        Load the pretrained weights of ``source``. False builds the encoder from
        ``source``'s ``config.json`` only (standalone folders, whose weights file
        carries the encoder); not allowed with ``builtin:`` sources.

    Example
    -------
    >>> ext = WhisperKMeansUnits(num_units=4)  # doctest: +SKIP
    >>> ext.fit([torch.randn(16000) * s for s in (0.01, 0.1, 1.0)])  # doctest: +SKIP
    >>> units, lengths = ext(torch.zeros(2, 16000), torch.tensor([16000, 8000]))  # doctest: +SKIP
    >>> units.shape, lengths.tolist()  # doctest: +SKIP
    (torch.Size([2, 26]), [26, 13])
    """

    sample_rate = 16000

    def __init__(
        self,
        num_units: int = 256,
        source: str = "builtin:tiny.en",
        layer: int = -1,
        stack: int = 2,
        n_mels: int = 80,
        n_fft: int = 1024,
        fit_frames: int = 50000,
        kmeans_iters: int = 30,
        seed: int = 0,
        init_weights: bool = True,
    ):
        super().__init__(
            num_units=num_units, sample_rate=16000, n_mels=n_mels, n_fft=n_fft, hop_length=WHISPER_HOP,
            stack=stack, fit_frames=fit_frames, kmeans_iters=kmeans_iters, seed=seed,
        )
        source = str(source)
        builtin = source.startswith("builtin:")
        if builtin and not init_weights:
            raise ConfigError(
                f"whisper_kmeans with source={source!r} needs init_weights=True: builtin Whisper weights "
                "are never stored with the units state, so they must be loaded from the package."
            )
        whisper = WhisperTapEncoder(source, value_layer=-1, key_layer=-1, mode="unpadded",
                                    init_weights=init_weights)
        num_layers = whisper.encoder.config.encoder_layers
        if layer != -1 and not 0 <= layer <= num_layers:
            raise ConfigError(
                f"whisper_kmeans layer={layer} is outside -1 (last, after the final LayerNorm) and "
                f"0..{num_layers} for {source!r}, which has {num_layers} encoder layers."
            )
        whisper.key_layer = layer  # values = keys (value_layer=-1): one tap, the clustered one
        if builtin:
            # Outside the module tree: not in state_dict (see module docstring); _apply moves it.
            object.__setattr__(self, "_builtin_whisper", whisper)
        else:
            self.whisper = whisper
        self.source = source
        self.whisper_dim = whisper.key_dim
        dim = stack * self.whisper_dim
        # Same buffer names as mel_kmeans, sized for the Whisper vectors.
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("centroids", torch.zeros(num_units, dim))

    def resolve_options(self, options):
        """Record ``source`` as a string (a ``Path`` is accepted)."""
        return dict(options, source=self.source)

    def _whisper(self):
        """The frozen :class:`WhisperTapEncoder` (held outside the state for builtins)."""
        hidden = self.__dict__.get("_builtin_whisper")
        return hidden if hidden is not None else self.whisper

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        hidden = self.__dict__.get("_builtin_whisper")
        if hidden is not None:
            hidden._apply(fn, *args, **kwargs)
        return self

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def cluster_features(self, wavs, wav_lengths):
        """Stacked Whisper encoder states (not standardized).

        Arguments
        ---------
        wavs : torch.Tensor
            ``(B, L)`` float waveforms at 16 kHz.
        wav_lengths : torch.Tensor
            ``(B,)`` valid samples (absolute, >= 1, at most 30 s).

        Returns
        -------
        feats : torch.Tensor
            ``(B, S, stack * d_model)``; vector ``u`` is encoder frames ``u*stack ..
            u*stack+stack-1`` concatenated frame by frame; zeros after ``lengths``.
        lengths : torch.Tensor
            ``(B,)`` valid units, ``num_frames(wav_lengths)``.
        """
        wavs, wav_lengths = self._check_inputs(wavs, wav_lengths)
        lengths = self.num_frames(wav_lengths)
        feats = wavs.new_zeros(wavs.shape[0], int(lengths.max()), self.stack * self.whisper_dim)
        for i, (n, units) in enumerate(zip(wav_lengths.tolist(), lengths.tolist())):
            feats[i, :units] = self._encode(wavs[i, :n], units)
        return feats, lengths

    def _encode(self, wav, units):
        """``(units, stack * d_model)`` Whisper vectors of one waveform ``(n,)``."""
        whisper = self._whisper()
        if wav.numel() > whisper.max_samples:
            raise InputError(
                f"An utterance has {wav.numel() / 16000:.1f} s of audio; whisper_kmeans encodes at most "
                f"{whisper.max_samples / 16000:.0f} s (the Whisper window). Split the audio into shorter "
                "segments before extracting units."
            )
        total = min(units * self.samples_per_unit, whisper.max_samples)
        wav = F.pad(wav, (0, total - wav.numel()))  # zero-extend to whole units
        out = whisper(wav.unsqueeze(0), torch.tensor([total], device=wav.device))
        frames = out.keys[0, : int(out.lengths[0])]  # (total // 320, D)
        needed = units * self.stack
        if frames.shape[0] < needed:  # only at the 30-s window: repeat the last frame
            frames = torch.cat([frames, frames[-1:].expand(needed - frames.shape[0], -1)])
        return frames[:needed].reshape(units, self.stack * self.whisper_dim)

    # ------------------------------------------------------------------ fitting
    @torch.no_grad()
    def fit(self, waveforms):
        """Fit standardization, centroids and the unit table on 1-D waveforms.

        At most ``fit_frames`` unit vectors are kept, each with its raw log-mel
        frames (:func:`~taste_toolkit.plugins.units.mel_kmeans.random_subset`: a
        uniform sample holding at most about ``2 * fit_frames`` vectors in memory).

        Arguments
        ---------
        waveforms : iterable of torch.Tensor
            ``(L,)`` float waveforms at 16 kHz, each at most 30 s.
        """

        def paired_vectors():
            for wav in self._fit_waveforms(waveforms):
                lengths = torch.tensor([wav.numel()], device=wav.device)
                whisper, _ = self.cluster_features(wav.unsqueeze(0), lengths)
                log_mels, _ = self.features(wav.unsqueeze(0), lengths)
                yield torch.cat([whisper[0], log_mels[0]], dim=1)  # (S, D_whisper + stack * n_mels)

        kept, seen = random_subset(paired_vectors(), self.options["fit_frames"], self.options["seed"])
        self._check_fit_count(kept, seen)
        dim = self.centroids.shape[1]
        vectors, log_mels = kept[:, :dim], kept[:, dim:]
        mean, std, centroids = standardized_kmeans(
            vectors, self.num_units, self.options["kmeans_iters"], self.options["seed"]
        )
        standardized = (vectors - mean) / std
        labels = assign(standardized, centroids)
        counts = torch.bincount(labels, minlength=self.num_units)
        table = torch.zeros(self.num_units, log_mels.shape[1]).index_add_(0, labels, log_mels)
        table = table / counts.clamp(min=1).unsqueeze(1).to(table.dtype)
        empty = counts == 0
        if empty.any():  # a centroid no fit vector chose: log-mel of its nearest vector
            table[empty] = log_mels[assign(centroids[empty], standardized)]
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.centroids.copy_(centroids)
        self.unit_log_mels.copy_(table.reshape(self.num_units, self.stack, self.n_mels))
        self.fitted.fill_(True)

    # ------------------------------------------------------------------ export
    def export(self, folder):
        """Write what a standalone checkpoint needs to rebuild this extractor.

        ``builtin:`` sources write nothing: the folder names the builtin (pinned
        in the options even when it was the default), which standalone loading
        always allows. Other sources write the Whisper
        ``config.json`` to ``folder`` (the weights travel in the checkpoint's
        safetensors file with the k-means state).

        Returns
        -------
        dict
            Option overrides; ``"./..."`` values are paths inside ``folder``.
        """
        if self.options["source"].startswith("builtin:"):
            return {"source": self.options["source"]}
        return self.whisper.export(folder)
