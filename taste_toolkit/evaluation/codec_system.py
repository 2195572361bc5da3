"""``codec`` system type: a neural audio codec baseline (EnCodec, Mimi, SpeechTokenizer) in the table.

YAML entry::

    - name: mimi
      type: codec
      options: {codec: mimi, codec_options: {model: /models/mimi, num_quantizers: 8}}

The codec is any registered ``codec`` plugin (``taste plugins --kind codec``).
Its model comes from a hub id or a local folder; when neither is available the
system cannot be built and the harness reports it as skipped, with the reason.
"""

import numpy as np
import torch

from taste_toolkit.bitrate import bits_per_token
from taste_toolkit.evaluation.systems import System, register_system


@register_system("codec")
class CodecSystem(System):
    """Source audio -> codec codes -> audio, at the codec's own sample rate.

    Arguments
    ---------
    codec : str
        Registered codec plugin name (``encodec``, ``mimi``, ``speechtokenizer``).
    codec_options : dict
        Options of that plugin (model location, bandwidth or number of codebooks).
    """

    def __init__(self, codec, codec_options=None):
        from taste_toolkit import registry

        self.codec = registry.build("codec", codec, dict(codec_options or {}))
        self.name = codec

    def info(self):
        c = self.codec
        return {
            "codec": self.name,
            "alignment": "frame",
            "token_rate_hz": c.frame_rate,
            "bitrate_bps": c.bitrate,
            "codebooks": c.num_codebooks,
            "codebook_size": c.codebook_size,
            "sample_rate": c.sample_rate,
        }

    def reconstruct(self, wav, sample_rate, text, utt_id, words=None):
        x = self.codec.prepare(np.asarray(wav, dtype=np.float32), sample_rate)
        codes, lengths = self.codec.encode(x[None], torch.tensor([x.numel()]))
        out, out_lengths = self.codec.decode(codes, lengths)
        # Trim the codec's frame-rounding tail so durations compare with the source.
        out = out[0, : min(int(out_lengths[0]), x.numel())].numpy()
        frames = int(lengths[0])
        extras = {
            "speech_tokens": frames,
            "bits_per_token": bits_per_token(self.codec.num_codebooks, self.codec.codebook_size),
            "codes": codes[0, :frames].tolist(),
        }
        return out, self.codec.sample_rate, extras

    def close(self):
        self.codec = None
