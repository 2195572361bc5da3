"""Embedded default corpus: multi-speaker synthetic speech (English, or es/de/fr/cmn) in LibriSpeech layout.

Nothing can be downloaded here, so the toolkit's default data is synthesized
with espeak-ng (through :mod:`taste_toolkit.data.espeak`): distinct voices play
the speakers, sentences come from a small template grammar, and single words get
*recorded* prosody labels (slow / fast / high / low / soft / emphasis / pause)
through SSML, so there is word-level information that the text does not carry.

Layout written (identical to LibriSpeech, so the LibriSpeech preparation reads it)::

    root/<split>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac    16 kHz 16-bit mono
    root/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt     "ID TRANSCRIPT" lines
    root/<split>/metadata.jsonl    words, prosody labels, word times (s), duration
    root/.corpus_done.json         options + summary; makes generation idempotent

Other languages (``language="es"``, ``"de"``, ``"fr"``, ``"cmn"``) draw sentences from
the template grammars of :mod:`taste_toolkit.data.corpus_languages` and speak them with
that language's espeak-ng voices; transcripts keep the templates' spelling (English
is upper case, as LibriSpeech), and the metadata is the same.

Run ``python -m taste_toolkit.data.synthetic_corpus --root DIR [--language es]``.
"""

import argparse
import json
import multiprocessing
import os
import re
import shutil
import time

import numpy as np

from taste_toolkit.data import corpus_languages
from taste_toolkit.data.espeak import get_synthesizer
from taste_toolkit.errors import ConfigError, DataPreparationError

#: Bump when the grammar, voices or signal processing change: invalidates old corpora.
CORPUS_VERSION = 1
SAMPLE_RATE = 16000
DONE_FILE = ".corpus_done.json"
PROGRESS_FILE = ".corpus_in_progress.json"

#: (voice file name, gender, base pitch 0-99, rate wpm), most intelligible first
#: (Whisper tiny.en per-voice WER, offline-resources.md); the Scottish voice is left out.
SPEAKER_VOICES = [
    ("en-us+m1", "M", 42, 165), ("en-us+f2", "F", 55, 160),
    ("en+m7", "M", 40, 170), ("en+f3", "F", 60, 155),
    ("en-gb-x-rp+m3", "M", 48, 160), ("en-gb-x-rp+f2", "F", 58, 150),
    ("en-us+m3", "M", 35, 175), ("en+f4", "F", 62, 165),
    ("en-us+m4", "M", 50, 155), ("en-us+f1", "F", 52, 170),
    ("en+m1", "M", 45, 150), ("en-gb-x-rp+f4", "F", 50, 160),
]

#: label -> (SSML opening tag, closing tag) wrapped around a single word.
PROSODY_MARKUP = {
    "slow": ('<prosody rate="55%">', "</prosody>"),
    "fast": ('<prosody rate="170%">', "</prosody>"),
    "high": ('<prosody pitch="+60%">', "</prosody>"),
    "low": ('<prosody pitch="-40%">', "</prosody>"),
    "soft": ('<prosody volume="x-soft">', "</prosody>"),
    "emphasis": ('<emphasis level="strong">', "</emphasis>"),
    "pause": ("", '<break time="250ms"/>'),
}
PROSODY_LABELS = tuple(PROSODY_MARKUP)

# Template grammar vocabulary (~240 words). Verbs are past tense so no agreement is needed;
# long words (photographer, refrigerator, ...) make sub-word tokenizers split.
_PEOPLE = """man woman child teacher doctor farmer student painter baker driver sailor
    singer writer neighbor soldier nurse pilot gardener musician photographer scientist
    professor librarian carpenter engineer traveler manager president grandmother visitor""".split()
_ANIMALS = "dog cat horse bird rabbit elephant tiger monkey kitten donkey squirrel butterfly".split()
_THINGS = """book letter basket box apple bottle chair table lamp ticket camera umbrella
    blanket window picture newspaper sandwich guitar bicycle computer telephone envelope
    package diamond potato tomato banana violin hammer ladder mirror pencil jacket
    candle kettle wallet suitcase bucket refrigerator calendar""".split()
