"""``none`` aggregator: the text-only ablation (no speech tokens at all).

The model skips the encoder when the aggregator does not need audio, so this
ablation costs nothing on the speech side.
"""

from taste_toolkit.interfaces import Aggregator
from taste_toolkit.registry import register


@register("aggregator", "none")
class NoAggregator(Aggregator):
    """Text only: produces no speech embeddings (``output_dim`` 0)."""

    needs_audio = False

    def __init__(self):
        super().__init__()

    @property
    def output_dim(self):
        return 0

    def forward(self, tokens, token_lengths, word_ids, encoder_out=None, need_weights=False):
        return None
