"""``none`` speaker plugin: no speaker vector (the decoder gets no speaker prefix)."""

from taste_toolkit.interfaces import Speaker
from taste_toolkit.registry import register


@register("speaker", "none")
class NoSpeaker(Speaker):
    """No speaker conditioning (embedding_dim 0)."""

    def __init__(self):
        super().__init__()
