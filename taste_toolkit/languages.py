"""Languages as configuration: what every part of the toolkit needs to know about one language.

A language is a :class:`Language` record keyed by its ISO code (the top-level
``language`` key of the hparams, ``--language`` of ``taste make-corpus``):

========  =============  ===========  ===========  ==========  =============  =======
code      espeak voice   normalizer   segmenter    scoring     scoring norm.  spaces
========  =============  ===========  ===========  ==========  =============  =======
``en``    ``en-us``      latin        whitespace   WER (word)  whisper_english  yes
``es``    ``es``         latin        whitespace   WER (word)  basic          yes
``de``    ``de``         latin        whitespace   WER (word)  basic          yes
``fr``    ``fr-fr``      latin        whitespace   WER (word)  basic          yes
``cmn``   ``cmn``        han          jieba        CER (char)  basic          no
========  =============  ===========  ===========  ==========  =============  =======

``zh`` is accepted for ``cmn``. Another language is one call to
:func:`register_language` (from Python or a YAML ``!apply:``), plus a segmenter
plugin file when its script is not written with spaces (README, "Add a language").

:class:`WordSplitter` is the one path from a raw transcript to its words:
normalize -> check the script -> segment. Text tokenizers use it, so the word
id of every text token points at a word of the language's segmentation.
"""

import re
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.text_normalization import char_script, get_normalizer, is_punctuation_only

#: How text in a script the language does not use is handled (see :class:`WordSplitter`).
FOREIGN_SCRIPT_POLICIES = ("error", "keep", "drop")


@dataclass(frozen=True)
class Language:
    """Everything language-specific, by name.

    Attributes
    ----------
    code : str
        ISO 639 code (``en``, ``es``, ``cmn``).
    name : str
        English name, for messages.
    voice : str
        espeak-ng voice of the embedded corpus.
    whisper_language : str
        Whisper's language code (``zh`` for Mandarin): ASR and decoder prompts.
    normalizer : str
        Tokenization normalizer (:data:`taste_toolkit.text_normalization.NORMALIZERS`).
    segmenter : str
        Segmenter plugin (``taste plugins --kind segmenter``).
    segmenter_options : dict
        Its options.
    scoring_normalizer : str
        ASR scoring normalizer (:data:`taste_toolkit.text_normalization.SCORING_NORMALIZERS`).
    scoring_unit : str
        ``word`` (WER) or ``char`` (CER, for languages written without spaces).
    spaced : bool
        Written with spaces between words.
    scripts : frozenset of str
        Letter scripts of its text (:func:`~taste_toolkit.text_normalization.char_script`);
        letters of any other script are *foreign*.
    """

    code: str
    name: str
    voice: str
    whisper_language: str
    normalizer: str = "latin"
    segmenter: str = "whitespace"
    segmenter_options: Dict = field(default_factory=dict, hash=False, compare=False)
    scoring_normalizer: str = "basic"
    scoring_unit: str = "word"
    spaced: bool = True
    scripts: FrozenSet[str] = frozenset({"latin"})

    @property
    def scoring_metric(self):
        """``"WER"`` or ``"CER"``: the name of the error rate this language is scored with."""
        return "CER" if self.scoring_unit == "char" else "WER"


_LANGUAGES: Dict[str, Language] = {}
_ALIASES = {"zh": "cmn"}


def register_language(code, name=None, voice=None, whisper_language=None, override=False, **fields):
    """Add (or with ``override`` replace) a language; returns its :class:`Language`.

    Arguments are the fields of :class:`Language`; ``scripts`` may be a list.
    ``voice`` and ``whisper_language`` default to ``code``.

    Raises
    ------
    ConfigError
        Bad fields, unknown normalizer, bad scoring unit, or an existing code without ``override``.
    """
    if not isinstance(code, str) or not code or code != code.strip().lower():
        raise ConfigError(f"A language code must be a lower-case ISO code such as 'es', got {code!r}.")
    unknown = set(fields) - set(Language.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"Unknown language field(s) {sorted(unknown)}; fields are: "
                          f"{', '.join(Language.__dataclass_fields__)}.")
    if "scripts" in fields:
        fields["scripts"] = frozenset(fields["scripts"])
    lang = Language(code=code, name=name or code, voice=voice or code,
                    whisper_language=whisper_language or code, **fields)
    get_normalizer(lang.normalizer)  # fails with the list of normalizers
    if lang.scoring_unit not in ("word", "char"):
        raise ConfigError(f"scoring_unit of language {code!r} must be 'word' or 'char', got {lang.scoring_unit!r}.")
    existing = _LANGUAGES.get(code)
    if existing is not None and not override:
        if existing == lang and existing.segmenter_options == lang.segmenter_options:
            return existing  # the same YAML loaded twice
        raise ConfigError(f"Language {code!r} is already registered with other fields "
                          f"({existing}); pass override=True to replace it.")
    _LANGUAGES[code] = lang
    return lang


