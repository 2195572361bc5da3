"""``mimi`` codec plugin: Kyutai's Mimi through transformers (12.5 Hz, 1 semantic + acoustic RVQ).

The TASTE paper's Mimi row uses 8 codebooks: 12.5 Hz x 8 x 11 bits = 1.1 kbps.
"""

import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import Codec
from taste_toolkit.plugins.codec._transformers_codec import (
    check_waveforms,
    load_transformers_codec,
    pad_codes,
    pad_waves,
)
from taste_toolkit.registry import register


@register("codec", "mimi")
class MimiCodec(Codec):
    """Mimi from a hub id or local folder.

    Arguments
    ---------
    model : str
        Hub id (``kyutai/mimi``) or a local folder saved by ``save_pretrained``.
    num_quantizers : int
        Codebooks used (the first is the semantic one); at most the model's ``num_quantizers``.
    """

    def __init__(self, model: str = "kyutai/mimi", num_quantizers: int = 8):
        super().__init__()
        from transformers import MimiModel

        self.model = load_transformers_codec(MimiModel, model, "Mimi")
        self.model.requires_grad_(False)
        available = int(self.model.config.num_quantizers)
        if not 1 <= int(num_quantizers) <= available:
            raise ConfigError(f"Mimi num_quantizers must be in [1, {available}], got {num_quantizers}.")
        self._num_quantizers = int(num_quantizers)

    @property
    def sample_rate(self):
        return int(self.model.config.sampling_rate)

    @property
    def frame_rate(self):
        return float(self.model.config.frame_rate)

    @property
    def codebook_size(self):
        return int(self.model.config.codebook_size)

    @property
    def num_codebooks(self):
        return self._num_quantizers

    @torch.no_grad()
    def encode(self, wavs, wav_lengths):
        """``(B, S)`` at :attr:`sample_rate` -> ``(codes (B, T, R), lengths (B,))``."""
        check_waveforms(wavs, wav_lengths)
        rows = []
        for wav, n in zip(wavs, wav_lengths.tolist()):
            out = self.model.encode(wav[:n].view(1, 1, -1), num_quantizers=self._num_quantizers)
            rows.append(out.audio_codes[0].transpose(0, 1).long())  # (R, T) -> (T, R)
        return pad_codes(rows, self.num_codebooks)

    @torch.no_grad()
    def decode(self, codes, code_lengths):
        """``(B, T, R)`` codes -> ``(wavs (B, S), lengths (B,))``; S = T x sample_rate / frame_rate."""
        if codes.dim() != 3 or codes.shape[2] != self.num_codebooks:
            raise InputError(f"Mimi codes must be (B, T, {self.num_codebooks}), got {tuple(codes.shape)}")
        rows = []
        for c, n in zip(codes, code_lengths.tolist()):
            wav = self.model.decode(c[:n].transpose(0, 1).unsqueeze(0)).audio_values.reshape(-1)
            rows.append(wav[: int(round(n * self.sample_rate / self.frame_rate))])
        return pad_waves(rows)
