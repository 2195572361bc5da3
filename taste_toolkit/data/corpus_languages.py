"""Languages of the embedded corpus: espeak-ng voices and template grammars.

English keeps its own grammar (:func:`taste_toolkit.data.synthetic_corpus.make_sentence`)
and voice table, so the default corpus is byte-identical to the one made before
languages existed. Every other language is a template grammar shipped in
``taste_toolkit/data/sentences/<code>.txt`` (written for this repository, nothing is
downloaded) plus a table of espeak-ng voices.

Template format (see the files)::

    [sentence]                      top-level templates, one per line
    {SUBJ} {VT} {OBJ} {PLACE}
    [SUBJ]                          a slot: one alternative per line
    el {PM} {AM}                    "{NAME}" expands a slot, recursively

Words are separated by single spaces; each one becomes a word of the transcript
with its own time stamp (for Mandarin, multi-character words are written
separated by spaces, so the transcripts keep these spaces).

The voice names are espeak-ng voice files plus a variant (``es+m1``); French uses
the voice file ``fr`` (language ``fr-fr``). The language registry of the toolkit
(``taste_toolkit.languages``, when present) describes text processing; the
voices of the corpus are kept here because only the corpus synthesizes speech.
"""

import functools
import os
import re

from taste_toolkit.errors import ConfigError, DataPreparationError

SENTENCE_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sentences")
#: Shortest and longest sentence drawn (words), as for the English grammar.
MIN_WORDS, MAX_WORDS = 4, 16
_SLOT = re.compile(r"\{([^{}\s]+)\}")


def _voices(language_voice, rates):
    """Eight speakers of one espeak-ng language: variants, genders, pitches, rates."""
    variants = [("m1", "M", 42), ("f2", "F", 55), ("m3", "M", 38), ("f3", "F", 60),
                ("m7", "M", 46), ("f4", "F", 58), ("m4", "M", 50), ("f1", "F", 52)]
    return [(f"{language_voice}+{v}", g, p, r) for (v, g, p), r in zip(variants, rates)]


#: code -> (espeak-ng voice table ``(voice, gender, pitch 0-99, rate wpm)``, template file or None).
#: Rates are in espeak-ng words per minute; Mandarin words are 1-3 syllables, so its
#: rates are higher to give a natural syllable rate.
LANGUAGES = {
    "en": (None, None),  # synthetic_corpus.SPEAKER_VOICES and its own grammar
    "es": (_voices("es", (165, 160, 170, 155, 160, 150, 175, 165)), "es.txt"),
    "de": (_voices("de", (160, 155, 165, 150, 160, 150, 170, 160)), "de.txt"),
    "fr": (_voices("fr", (165, 160, 170, 155, 160, 150, 175, 165)), "fr.txt"),
    "cmn": (_voices("cmn", (230, 220, 240, 215, 225, 210, 235, 225)), "cmn.txt"),
}
#: Other spellings accepted for a code (espeak-ng's and common ISO variants).
ALIASES = {"en-us": "en", "eng": "en", "spa": "es", "es-es": "es", "deu": "de", "ger": "de",
           "fr-fr": "fr", "fra": "fr", "fre": "fr", "zh": "cmn", "zh-cn": "cmn", "cmn-hans": "cmn"}


def available_languages():
    """Codes the embedded corpus can be generated in, e.g. ``['cmn', 'de', 'en', 'es', 'fr']``."""
    return sorted(LANGUAGES)


def canonical_language(code):
    """The corpus' code for ``code`` (``"fr-fr"`` -> ``"fr"``, ``"zh"`` -> ``"cmn"``).

    Raises
    ------
    ConfigError
        No voice and grammar for ``code``; the message lists the available ones.
    """
    key = str(code).strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in LANGUAGES:
        names = ", ".join(f"{c} ({', '.join(sorted(a for a, t in ALIASES.items() if t == c)) or '-'})"
                          for c in available_languages())
        raise ConfigError(
            f"The embedded corpus has no voice for language {code!r}. Available (with aliases): {names}. "
            "To add one, write taste_toolkit/data/sentences/<code>.txt and a voice table in "
            "taste_toolkit/data/corpus_languages.py (list espeak-ng voices with `espeak-ng --voices`).")
    return key


