"""Words delimited by whitespace, for scripts written with spaces (Latin, Cyrillic, Greek, ...)."""

from typing import List

from taste_toolkit.interfaces import WordSegmenter
from taste_toolkit.registry import register


@register("segmenter", "whitespace")
class WhitespaceSegmenter(WordSegmenter):
    """Whitespace-delimited words (Latin scripts); punctuation stays on its word.

    Arguments
    ---------
    attach_punctuation : bool
        Merge free-standing punctuation (``"wait - what"``: ``-``) into a
        neighbouring word. Off by default: the words are exactly what the
        spaces delimit, as in the corpus metadata and LibriSpeech transcripts
        (the historical English behaviour).

    Example
    -------
    >>> WhitespaceSegmenter().segment("¿qué tal? bien - gracias")
    ['¿qué', 'tal?', 'bien', '-', 'gracias']
    >>> WhitespaceSegmenter(attach_punctuation=True).segment("bien - gracias")
    ['bien-', 'gracias']
    """

    def __init__(self, attach_punctuation: bool = False):
        self.attach = attach_punctuation

    def segment(self, text: str) -> List[str]:
        words = text.split()
        return self.attach_punctuation(words) if self.attach else words
