"""``frames`` aggregator: the encoder-only ablation (no aggregation, ~50 Hz).

Passes one encoder tap through unchanged, so the unit decoder sees every encoder
frame (the paper's "Encoder only" and "Encoder (last layer only)" rows). The
decoder must then use ``fusion: concat``, since frames do not align with text.
"""

from taste_toolkit.errors import ConfigError
from taste_toolkit.interfaces import Aggregator, AggregatorOutput
from taste_toolkit.registry import register


@register("aggregator", "frames")
class FramesAggregator(Aggregator):
    """Encoder frames as they are (keys or values tap).

    Arguments
    ---------
    key_dim, value_dim : int
        Feature sizes of the encoder taps (wired from the encoder).
    tap : str
        ``"values"`` (shallow layer) or ``"keys"`` (last layer).
    """

    output_level = "frame"

    def __init__(self, key_dim: int, value_dim: int, tap: str = "values"):
        super().__init__()
        if tap not in ("values", "keys"):
            raise ConfigError(f"frames aggregator tap must be 'values' or 'keys', got {tap!r}.")
        self.tap, self.key_dim, self.value_dim = tap, key_dim, value_dim

    @property
    def output_dim(self):
        return self.value_dim if self.tap == "values" else self.key_dim

    def forward(self, tokens, token_lengths, word_ids, encoder_out, need_weights=False):
        x = encoder_out.values if self.tap == "values" else encoder_out.keys
        return AggregatorOutput(x, encoder_out.lengths, "frame", None)