_PLACES = """house garden river kitchen station market library hospital mountain village
    forest bridge office theater museum restaurant harbor island valley corridor
    factory hotel cottage tunnel palace basement""".split()
_NAMES = "john mary peter susan william emily robert helen daniel sarah thomas olivia".split()
_ADJECTIVES = """big small old young red green blue yellow happy quiet heavy bright dark
    tall short warm cold busy little golden wooden beautiful careful wonderful
    comfortable expensive dangerous enormous ordinary curious famous gentle clever
    patient nervous elegant ancient modern""".split()
_VERBS_TRANSITIVE = """found carried opened painted bought watched followed cleaned visited
    borrowed repaired noticed dropped collected delivered discovered remembered
    described photographed organized protected admired examined wrapped lifted
    pushed pulled washed""".split()
_VERBS_INTRANSITIVE = """waited slept arrived danced walked smiled listened traveled worked
    rested laughed wandered stopped disappeared""".split()
_ADVERBS = "quickly slowly quietly carefully happily suddenly yesterday again together finally".split()
# No "in": espeak-ng fuses "in the" into one WORD event, losing the time stamp of "the".
_PREPOSITIONS = """near behind under beside across inside outside through toward
    above below around beyond""".split()
_PRONOUNS = "he she they we".split()
VOCABULARY = sorted(set(
    _PEOPLE + _ANIMALS + _THINGS + _PLACES + _NAMES + _ADJECTIVES + _VERBS_TRANSITIVE
    + _VERBS_INTRANSITIVE + _ADVERBS + _PREPOSITIONS + _PRONOUNS
    + "the a an this that my his her their our".split()
))
_MIN_WORDS, _MAX_WORDS = 4, 16

#: Utterance-length mixes the generator can draw (``durations`` option).
#: ``embedded``: one grammar sentence per utterance (4-16 words, ~2-8 s), the default.
#: ``librispeech-train-clean-100``: a target length per utterance drawn from
#: :func:`librispeech_durations`, filled with grammar sentences up to that many seconds
#: of speech at the speaker's rate (then cut at a word), so batching can be studied on
#: the length mix of a real training set.
DURATION_DISTRIBUTIONS = ("embedded", "librispeech-train-clean-100")
#: Mixture approximating LibriSpeech train-clean-100 utterance durations (s). Sources:
#: 100.6 h in 28,539 utterances (Panayotov et al., "LibriSpeech: an ASR corpus based on
#: public domain audio books", ICASSP 2015, table 1, and the corpus' utterance count)
#: give a mean of 12.69 s; the corpus' utterances span ~1.3-24.5 s with most between
#: 10 and 16 s (segments were cut at pauses to at most 35 s, which clean-100 never
#: approaches). Approximation: 80% a normal(14.2, 1.9) body, 20% a uniform(1.3, 12.0)
#: short tail, truncated to [1.3, 24.5]: mean 12.7 s, median 13.6 s, ~69% in 10-16 s,
#: 5th/95th percentiles 4.0/17.1 s (100k draws; the body's tail rarely passes 22 s). The
#: generator's real durations follow the targets to within a few percent (the
#: speakers' nominal words per minute hold for espeak-ng); the metadata keeps both.
LIBRISPEECH_DURATIONS = dict(body_weight=0.8, body_mean=14.2, body_std=1.9, tail_low=1.3, tail_high=12.0,
                             low=1.3, high=24.5)


def librispeech_durations(rng, count):
    """``count`` utterance durations (s) from the LibriSpeech train-clean-100 approximation.

    Example
    -------
    >>> d = librispeech_durations(np.random.default_rng(0), 20000)
    >>> bool(12.4 < d.mean() < 13.0), bool(d.min() >= 1.3), bool(d.max() <= 24.5)
    (True, True, True)
    """
    p = LIBRISPEECH_DURATIONS
    body = rng.random(count) < p["body_weight"]
    out = np.where(body, rng.normal(p["body_mean"], p["body_std"], count),
                   rng.uniform(p["tail_low"], p["tail_high"], count))
    return np.clip(out, p["low"], p["high"])


