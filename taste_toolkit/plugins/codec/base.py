"""The one base of the codec plugins: frozen model, input checks, resampling, per-utterance coding.

Every codec plugin (``encodec``, ``mimi``, ``speechtokenizer``) wraps a frozen
pretrained model and only says how to code **one** utterance
(:meth:`FrozenCodec._encode_one`, :meth:`FrozenCodec._decode_one`). The base
does the rest, once:

* freezing the model (eval mode, no gradients) and checking the number of
  codebooks asked for against what the model has;
* checking input shapes, resampling a waveform to the codec's rate
  (:meth:`FrozenCodec.prepare`);
* the batch loop and padding: codes ``(B, T, R)`` padded with ``-1``,
  waveforms ``(B, S)`` zero-padded, with their lengths.

:class:`TransformersCodec` adds loading with ``from_pretrained`` (hub id or
local folder) and the rates read from a transformers config (EnCodec, Mimi).

Utterances are coded one at a time. The models accept a padding mask, but
their convolutions and (for Mimi) attention still see the padded tail, so a
padded batch would change the codes of shorter utterances; baselines are scored
per utterance, where exactness matters more than batch speed.
"""

import abc
import os

import torch

from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.interfaces import Codec


def check_waveforms(wavs, wav_lengths):
    """Validate ``(B, S)`` float waveforms and ``(B,)`` lengths."""
    if wavs.dim() != 2:
        raise InputError(f"codec input must be (B, S) mono waveforms, got shape {tuple(wavs.shape)}")
    if wav_lengths.shape != (wavs.shape[0],):
        raise InputError(f"wav_lengths must be (B,) = ({wavs.shape[0]},), got {tuple(wav_lengths.shape)}")
    if int(wav_lengths.min()) <= 0:
        raise InputError("codec input has an empty utterance (length 0); drop it before encoding")


def pad_codes(rows, num_codebooks):
    """List of ``(T_i, R)`` code tensors -> ``(B, T, R)`` padded with -1, and lengths ``(B,)``."""
    lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.long)
    out = torch.full((len(rows), int(lengths.max()), num_codebooks), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out, lengths


def pad_waves(rows):
    """List of 1-D waveforms -> ``(B, S)`` zero-padded and lengths ``(B,)``."""
    lengths = torch.tensor([r.numel() for r in rows], dtype=torch.long)
    out = torch.zeros(len(rows), int(lengths.max()))
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
    return out, lengths


class FrozenCodec(Codec):
    """Base of the codec plugins: a frozen model coded one utterance at a time.

    Subclasses set :attr:`display_name`, call :meth:`_freeze` and
    :meth:`_set_num_codebooks` in ``__init__``, give the rates
    (``sample_rate``, ``frame_rate``, ``codebook_size``) and implement
    :meth:`_encode_one` and :meth:`_decode_one`.
    """

    #: Name of the codec in messages (``"EnCodec"``).
    display_name: str = "codec"

    def _freeze(self, model):
        """Keep ``model`` as ``self.model`` in eval mode, without gradients."""
        self.model = model
        model.eval().requires_grad_(False)
        return model

    def _set_num_codebooks(self, value, available, option="num_quantizers"):
        """Check ``1 <= value <= available`` and keep it as :attr:`num_codebooks`.

        Raises
        ------
        ConfigError
            ``value`` outside the model's range (the message names the option).
        """
        if isinstance(value, bool) or int(value) != value or not 1 <= int(value) <= int(available):
            raise ConfigError(
                f"{self.display_name} {option} must be in [1, {int(available)}] (the codebooks this "
                f"model has), got {value!r}."
            )
        self._num_codebooks = int(value)

    @property
    def num_codebooks(self) -> int:
        return self._num_codebooks

    # ------------------------------------------------------------ per utterance

    @abc.abstractmethod
    def _encode_one(self, wav):
        """Codes ``(T, R)`` (long) of one waveform ``(S,)`` at :attr:`sample_rate`."""

    @abc.abstractmethod
    def _decode_one(self, codes):
        """Waveform ``(S,)`` of one utterance's codes ``(T, R)``."""

    # ------------------------------------------------------------ batches

    def prepare(self, wav, sample_rate):
        """One waveform at ``sample_rate`` -> float32 ``(S,)`` tensor at the codec's rate.

        Arguments
        ---------
        wav : numpy.ndarray or torch.Tensor
            1-D samples.
        sample_rate : int
            Their rate (Hz).
        """
        from taste_toolkit.audio import resample

        x = torch.as_tensor(wav, dtype=torch.float32)
        if x.dim() != 1:
            raise InputError(f"{self.display_name} expects one mono waveform (S,), got shape {tuple(x.shape)}.")
        return resample(x, int(sample_rate), self.sample_rate)

    @torch.no_grad()
    def encode(self, wavs, wav_lengths):
        """``(B, S)`` at :attr:`sample_rate` -> ``(codes (B, T, R), lengths (B,))``; padding is ``-1``."""
        check_waveforms(wavs, wav_lengths)
        rows = [self._encode_one(wav[:n]).long() for wav, n in zip(wavs, wav_lengths.tolist())]
        return pad_codes(rows, self.num_codebooks)

    @torch.no_grad()
    def decode(self, codes, code_lengths):
        """``(B, T, R)`` codes -> ``(wavs (B, S), lengths (B,))``."""
        if codes.dim() != 3 or codes.shape[2] != self.num_codebooks:
            raise InputError(
                f"{self.display_name} codes must be (B, T, {self.num_codebooks}), got {tuple(codes.shape)}"
            )
        return pad_waves([self._decode_one(c[:n]).reshape(-1) for c, n in zip(codes, code_lengths.tolist())])


class TransformersCodec(FrozenCodec):
    """A :class:`FrozenCodec` whose model is a transformers class (EnCodec, Mimi).

    The model is loaded with ``from_pretrained`` from a hub id (on a machine with
    hub access, or from the local Hugging Face cache) or from a local folder; the
    rates come from its config.
    """

    #: Name of the model class in :mod:`transformers` (``"EncodecModel"``).
    model_class: str = ""

    def _load(self, model):
        """Load, freeze and return ``transformers.<model_class>.from_pretrained(model)``.

        Raises
        ------
        MissingResourceError
            ``model`` is empty or cannot be loaded (the message says how to get it).
        """
        import transformers

        if not model:
            raise MissingResourceError(f"The {self.display_name} codec needs `model`: a hub id or a local folder.")
        try:
            loaded = getattr(transformers, self.model_class).from_pretrained(model)
        except (OSError, ValueError) as err:
            where = "local folder" if os.path.isdir(model) else "hub id"
            raise MissingResourceError(
                f"Could not load the {self.display_name} codec from {where} {model!r} "
                f"({err.__class__.__name__}: {err}). Download it where the hub is reachable "
                f"(huggingface-cli download {model} --local-dir DIR) and pass model: DIR."
            ) from err
        return self._freeze(loaded)

    @property
    def sample_rate(self):
        return int(self.model.config.sampling_rate)

    @property
    def frame_rate(self):
        return float(self.model.config.frame_rate)

    @property
    def codebook_size(self):
        return int(self.model.config.codebook_size)