def load_language_file(path):
    """Register the language described by a YAML file; returns its :class:`Language`.

    The file holds the fields of :class:`Language` (plain YAML)::

        code: it
        name: Italian
        voice: it                 # espeak-ng voice
        whisper_language: it
        segmenter: whitespace     # or a segmenter plugin of your own (plugin_modules)
        scripts: [latin]

    List it in the hparams' ``plugin_modules`` (``[languages/it.yaml]``), which
    are loaded before anything is built.

    Raises
    ------
    ConfigError
        Missing or unreadable file, not a mapping, or bad fields.
    """
    import os

    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"Language file {path!r} not found (listed in plugin_modules).")
    try:
        with open(path, encoding="utf-8") as f:
            spec = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot read the language file {path}: {exc}") from exc
    if not isinstance(spec, dict) or "code" not in spec:
        raise ConfigError(f"Language file {path} must be a mapping with at least 'code' (and name, voice, "
                          f"segmenter, ...; fields: {', '.join(Language.__dataclass_fields__)}).")
    return register_language(**spec)


def available_languages():
    """Registered language codes, sorted."""
    return sorted(_LANGUAGES)


def get_language(code):
    """The :class:`Language` of ``code`` (a ``Language`` passes through).

    Raises
    ------
    ConfigError
        Unknown code; the message lists the available languages with their voices,
        normalizers and segmenters, and how to add one.
    """
    if isinstance(code, Language):
        return code
    key = _ALIASES.get(code, code) if isinstance(code, str) else code
    if key not in _LANGUAGES:
        table = "; ".join(f"{c} ({l.name}: voice {l.voice}, normalizer {l.normalizer}, segmenter {l.segmenter})"
                          for c, l in sorted(_LANGUAGES.items()))
        raise ConfigError(
            f"No language {code!r}: it has no voice, normalizer or segmenter here. Available languages: {table}. "
            "Add one with taste_toolkit.languages.register_language (README, 'Add a language')."
        )
    return _LANGUAGES[key]


def describe_languages():
    """Lines for ``taste plugins``: every language with its voice, normalizers, segmenter and metric."""
    lines = ["languages:"]
    for code in available_languages():
        lang = _LANGUAGES[code]
        options = f" {lang.segmenter_options}" if lang.segmenter_options else ""
        lines.append(f"  {code:<20} {lang.name}: voice {lang.voice}, normalizer {lang.normalizer}, "
                     f"segmenter {lang.segmenter}{options}, scoring {lang.scoring_metric} "
                     f"({lang.scoring_normalizer} normalizer), {'spaced' if lang.spaced else 'unspaced'}, "
                     f"scripts {', '.join(sorted(lang.scripts))}")
    return lines


for _spec in (
    dict(code="en", name="English", voice="en-us", whisper_language="en", scoring_normalizer="whisper_english"),
    dict(code="es", name="Spanish", voice="es", whisper_language="es"),
    dict(code="de", name="German", voice="de", whisper_language="de"),
    dict(code="fr", name="French", voice="fr-fr", whisper_language="fr"),
    dict(code="cmn", name="Mandarin Chinese", voice="cmn", whisper_language="zh", normalizer="han",
         segmenter="jieba", scoring_unit="char", spaced=False, scripts={"han", "latin"}),
):
    register_language(**_spec)


# ------------------------------------------------------------------ words