def _words_for_duration(rng, seconds, rate_wpm, sentence=None):
    """Grammar sentences joined until ``seconds`` of speech at ``rate_wpm``, cut at a word (>= 2 words).

    ``sentence(rng)`` draws one sentence (default: the English :func:`make_sentence`).
    """
    sentence = sentence or make_sentence
    target = max(2, int(round(seconds * rate_wpm / 60.0)))
    words = []
    while len(words) < target:
        words += sentence(rng)
    return words[:target]


def _choice(rng, items):
    return items[int(rng.integers(len(items)))]


def _noun_phrase(rng, nouns, allow_name=False):
    if allow_name and rng.random() < 0.2:
        return [_choice(rng, _NAMES)]
    words = [_choice(rng, _ADJECTIVES)] if rng.random() < 0.5 else []
    words.append(_choice(rng, nouns))
    det = _choice(rng, ["the", "the", "a", "this", "that", "my", "his", "her", "their", "our"])
    if det == "a" and words[0][0] in "aeiou":  # vocabulary has no "university"-like words
        det = "an"
    return [det] + words


def make_sentence(rng):
    """Draw one sentence (list of lower-case words, 4-16 long) from the grammar."""
    while True:
        if rng.random() < 0.15:
            words = [_choice(rng, _PRONOUNS)]
        else:
            words = _noun_phrase(rng, _PEOPLE + _ANIMALS, allow_name=True)
        if rng.random() < 0.7:
            words += [_choice(rng, _VERBS_TRANSITIVE)] + _noun_phrase(rng, _THINGS + _ANIMALS)
        else:
            words.append(_choice(rng, _VERBS_INTRANSITIVE))
        for _ in range(int(rng.integers(1, 4))):  # 1-3 prepositional phrases
            words += [_choice(rng, _PREPOSITIONS)] + _noun_phrase(rng, _PLACES + _THINGS)
        if rng.random() < 0.2:
            words.append(_choice(rng, _ADVERBS))
        if _MIN_WORDS <= len(words) <= _MAX_WORDS:  # redraw rather than truncate
            return words


def build_ssml(words, labels, ending="."):
    """SSML for ``words`` with one optional prosody label per word.

    ``ending`` closes the text: ``"."`` (sentence-final intonation, the corpus) or
    ``","`` (a clause that goes on: the first half of a spliced utterance).

    Returns
    -------
    ssml : str
        The ``<speak>...</speak>`` document.
    positions : list of int
        1-based character position of each word in ``ssml``; libespeak-ng reports the
        same position in its WORD events, which is how events are matched to words.
    """
    if len(words) != len(labels):
        raise ConfigError(f"{len(words)} words but {len(labels)} prosody labels.")
    parts, positions, cursor = ["<speak>"], [], len("<speak>")
    for i, (word, label) in enumerate(zip(words, labels)):
        if label is not None and label not in PROSODY_MARKUP:
            raise ConfigError(f"Unknown prosody label {label!r}; choose from {PROSODY_LABELS}.")
        opening, closing = PROSODY_MARKUP[label] if label else ("", "")
        piece = ("" if i == 0 else " ") + opening
        positions.append(cursor + len(piece) + 1)
        piece += word + closing
        parts.append(piece)
        cursor += len(piece)
    if ending not in (".", ","):
        raise ConfigError(f"ending must be '.' or ',', got {ending!r}.")
    parts.append(ending + "</speak>")  # ".": sentence-final intonation; ",": the clause goes on
    return "".join(parts), positions


def _speech_end(audio, frame=160, threshold_db=-40.0):
    """End (s) of the last 10 ms frame whose RMS is within ``threshold_db`` of the loudest."""
    n = len(audio) // frame
    if n == 0:
        return len(audio) / SAMPLE_RATE
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(rms >= rms.max() * 10 ** (threshold_db / 20))[0]
    return (int(loud[-1]) + 1) * frame / SAMPLE_RATE


