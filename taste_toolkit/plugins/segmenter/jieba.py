"""Mandarin word segmentation with jieba (``pip install "taste-toolkit[zh]"``)."""

import logging
import os
import warnings
from typing import List

from taste_toolkit.errors import ConfigError, MissingResourceError
from taste_toolkit.interfaces import WordSegmenter
from taste_toolkit.registry import register
from taste_toolkit.text_normalization import char_script


def _import_jieba():
    try:
        with warnings.catch_warnings():  # jieba imports pkg_resources, deprecated by setuptools
            warnings.simplefilter("ignore")
            import jieba
    except ImportError as exc:
        raise MissingResourceError(
            "The jieba segmenter (Mandarin words) needs the jieba package: run "
            "`pip install \"taste-toolkit[zh]\"` (or `pip install jieba`), or choose the "
            "per-character fallback with segmenter: character."
        ) from exc
    jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict..." on stderr
    return jieba


@register("segmenter", "jieba")
class JiebaSegmenter(WordSegmenter):
    """Dictionary + HMM Chinese word segmentation (jieba), deterministic.

    Latin words and numbers inside a Mandarin transcript stay whole
    (``"用iPhone打电话"`` -> ``用 | iphone | 打电话``); punctuation joins a
    neighbouring word (:meth:`~taste_toolkit.interfaces.WordSegmenter.attach_punctuation`).

    Arguments
    ---------
    hmm : bool
        Let jieba's HMM join characters its dictionary does not know into words.
    user_dictionary : str
        Optional jieba user dictionary file (``word [freq] [tag]`` per line).

    Example
    -------
    >>> JiebaSegmenter().segment("今天天气很好。")             # doctest: +SKIP
    ['今天天气', '很', '好。']
    """

    def __init__(self, hmm: bool = True, user_dictionary: str = ""):
        jieba = _import_jieba()
        self.hmm = hmm
        # A private tokenizer: no shared global state between segmenters.
        self._tokenizer = jieba.Tokenizer()
        if user_dictionary:
            if not os.path.isfile(user_dictionary):
                raise ConfigError(f"jieba user_dictionary {user_dictionary!r} is not a file.")
            self._tokenizer.load_userdict(user_dictionary)

    def segment(self, text: str) -> List[str]:
        tokens = []
        for han, chunk in _script_runs(text):
            if han:
                tokens.extend(t for t in self._tokenizer.lcut(chunk, HMM=self.hmm) if t.strip())
            else:  # jieba would split "qué" into "qu" + "é": other scripts keep their spaces' words
                tokens.extend(chunk.split())
        return self.attach_punctuation(tokens)


def _script_runs(text):
    """``[(is_han, chunk)]``: maximal runs of Han and of other text; digits, punctuation
    and spaces stay in the run they follow (a leading one joins the first run)."""
    runs = []
    for ch in text:
        script = char_script(ch)
        han = runs[-1][0] if (script == "common" and runs) else script == "han"
        if script == "common" and not runs:
            han = None
        if runs and (runs[-1][0] == han or runs[-1][0] is None):
            runs[-1] = (han if runs[-1][0] is None else runs[-1][0], runs[-1][1] + ch)
        else:
            runs.append((han, ch))
    return [(bool(h), c) for h, c in runs]
