"""Shared loading and per-utterance looping for codecs that live in transformers.

EnCodec and Mimi are loaded with ``from_pretrained`` from a hub id (on a machine
with hub access, or from the local Hugging Face cache) or from a local folder.
The models are frozen baselines: they run in eval mode under ``torch.no_grad``.

Utterances are coded one at a time. Both models accept a padding mask, but
their convolutions and (for Mimi) attention still see the padded tail, so a
padded batch would change the codes of shorter utterances; baselines are scored
per utterance, where exactness matters more than batch speed.
"""

import math
import os

import torch

from taste_toolkit.errors import InputError, MissingResourceError


def load_transformers_codec(model_class, model, what):
    """``model_class.from_pretrained(model)`` with a clear error when it is unavailable.

    Arguments
    ---------
    model_class : type
        e.g. ``transformers.EncodecModel``.
    model : str
        Hub id (e.g. ``facebook/encodec_24khz``) or a local folder.
    what : str
        Name used in messages (``"EnCodec"``).
    """
    if not model:
        raise MissingResourceError(f"The {what} codec needs `model`: a hub id or a local folder.")
    try:
        return model_class.from_pretrained(model).eval()
    except (OSError, ValueError) as err:
        where = "local folder" if os.path.isdir(model) else "hub id"
        raise MissingResourceError(
            f"Could not load the {what} codec from {where} {model!r} ({err.__class__.__name__}: {err}). "
            f"Download it where the hub is reachable (huggingface-cli download {model} --local-dir DIR) "
            f"and pass model: DIR."
        ) from err


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


def expected_frames(num_samples, sample_rate, frame_rate):
    """Code frames covering ``num_samples`` (rounded up, as the codecs pad the tail)."""
    return math.ceil(num_samples * frame_rate / sample_rate)