def synthesize_utterance(words, labels, voice, rate_wpm, pitch, ending="."):
    """Synthesize one sentence (``ending``: see :func:`build_ssml`) and time its words.

    Returns
    -------
    audio : numpy.ndarray
        int16 ``(T,)`` at 16 kHz.
    word_start, word_end : list of float
        Seconds; a word ends where the next starts, the last where speech ends.
    """
    from scipy.signal import resample_poly

    ssml, positions = build_ssml(words, labels, ending)
    raw, rate, starts, event_pos = get_synthesizer().synthesize(
        ssml, voice, rate_wpm, pitch, return_positions=True)
    by_position = {}
    for pos, start in zip(event_pos, starts):
        by_position.setdefault(pos, start)  # a word split into two events keeps its first
    missing = [w for w, p in zip(words, positions) if p not in by_position]
    if missing:
        raise DataPreparationError(
            f"espeak-ng reported no WORD event for {missing} in {ssml!r} (voice {voice}); "
            "remove such words from the grammar vocabulary.")
    word_start = [by_position[p] / rate for p in positions]
    # 22050 -> 16000 Hz; polyphase overshoot can exceed int16 on loud (emphasized) words.
    audio = resample_poly(raw.astype(np.float64), 320, 441) if rate == 22050 else \
        resample_poly(raw.astype(np.float64), SAMPLE_RATE, rate)
    audio = np.clip(np.round(audio), -32768, 32767).astype(np.int16)
    duration = len(audio) / SAMPLE_RATE
    last_end = max(_speech_end(audio.astype(np.float64) / 32768.0), word_start[-1] + 0.01)
    word_end = word_start[1:] + [min(last_end, duration)]
    return audio, word_start, word_end


def _write_atomic(path, write):
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    write(tmp)
    os.replace(tmp, path)


def _write_text(path, text):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    _write_atomic(path, write)


def _render(job):
    """Worker task: synthesize one planned utterance, write its FLAC, return metadata."""
    import soundfile as sf

    audio, start, end = synthesize_utterance(
        job["words"], job["prosody"], job["voice"], job["rate"], job["pitch"])
    flac = os.path.join(job["root"], job["audio"])
    _write_atomic(flac, lambda tmp: sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16",
                                             format="FLAC"))
    record = {k: job[k] for k in ("id", "speaker", "chapter", "voice", "audio", "text",
                                  "words", "prosody")}
    record.update(word_start=[round(t, 5) for t in start], word_end=[round(t, 5) for t in end],
                  duration=round(len(audio) / SAMPLE_RATE, 5))
    if "target_duration" in job:
        record["target_duration"] = job["target_duration"]
    return record


def _language_tables(language):
    """``(voice table, sentence(rng) -> words, words -> transcript)`` of a corpus language."""
    if language == "en":  # the original English path, unchanged
        return SPEAKER_VOICES, make_sentence, lambda words: " ".join(words).upper()
    return (corpus_languages.speaker_voices(language),
            lambda rng: corpus_languages.make_sentence_in(rng, language), " ".join)


def _plan(root, options):
    """All utterances (text, labels, paths) drawn from one seeded RNG, before any synthesis."""
    voices, sentence, transcript = _language_tables(options.get("language", "en"))
    rng = np.random.default_rng(options["seed"])
    p = options["prosody_probability"]
    durations = options.get("durations", "embedded")
    # A second stream for the target lengths, so the default mix draws exactly as before.
    length_rng = np.random.default_rng([options["seed"], 1])
    jobs = []
    for split_index, (split, count) in enumerate(options["utterances_per_split"].items()):
        for spk_index in range(options["num_speakers"]):
            voice, _, pitch, rate = voices[spk_index]
            spk, chapter = 1001 + spk_index, 100 * (split_index + 1) + spk_index
            for utt in range(count):
                target = None
                if durations == "embedded":
                    words = sentence(rng)
                else:
                    target = float(librispeech_durations(length_rng, 1)[0])
                    words = _words_for_duration(rng, target, rate, sentence)
                draw = rng.random(len(words))
                kinds = rng.integers(len(PROSODY_LABELS), size=len(words))
                labels = [PROSODY_LABELS[k] if d < p else None for d, k in zip(draw, kinds)]
                uid = f"{spk}-{chapter}-{utt:04d}"
                text = transcript(words)
                jobs.append(dict(
                    root=root, split=split, id=uid, speaker=spk, chapter=chapter, voice=voice,
                    rate=rate, pitch=pitch, words=text.split(), text=text, prosody=labels,
                    audio=f"{split}/{spk}/{chapter}/{uid}.flac"))
                if target is not None:
                    jobs[-1]["target_duration"] = round(target, 3)
    return jobs


