"""``mimi`` codec plugin: Kyutai's Mimi through transformers (12.5 Hz, 1 semantic + acoustic RVQ).

The TASTE paper's Mimi row uses 8 codebooks: 12.5 Hz x 8 x 11 bits = 1.1 kbps.
"""

from taste_toolkit.plugins.codec.base import TransformersCodec
from taste_toolkit.registry import register


@register("codec", "mimi")
class MimiCodec(TransformersCodec):
    """Mimi from a hub id or local folder.

    Arguments
    ---------
    model : str
        Hub id (``kyutai/mimi``) or a local folder saved by ``save_pretrained``.
    num_quantizers : int
        Codebooks used (the first is the semantic one); at most the model's ``num_quantizers``.
    """

    display_name = "Mimi"
    model_class = "MimiModel"

    def __init__(self, model: str = "kyutai/mimi", num_quantizers: int = 8):
        super().__init__()
        self._load(model)
        self._set_num_codebooks(num_quantizers, self.model.config.num_quantizers)

    def _encode_one(self, wav):
        out = self.model.encode(wav.view(1, 1, -1), num_quantizers=self.num_codebooks)
        return out.audio_codes[0].transpose(0, 1)  # (R, T) -> (T, R)

    def _decode_one(self, codes):
        """S = T x sample_rate / frame_rate samples (Mimi's decoder overshoots the last frame)."""
        wav = self.model.decode(codes.transpose(0, 1).unsqueeze(0)).audio_values.reshape(-1)
        return wav[: int(round(codes.shape[0] * self.sample_rate / self.frame_rate))]