def speaker_voices(language):
    """Voice table ``[(voice, gender, pitch, rate), ...]`` of a non-English language."""
    voices, _ = LANGUAGES[canonical_language(language)]
    return voices


def parse_grammar(text, source="grammar"):
    """``{slot: [alternatives]}`` from template text; checks every ``{NAME}`` is defined.

    Examples
    --------
    >>> g = parse_grammar("[sentence]\\n{A} b\\n[A]\\nx\\ny z\\n")
    >>> g["sentence"], g["A"]
    (['{A} b'], ['x', 'y z'])
    """
    grammar, current = {}, None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = re.fullmatch(r"\[([^\[\]\s]+)\]", line)
        if header:
            current = header.group(1)
            if current in grammar:
                raise DataPreparationError(f"{source}:{number}: slot [{current}] is defined twice.")
            grammar[current] = []
        elif current is None:
            raise DataPreparationError(f"{source}:{number}: {line!r} comes before any [slot] header.")
        else:
            grammar[current].append(" ".join(line.split()))
    if not grammar.get("sentence"):
        raise DataPreparationError(f"{source} has no [sentence] templates.")
    for slot, alternatives in grammar.items():
        if not alternatives:
            raise DataPreparationError(f"{source}: slot [{slot}] has no alternatives.")
        for alt in alternatives:
            for name in _SLOT.findall(alt):
                if name not in grammar:
                    raise DataPreparationError(
                        f"{source}: [{slot}] uses {{{name}}}, which is not defined; add a [{name}] section.")
    return grammar


@functools.lru_cache(maxsize=None)
def load_grammar(language):
    """The parsed template grammar of ``language`` (cached)."""
    _, filename = LANGUAGES[canonical_language(language)]
    if filename is None:
        raise ConfigError("English uses synthetic_corpus.make_sentence, not a template file.")
    path = os.path.join(SENTENCE_FOLDER, filename)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise DataPreparationError(
            f"The sentence templates {path} cannot be read ({exc}); reinstall taste-toolkit "
            "(the .txt files are package data).") from exc
    return parse_grammar(text, source=path)


def _expand(rng, grammar, template, depth=0):
    if depth > 20:
        raise DataPreparationError(f"Template expansion too deep at {template!r}: a slot refers to itself.")

    def pick(match):
        alternatives = grammar[match.group(1)]
        return _expand(rng, grammar, alternatives[int(rng.integers(len(alternatives)))], depth + 1)

    return _SLOT.sub(pick, template)


def make_sentence_in(rng, language):
    """Draw one sentence (list of words, 4-16 long) from the template grammar of ``language``.

    Examples
    --------
    >>> import numpy as np
    >>> words = make_sentence_in(np.random.default_rng(0), "es")
    >>> 4 <= len(words) <= 16
    True
    """
    grammar = load_grammar(language)
    for _ in range(1000):
        words = _expand(rng, grammar, grammar["sentence"][int(rng.integers(len(grammar["sentence"])))]).split()
        if MIN_WORDS <= len(words) <= MAX_WORDS:  # redraw rather than truncate
            return words
    raise DataPreparationError(
        f"The {language} grammar gave no sentence of {MIN_WORDS}-{MAX_WORDS} words in 1000 draws; "
        "change its templates.")


def vocabulary(language):
    """Every word the grammar of ``language`` can produce (slot references expanded away)."""
    grammar = load_grammar(language)
    words = set()
    for alternatives in grammar.values():
        for alt in alternatives:
            words.update(w for w in alt.split() if not _SLOT.search(w))
    return sorted(words)
