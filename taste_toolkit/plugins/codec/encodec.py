"""``encodec`` codec plugin: Meta's EnCodec through transformers (baseline of the paper's table).

The TASTE paper compares against "Encodec 2RVQ" (75 Hz). With the 24 kHz model,
``bandwidth`` picks how many RVQ codebooks are used:
``num_codebooks = bandwidth * 1000 / (frame_rate * log2(codebook_size))``
(1.5 kbps -> 2 codebooks of 1024 at 75 Hz).
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


@register("codec", "encodec")
class EncodecCodec(Codec):
    """EnCodec from a hub id or local folder.

    Arguments
    ---------
    model : str
        Hub id (``facebook/encodec_24khz``) or a local folder saved by ``save_pretrained``.
    bandwidth : float
        Target bandwidth in kbps; must be one of the model's ``target_bandwidths``.
    """

    def __init__(self, model: str = "facebook/encodec_24khz", bandwidth: float = 1.5):
        super().__init__()
        from transformers import EncodecModel

        self.model = load_transformers_codec(EncodecModel, model, "EnCodec")
        self.model.requires_grad_(False)
        config = self.model.config
        if float(bandwidth) not in [float(b) for b in config.target_bandwidths]:
            raise ConfigError(
                f"EnCodec bandwidth {bandwidth} kbps is not one of this model's target_bandwidths "
                f"{list(config.target_bandwidths)}; pick one of those."
            )
        self.bandwidth = float(bandwidth)
        if config.chunk_length_s is not None:
            # The 48 kHz stereo model codes 1-s chunks with per-chunk scales; the
            # (B, T, R) contract has no place for scales, so only chunk-free models.
            raise ConfigError("Only EnCodec models without chunking (e.g. encodec_24khz) are supported.")

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
        bits_per_frame = self.frame_rate * torch.log2(torch.tensor(float(self.codebook_size))).item()
        return int(round(self.bandwidth * 1000 / bits_per_frame))

    @torch.no_grad()
    def encode(self, wavs, wav_lengths):
        """``(B, S)`` at :attr:`sample_rate` -> ``(codes (B, T, R), lengths (B,))``."""
        check_waveforms(wavs, wav_lengths)
        rows = []
        for wav, n in zip(wavs, wav_lengths.tolist()):
            out = self.model.encode(wav[:n].view(1, 1, -1), bandwidth=self.bandwidth)
            # audio_codes: (chunks=1, batch=1, R, T)
            rows.append(out.audio_codes[0, 0].transpose(0, 1).long())
        return pad_codes(rows, self.num_codebooks)

    @torch.no_grad()
    def decode(self, codes, code_lengths):
        """``(B, T, R)`` codes -> ``(wavs (B, S), lengths (B,))``."""
        if codes.dim() != 3 or codes.shape[2] != self.num_codebooks:
            raise InputError(
                f"EnCodec codes must be (B, T, {self.num_codebooks}), got {tuple(codes.shape)}"
            )
        rows = []
        for c, n in zip(codes, code_lengths.tolist()):
            audio_codes = c[:n].transpose(0, 1).reshape(1, 1, self.num_codebooks, n)
            rows.append(self.model.decode(audio_codes, [None]).audio_values.reshape(-1))
        return pad_waves(rows)