class WordSplitter:
    """Raw transcript -> words of a language: normalize, check the script, segment.

    Arguments
    ---------
    language : str or Language
        Language code (``en``, ``cmn``, ...).
    segmenter : str
        Segmenter plugin name; ``""`` = the language's own.
    segmenter_options : dict or None
        Its options; ``None`` = the language's when ``segmenter`` is its own.
    foreign_script : str
        Letters of a script the language does not use (Cyrillic in English, Han
        in Spanish): ``error`` (default) refuses the transcript, ``keep`` keeps
        them, ``drop`` removes them. Kept and dropped characters are counted
        in :attr:`counts` and logged, never dropped silently.
    lowercase : bool
        Lower-case (scripts with case only).

    Attributes
    ----------
    counts : dict
        ``transcripts``, ``foreign_transcripts``, ``foreign_characters``,
        ``dropped_characters``, ``dropped_words`` since construction.

    Example
    -------
    >>> WordSplitter("es").split("¡Hola, SEÑOR García!")
    ['¡hola,', 'señor', 'garcía!']
    """

    def __init__(self, language="en", segmenter="", segmenter_options=None, foreign_script="error", lowercase=True):
        from taste_toolkit.registry import build

        self.language = get_language(language)
        if foreign_script not in FOREIGN_SCRIPT_POLICIES:
            raise ConfigError(f"foreign_script must be one of {', '.join(FOREIGN_SCRIPT_POLICIES)}; "
                              f"got {foreign_script!r}.")
        self.foreign_script = foreign_script
        self.lowercase = lowercase
        self.normalize_text = get_normalizer(self.language.normalizer)
        name = segmenter or self.language.segmenter
        if segmenter_options is None:
            segmenter_options = self.language.segmenter_options if name == self.language.segmenter else {}
        self.segmenter = build("segmenter", name, dict(segmenter_options))
        self.counts = {"transcripts": 0, "foreign_transcripts": 0, "foreign_characters": 0,
                       "dropped_characters": 0, "dropped_words": 0}

    def normalize(self, text):
        """The language's normalization of ``text`` (no segmentation, no script check)."""
        return self.normalize_text(text, self.lowercase)

    def split(self, text) -> List[str]:
        """Words of ``text``.

        Raises
        ------
        InputError
            Empty transcript; punctuation only (no word to pool speech over);
            foreign-script letters with ``foreign_script: error``.
        """
        normalized = self.normalize(text)
        if not normalized:
            raise InputError(f"empty transcript {text!r}: give at least one word (check the data manifest).")
        self.counts["transcripts"] += 1
        normalized = self._check_script(text, normalized)
        words = self.segmenter.segment(normalized)
        if not words or all(is_punctuation_only(w) for w in words):
            raise InputError(
                f"Transcript {text!r} has no word for the {self.language.segmenter} segmenter ({self.language.name}): "
                "it is empty or punctuation only after normalization. Fix or remove it in the manifest."
            )
        return words

    def _check_script(self, raw, text):
        foreign = [c for c in text if char_script(c) not in self.language.scripts | {"common"}]
        if not foreign:
            return text
        import logging

        logger = logging.getLogger(__name__)
        self.counts["foreign_transcripts"] += 1
        self.counts["foreign_characters"] += len(foreign)
        shown = "".join(dict.fromkeys(foreign))[:20]
        scripts = ", ".join(sorted({char_script(c) for c in foreign}))
        if self.foreign_script == "error":
            raise InputError(
                f"Transcript {raw!r} has {len(foreign)} letter(s) in {scripts} script ({shown!r}), which "
                f"{self.language.name} ({self.language.code}, scripts: {', '.join(sorted(self.language.scripts))}) "
                "does not use. Fix the transcript, set the text tokenizer's foreign_script: keep (tokenize them "
                "as they are) or drop (remove them, counted), or choose the right language."
            )
        if self.foreign_script == "keep":
            logger.info("Keeping %d %s letter(s) %r in a %s transcript.", len(foreign), scripts, shown,
                        self.language.code)
            return text
        kept = "".join(" " if char_script(c) not in self.language.scripts | {"common"} else c for c in text)
        pieces = [kept[m.start():m.end()] for m in re.finditer(r"\S+", text)]  # same spans as text's words
        self.counts["dropped_characters"] += len(foreign)
        self.counts["dropped_words"] += sum(1 for p in pieces if not p.strip() or is_punctuation_only(p.strip()))
        logger.warning("Dropped %d %s letter(s) %r from %r (foreign_script: drop; %d dropped so far).",
                       len(foreign), scripts, shown, raw, self.counts["dropped_characters"])
        return " ".join(kept.split())


def word_splitter(language="", segmenter="", foreign_script="error", lowercase=True):
    """The :class:`WordSplitter` a text tokenizer uses, or ``None`` for the historical path.

    ``language=""`` (tokenizers saved before languages existed) keeps the
    historical English behaviour: NFC, lower case, whitespace words, no script
    check. Any language code routes tokenization through its normalizer and
    segmenter; ``segmenter`` overrides the language's (e.g. ``character``).

    Raises
    ------
    ConfigError
        ``segmenter`` without ``language``, an unknown language, segmenter or policy.
    """
    if not language:
        if segmenter:
            raise ConfigError(f"segmenter {segmenter!r} needs a language: set the text tokenizer's language "
                              f"(one of {', '.join(available_languages())}).")
        if foreign_script not in FOREIGN_SCRIPT_POLICIES:
            raise ConfigError(f"foreign_script must be one of {', '.join(FOREIGN_SCRIPT_POLICIES)}; "
                              f"got {foreign_script!r}.")
        return None
    return WordSplitter(language, segmenter=segmenter, foreign_script=foreign_script, lowercase=lowercase)
