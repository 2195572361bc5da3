"""``encodec`` codec plugin: Meta's EnCodec through transformers (baseline of the paper's table).

The TASTE paper compares against "Encodec 2RVQ" (75 Hz). With the 24 kHz model,
``bandwidth`` picks how many RVQ codebooks are used:
``num_codebooks = bandwidth * 1000 / (frame_rate * log2(codebook_size))``
(1.5 kbps -> 2 codebooks of 1024 at 75 Hz).
"""

from taste_toolkit.bitrate import bitrate
from taste_toolkit.errors import ConfigError
from taste_toolkit.plugins.codec.base import TransformersCodec
from taste_toolkit.registry import register


@register("codec", "encodec")
class EncodecCodec(TransformersCodec):
    """EnCodec from a hub id or local folder.

    Arguments
    ---------
    model : str
        Hub id (``facebook/encodec_24khz``) or a local folder saved by ``save_pretrained``.
    bandwidth : float
        Target bandwidth in kbps; must be one of the model's ``target_bandwidths``.
    """

    display_name = "EnCodec"
    model_class = "EncodecModel"

    def __init__(self, model: str = "facebook/encodec_24khz", bandwidth: float = 1.5):
        super().__init__()
        config = self._load(model).config
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
        # The bandwidth fixes the codebooks: kbps / (bits per second of one codebook).
        self._num_codebooks = int(round(self.bandwidth * 1000 / bitrate(self.frame_rate, 1, self.codebook_size)))

    def _encode_one(self, wav):
        out = self.model.encode(wav.view(1, 1, -1), bandwidth=self.bandwidth)
        return out.audio_codes[0, 0].transpose(0, 1)  # (chunks=1, batch=1, R, T) -> (T, R)

    def _decode_one(self, codes):
        audio_codes = codes.transpose(0, 1).reshape(1, 1, self.num_codebooks, codes.shape[0])
        return self.model.decode(audio_codes, [None]).audio_values
