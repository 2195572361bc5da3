"""``identity`` quantizer: the no-VQ ablation (continuous vectors pass through).

TASTE's STAGE1 ``StraightThroughAudioQuantizer`` (and HF's
``skip_vq_in_audio_encoder=True``): the aggregated vectors reach the unit
decoder unchanged, so there are no codes, no codebook and no auxiliary loss.
"""

import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import Quantizer, QuantizerOutput
from taste_toolkit.registry import register


@register("quantizer", "identity")
class IdentityQuantizer(Quantizer):
    """Pass-through "quantizer" (``num_quantizers == codebook_size == 0``).

    Arguments
    ---------
    input_dim : int
        Feature size ``D`` (wired from the aggregator); checked on every call.

    Example
    -------
    >>> q = IdentityQuantizer(input_dim=4)
    >>> x = torch.randn(1, 3, 4)
    >>> out = q(x, torch.tensor([3]))
    >>> torch.equal(out.quantized, x), out.codes, float(out.loss)
    (True, None, 0.0)
    """

    def __init__(self, input_dim: int):
        super().__init__()
        # 0 is allowed: text-only models have no speech vectors and keep the
        # identity as a placeholder (see taste_toolkit.hparams_utils.build_quantizer).
        if input_dim < 0:
            raise ConfigError(f"identity quantizer input_dim must be >= 0, got {input_dim}.")
        self._input_dim = input_dim

    @property
    def input_dim(self):
        return self._input_dim

    def _check(self, x):
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise InputError(
                f"identity quantizer expects x of shape (B, M, {self.input_dim}), got "
                f"{tuple(x.shape)}; check that input_dim matches the aggregator's output_dim."
            )

    def forward(self, x, lengths):
        """Return ``x (B, M, D)`` unchanged, no codes and a zero loss."""
        self._check(x)
        return QuantizerOutput(quantized=x, codes=None, loss=x.new_zeros(()), metrics={})

    def encode(self, x, lengths):
        """No codes: always ``None``."""
        self._check(x)
        return None

    def decode(self, codes):
        raise ConfigError(
            "The identity quantizer (no-VQ ablation) produces no codes, so there is "
            "nothing to decode. Use the continuous vectors from forward() directly, or "
            "train with quantizer_name: rvq to get discrete codes."
        )