def _check_options(num_speakers, utterances_per_split, prosody_probability, num_workers, durations="embedded",
                   language="en"):
    if durations not in DURATION_DISTRIBUTIONS:
        raise ConfigError(f"durations must be one of {DURATION_DISTRIBUTIONS}, got {durations!r}.")
    voices = _language_tables(language)[0]
    if not 1 <= num_speakers <= len(voices):
        raise ConfigError(f"num_speakers must be 1..{len(voices)} for language {language!r}, got {num_speakers}.")
    if not utterances_per_split:
        raise ConfigError("utterances_per_split is empty; give e.g. {'train': 60}.")
    for split, count in utterances_per_split.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", str(split)) or split.startswith("."):
            raise ConfigError(f"Split name {split!r} must be letters, digits, '-' or '_'.")
        if not isinstance(count, int) or not 1 <= count <= 9999:
            raise ConfigError(f"Utterances per speaker for {split!r} must be 1..9999, got {count!r}.")
    if not 0.0 <= prosody_probability <= 1.0:
        raise ConfigError(f"prosody_probability must be in [0, 1], got {prosody_probability}.")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0 (0 = in this process), got {num_workers}.")


def _remove_previous(root):
    """Delete split folders a previous (finished or interrupted) run of ours created."""
    for name in (DONE_FILE, PROGRESS_FILE):
        path = os.path.join(root, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                splits = json.load(f)["options"]["utterances_per_split"]
            for split in splits:
                shutil.rmtree(os.path.join(root, split), ignore_errors=True)
            os.remove(path)


def generate_corpus(root, seed=1234, num_speakers=8, utterances_per_split=None,
                    num_workers=2, prosody_probability=0.3, progress=True, durations="embedded",
                    language="en"):
    """Generate (or reuse) the synthetic corpus under ``root``.

    Parameters
    ----------
    root : str or path
        Output folder.
    seed : int
        Seeds transcripts and prosody labels; audio is sample-identical for a seed.
    num_speakers : int
        Number of voices (1-12; 1001, 1002, ... in order of intelligibility).
    utterances_per_split : dict of str to int
        Utterances PER SPEAKER per split; default ``{"train": 60, "dev": 5, "test": 5}``.
    num_workers : int
        Synthesis processes; 0 synthesizes in this process.
    prosody_probability : float
        Probability that a word gets one prosody label.
    progress : bool
        Show a tqdm progress bar.
    durations : str
        Utterance-length mix (:data:`DURATION_DISTRIBUTIONS`): ``"embedded"`` (one
        sentence each, ~2-8 s) or ``"librispeech-train-clean-100"`` (lengths drawn
        from :func:`librispeech_durations`, ~1.3-24.5 s, mean ~12.7 s).
    language : str
        ``"en"`` (default), ``"es"``, ``"de"``, ``"fr"`` (or ``"fr-fr"``) or ``"cmn"``
        (or ``"zh"``); see :mod:`taste_toolkit.data.corpus_languages`. An unknown
        code is a :class:`~taste_toolkit.errors.ConfigError` listing the available ones.

    Returns
    -------
    dict
        Summary: options, per-split utterance counts and hours, total hours,
        seconds taken, speakers (id, voice, gender, pitch, rate).
    """
    from tqdm import tqdm

    if utterances_per_split is None:
        utterances_per_split = {"train": 60, "dev": 5, "test": 5}
    language = corpus_languages.canonical_language(language)
    _check_options(num_speakers, utterances_per_split, prosody_probability, num_workers, durations, language)
    root = os.path.abspath(os.fspath(root))
    options = dict(version=CORPUS_VERSION, seed=int(seed), num_speakers=int(num_speakers),
                   utterances_per_split=dict(utterances_per_split),
                   prosody_probability=float(prosody_probability))
    if durations != "embedded":  # only then, so corpora made before the option stay valid
        options["durations"] = durations
    if language != "en":  # likewise: English corpora keep their options (and .corpus_done.json)
        options["language"] = language
    done_path = os.path.join(root, DONE_FILE)
    if os.path.exists(done_path):
        with open(done_path, encoding="utf-8") as f:
            done = json.load(f)
        if done.get("options") == options:
            return done["summary"]
    os.makedirs(root, exist_ok=True)
    _remove_previous(root)
    for split in utterances_per_split:
        if os.path.exists(os.path.join(root, split)):
            raise DataPreparationError(
                f"{os.path.join(root, split)} exists but was not made by this generator; "
                "choose an empty --root or remove that folder.")
    _write_text(os.path.join(root, PROGRESS_FILE), json.dumps({"options": options}))
    started = time.time()
    jobs = _plan(root, options)
    for folder in {os.path.dirname(os.path.join(root, job["audio"])) for job in jobs}:
        os.makedirs(folder, exist_ok=True)
    get_synthesizer()  # fail early (MissingResourceError) before starting workers
    bar = tqdm(total=len(jobs), desc="espeak corpus", unit="utt", disable=not progress)
    records = {}
    # spawn: the library has process-global state and the caller may have threads.
    pool = multiprocessing.get_context("spawn").Pool(num_workers) if num_workers else None
    results = pool.imap_unordered(_render, jobs, chunksize=4) if pool else map(_render, jobs)
    try:
        for record in results:
            records[record["id"]] = record
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    splits = {}
    for split in utterances_per_split:
        split_jobs = [j for j in jobs if j["split"] == split]
        by_chapter = {}
        for job in split_jobs:
            by_chapter.setdefault((job["speaker"], job["chapter"]), []).append(records[job["id"]])
        for (spk, chapter), recs in by_chapter.items():
            lines = "".join(f"{r['id']} {r['text']}\n" for r in recs)
            _write_text(os.path.join(root, split, str(spk), str(chapter),
                                     f"{spk}-{chapter}.trans.txt"), lines)
        _write_text(os.path.join(root, split, "metadata.jsonl"),
                    "".join(json.dumps(records[j["id"]]) + "\n" for j in split_jobs))
        seconds = sum(records[j["id"]]["duration"] for j in split_jobs)
        splits[split] = {"utterances": len(split_jobs), "hours": round(seconds / 3600, 4)}
    summary = {
        "root": root, "options": options, "splits": splits,
        "total_utterances": len(jobs),
        "total_hours": round(sum(s["hours"] for s in splits.values()), 4),
        "seconds_taken": round(time.time() - started, 2),
        "speakers": [dict(id=1001 + i, voice=v, gender=g, pitch=p, rate=r)
                     for i, (v, g, p, r) in enumerate(_language_tables(language)[0][:num_speakers])],
    }
    _write_text(done_path, json.dumps({"options": options, "summary": summary}, indent=1))
    os.remove(os.path.join(root, PROGRESS_FILE))
    return summary


def main(argv=None):
    """Command-line entry: ``python -m taste_toolkit.data.synthetic_corpus --root DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--num-speakers", type=int, default=8)
    parser.add_argument("--train", type=int, default=60, help="train utterances per speaker")
    parser.add_argument("--dev", type=int, default=5, help="dev utterances per speaker")
    parser.add_argument("--test", type=int, default=5, help="test utterances per speaker")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--prosody-probability", type=float, default=0.3)
    parser.add_argument("--durations", default="embedded", choices=DURATION_DISTRIBUTIONS,
                        help="utterance-length mix (default: embedded, one sentence each)")
    parser.add_argument("--language", default="en",
                        help=f"corpus language, one of {corpus_languages.available_languages()} (default: en)")
    args = parser.parse_args(argv)
    summary = generate_corpus(
        args.root, seed=args.seed, num_speakers=args.num_speakers,
        utterances_per_split={"train": args.train, "dev": args.dev, "test": args.test},
        num_workers=args.workers, prosody_probability=args.prosody_probability, durations=args.durations,
        language=args.language)
    print(json.dumps({k: v for k, v in summary.items() if k != "speakers"}, indent=1))
    return summary


if __name__ == "__main__":
    main()
