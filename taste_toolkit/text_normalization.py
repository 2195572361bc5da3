"""Language-aware text normalization: Unicode forms, full-width forms, case, punctuation, scripts.

Two kinds of normalization, both keyed by a name that a language of
:mod:`taste_toolkit.languages` refers to:

* **Tokenization normalizers** (:data:`NORMALIZERS`) run before word
  segmentation and text tokenization. They keep punctuation (Whisper's text
  tokenizer sees it, and TASTE pools per word *with* its punctuation):

  - ``latin``: Unicode NFKC (full-width ``ＡＢ１２`` -> ``AB12``, ligatures
    split), CJK punctuation to its ASCII counterpart (``。`` -> ``.``), lower
    case (optional), whitespace collapsed. On plain ASCII English this equals the
    historical NFC + lower-case + split of the text tokenizers.
  - ``han``: the same for Chinese text; case only changes the Latin letters of
    a mixed transcript, since Han has no case.

* **Scoring normalizers** (:data:`SCORING_NORMALIZERS`) run before WER/CER:

  - ``whisper_english``: Whisper's ``EnglishTextNormalizer`` (numbers,
    contractions, spellings), see :func:`taste_toolkit.metrics.asr.normalize_text`;
  - ``basic``: Whisper's ``BasicTextNormalizer`` rules, language-neutral: NFKC,
    lower case, bracketed text removed, punctuation/symbols/marks -> space.

:func:`char_script` names the script of a character (``latin``, ``han``,
``cyrillic``, ..., ``common`` for digits, punctuation and symbols), which the
language layer uses to find text in a script the configured language does not use.
"""

import re
import unicodedata

from taste_toolkit.errors import ConfigError, InputError

#: CJK punctuation NFKC leaves alone, mapped to its ASCII (half-width) counterpart.
_CJK_PUNCTUATION = str.maketrans({
    "\u3002": ".",  # 。 ideographic full stop
    "\uff61": ".",  # ｡ half-width ideographic full stop
    "\u3001": ",",  # 、 ideographic comma
    "\uff64": ",",  # ､
    # Corner and angle brackets -> curly quotes, which keep opening/closing apart.
    "\u300c": "\u201c", "\u300d": "\u201d",  # 「」
    "\u300e": "\u201c", "\u300f": "\u201d",  # 『』
    "\u300a": "\u201c", "\u300b": "\u201d",  # 《》
    "\u3008": "\u201c", "\u3009": "\u201d",  # 〈〉
    "\u3010": "[", "\u3011": "]",  # 【】
    "\u3014": "(", "\u3015": ")",  # 〔〕
    "\u301c": "~",  # 〜 wave dash
    "\u30fb": "\u00b7",  # ・ katakana middle dot -> middle dot
})

_SPACES = re.compile(r"\s+")


def unicode_normalize(text):
    """NFKC + CJK punctuation to ASCII + whitespace collapsed (no case change).

    Parameters
    ----------
    text : str

    Returns
    -------
    str
        ``"Ｈｅｌｌｏ，　世界。１２３"`` -> ``"Hello, 世界.123"``.

    Raises
    ------
    InputError
        ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise InputError(f"A transcript must be a str, got {type(text).__name__}.")
    text = unicodedata.normalize("NFKC", text).translate(_CJK_PUNCTUATION)
    return _SPACES.sub(" ", text).strip()


def normalize_latin(text, lowercase=True):
    """Tokenization normalizer of Latin-script languages (see the module docstring)."""
    text = unicode_normalize(text)
    return text.lower() if lowercase else text


def normalize_han(text, lowercase=True):
    """Tokenization normalizer of Chinese: as ``latin``; Han characters have no case."""
    return normalize_latin(text, lowercase)


#: Tokenization normalizers by name: ``fn(text, lowercase=True) -> str``.
NORMALIZERS = {"latin": normalize_latin, "han": normalize_han}


def get_normalizer(name):
    """Tokenization normalizer ``name`` (a key of :data:`NORMALIZERS`).

    Raises
    ------
    ConfigError
        Unknown name; the message lists the available ones.
    """
    try:
        return NORMALIZERS[name]
    except KeyError:
        raise ConfigError(
            f"No text normalizer named {name!r}. Available normalizers: {', '.join(sorted(NORMALIZERS))}."
        ) from None


# ------------------------------------------------------------------ characters


def is_punctuation(ch):
    """True for Unicode punctuation (categories ``P*``), e.g. ``, . ! ? ' " - ...``."""
    return unicodedata.category(ch).startswith("P")


def is_punctuation_only(word):
    """True when ``word`` is non-empty and every character is punctuation or a space."""
    return bool(word) and all(is_punctuation(c) or c.isspace() for c in word)


def char_script(ch):
    """Script of one character: ``latin``, ``han``, ``cyrillic``, ``greek``, ..., or ``common``.

    Letters are named by the first word of their Unicode name (``CJK`` ->
    ``han``); digits, punctuation, symbols, marks and spaces are ``common``
    (they belong to every language).
    """
    if not unicodedata.category(ch).startswith("L"):
        return "common"
    if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\U00020000" <= ch <= "\U0003134f" or ch == "\u3007":
        return "han"
    name = unicodedata.name(ch, "")
    if not name:
        return "unknown"
    first = name.split()[0].lower()
    return "han" if first == "cjk" else first


# ------------------------------------------------------------------ scoring


_BRACKETS = re.compile(r"[<\[][^>\]]*[>\]]|\(([^)]+?)\)")


def basic_scoring_normalize(text):
    """Whisper's ``BasicTextNormalizer`` rules, language-neutral.

    NFKC, lower case, ``[...]``/``<...>``/``(...)`` removed, every mark, symbol
    and punctuation character replaced by a space, whitespace collapsed.

    ``"¡Hola, Señor!"`` -> ``"hola señor"``; ``"你好，世界。"`` -> ``"你好 世界"``.
    """
    if not isinstance(text, str):
        raise InputError(f"A transcript must be a str, got {type(text).__name__}.")
    text = _BRACKETS.sub(" ", unicodedata.normalize("NFKC", text).lower())
    text = "".join(" " if unicodedata.category(c)[0] in "MSP" else c for c in unicodedata.normalize("NFKC", text))
    return _SPACES.sub(" ", text).strip()


def _whisper_english(text):
    from taste_toolkit.metrics.asr import normalize_text

    return normalize_text(text)


#: Scoring normalizers by name: ``fn(text) -> str`` (lower-case, punctuation-free).
SCORING_NORMALIZERS = {"whisper_english": _whisper_english, "basic": basic_scoring_normalize}


def get_scoring_normalizer(name):
    """Scoring normalizer ``name`` (a key of :data:`SCORING_NORMALIZERS`).

    Raises
    ------
    ConfigError
        Unknown name; the message lists the available ones.
    """
    try:
        return SCORING_NORMALIZERS[name]
    except KeyError:
        raise ConfigError(
            f"No scoring normalizer named {name!r}. Available: {', '.join(sorted(SCORING_NORMALIZERS))}."
        ) from None
