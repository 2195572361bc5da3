"""``none`` speaker plugin: no speaker vector (the decoder gets no speaker prefix)."""

from taste_toolkit.interfaces import Speaker
from taste_toolkit.registry import register


@register("speaker", "none")
class NoSpeaker(Speaker):
    """No speaker conditioning (embedding_dim 0)."""

    def __init__(self):
        super().__init__()

    @property
    def embedding_dim(self) -> int:
        return 0

    def forward(self, wavs, wav_lengths):
        """No vector: the decoder gets no speaker prefix."""
        return None
