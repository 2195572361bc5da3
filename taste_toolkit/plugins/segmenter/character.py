"""One word per character of unspaced scripts: the fallback segmenter when no dictionary segmenter fits."""

import unicodedata
from typing import List

from taste_toolkit.interfaces import WordSegmenter
from taste_toolkit.registry import register
from taste_toolkit.text_normalization import char_script

#: Scripts written without spaces between words: every character is a word.
UNSPACED_SCRIPTS = frozenset({"han", "hiragana", "katakana", "thai", "lao", "khmer", "myanmar", "tibetan"})


@register("segmenter", "character")
class CharacterSegmenter(WordSegmenter):
    """Every character of an unspaced script is a word; runs of other letters and digits stay whole.

    ``"我用iPhone 12打电话。"`` -> ``我 | 用 | iphone | 12 | 打 | 电 | 话。`` (with the
    ``han`` normalizer lower-casing first). Punctuation joins a neighbouring word
    (:meth:`~taste_toolkit.interfaces.WordSegmenter.attach_punctuation`).

    Arguments
    ---------
    split_all : bool
        One word per non-space character of *every* script (``"ok"`` -> ``o | k``),
        as a character-level scorer counts them.

    Example
    -------
    >>> CharacterSegmenter().segment("你好, world 42!")
    ['你', '好,', 'world', '42!']
    """

    def __init__(self, split_all: bool = False):
        self.split_all = split_all

    def segment(self, text: str) -> List[str]:
        tokens, run = [], ""
        for k, ch in enumerate(text):
            alone = self.split_all or char_script(ch) in UNSPACED_SCRIPTS
            if not alone and unicodedata.category(ch).startswith("P"):
                # Inside a run ("12.5", "don't") punctuation stays; elsewhere it stands alone.
                following = text[k + 1] if k + 1 < len(text) else " "
                alone = not (run and self._in_run(following))
            if ch.isspace() or alone:
                if run:
                    tokens.append(run)
                run = ""
                if alone and not ch.isspace():
                    tokens.append(ch)
            else:
                run += ch
        if run:
            tokens.append(run)
        return self.attach_punctuation(tokens)

    def _in_run(self, ch):
        """True for a character that continues a run of letters/digits (not space, punctuation, unspaced)."""
        return not (ch.isspace() or unicodedata.category(ch).startswith("P") or self.split_all
                    or char_script(ch) in UNSPACED_SCRIPTS)
