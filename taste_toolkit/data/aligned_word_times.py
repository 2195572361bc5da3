"""Word times from the frozen Whisper aligner, for corpora that do not record them.

The ``word_pointer_transformer`` and ``duration_transformer`` decoders (and the ``oracle_spans`` ceiling) train
on the word of every unit. The embedded corpus writes each word's start in its
``metadata.jsonl``; LibriSpeech, the Asterisk real-voice split or any
ASR-transcribed data do not. This module forced-aligns them with what the
toolkit already has: the frozen Whisper decoder's alignment heads and DTW (the
``aligned_spans`` span finder, also the attention-supervision targets). A word
starts at the first frame of its first token on the DTW path.

Measured on the embedded corpus' test split, where both exist
(``recipes/librispeech/aligned_word_times_error.py``): 40 utterances, 431 word
starts, median error 0.076 s against the synthesizer's word times, 90th
percentile 0.133 s (one unit at 25 Hz is 0.04 s);
``tests/test_aligned_word_times.py`` asserts a median under 0.15 s.

The result is cached per split in ``<cache_dir>/<split>-<key>.json``; the key
covers the manifest (and its audio files' sizes and times), the tokenization of
every transcript and the aligner's Whisper, so a change to any of them
recomputes.
"""

import json
import logging
import os
import tempfile

import numpy as np
import torch
from tqdm import tqdm

from taste_toolkit.audio import load_audio
from taste_toolkit.data.manifest import read_manifest
from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.utils import atomic_write, stable_hash

logger = logging.getLogger(__name__)


def word_starts_from_spans(first, word_ids, frame_rate):
    """Start (seconds) of every word from its tokens' first frames.

    Arguments
    ---------
    first : numpy.ndarray
        ``(N,)`` first frame of each token on the DTW path.
    word_ids : sequence of int
        ``(N,)`` word of each token (0-based, every word has a token).
    frame_rate : float
        Encoder frames per second.

    Returns
    -------
    list of float
        One start per word, non-decreasing.

    >>> word_starts_from_spans(np.array([0, 3, 5, 9]), [0, 0, 1, 2], 50.0)
    [0.0, 0.1, 0.18]
    """
    word_ids = np.asarray(word_ids)
    num_words = int(word_ids.max()) + 1
    starts = np.full(num_words, np.inf)
    np.minimum.at(starts, word_ids, np.asarray(first, dtype=np.float64))
    if np.isinf(starts).any():
        raise InputError(f"Word(s) {np.flatnonzero(np.isinf(starts)).tolist()} have no token to align.")
    starts = np.maximum.accumulate(starts)  # DTW is monotonic; guard against ties across words
    return [round(float(s) / frame_rate, 4) for s in starts]


def build_aligner(vocab_size, key_dim, whisper_source, aligner_options=None):
    """The frozen Whisper span finder (an ``aligned_spans`` aggregator, only its aligner is used)."""
    if not whisper_source:
        raise ConfigError("Aligned word times need whisper_source (the aligner's Whisper decoder and "
                          "alignment heads), e.g. builtin:tiny.en.")
    from taste_toolkit.plugins.aggregator.aligned_spans import AlignedSpansAggregator

    return AlignedSpansAggregator(vocab_size, key_dim, key_dim, init_from_whisper=whisper_source,
                                  **dict(aligner_options or {})).eval()


def _cache_key(manifest, rows, tokenized, whisper_source):
    from taste_toolkit.data.unit_cache import _manifest_digest

    return stable_hash([_manifest_digest(manifest, rows), [t.ids for t in tokenized], whisper_source])


@torch.no_grad()
def aligned_word_starts(manifest, text_tokenizer, encoder, aligner, sample_rate=16000, cache_dir=None,
                        cache_name="split", whisper_source="", progress=True):
    """``{utterance ID: [word start seconds]}`` of a manifest, by forced alignment.

    Arguments
    ---------
    manifest : str
        SpeechBrain CSV with ``ID, wav, wrd``.
    text_tokenizer : TextTokenizer
        The recipe's tokenizer: its words are the words the decoder walks.
    encoder : Encoder
        The frozen encoder; its keys (last layer) drive the aligner.
    aligner : module
        Span finder with ``token_spans(tokens, token_lengths, word_ids, encoder_out)``
        (:func:`build_aligner`).
    sample_rate : int
        Rate the audio is read at.
    cache_dir : str, optional
        Where the result is cached (None: not cached).
    cache_name : str
        Prefix of the cache file (the split's name).
    whisper_source : str
        Part of the cache key (the aligner's identity).
    progress : bool
        tqdm bar.

    Returns
    -------
    dict
        Utterances with no words or no frames are left out, with a warning.
    """
    rows = read_manifest(manifest, columns=("ID", "wav", "wrd"))
    tokenized = [text_tokenizer.encode_words(r["wrd"]) for r in rows]
    path = None
    if cache_dir:
        path = os.path.join(cache_dir, f"{cache_name}-{_cache_key(manifest, rows, tokenized, whisper_source)}.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
    encoder.eval()
    starts, skipped = {}, []
    for row, text in tqdm(list(zip(rows, tokenized)), desc=f"aligning words ({cache_name})", disable=not progress):
        wav = load_audio(row["wav"], sample_rate)
        if not text.ids or wav.numel() == 0:
            skipped.append(row["ID"])
            continue
        enc = encoder(wav[None], torch.tensor([wav.numel()]))
        if int(enc.lengths[0]) == 0:
            skipped.append(row["ID"])
            continue
        tokens = torch.tensor([text.ids])
        word_ids = torch.tensor([text.word_ids])
        spans, _ = aligner.token_spans(tokens, torch.tensor([len(text.ids)]), word_ids, enc)
        starts[row["ID"]] = word_starts_from_spans(spans[0][0], text.word_ids, enc.frame_rate)
    if skipped:
        logger.warning("%s: %d utterance(s) without words or audio were not aligned (e.g. %s).",
                       manifest, len(skipped), skipped[:3])
    if path:
        with atomic_write(path) as f:
            json.dump(starts, f)
    return starts


def split_aligned_word_starts(manifests, text_tokenizer, encoder, whisper_source, vocab_size, cache_dir,
                              sample_rate=16000, aligner_options=None, progress=True):
    """``{split: {ID: word starts}}`` for every split of ``{split: manifest}`` (one aligner for all)."""
    aligner = build_aligner(vocab_size, encoder.key_dim, whisper_source, aligner_options)
    return {
        split: aligned_word_starts(path, text_tokenizer, encoder, aligner, sample_rate, cache_dir,
                                   cache_name=split, whisper_source=whisper_source, progress=progress)
        for split, path in manifests.items()
    }


WORD_TIME_SOURCES = ("auto", "metadata", "aligner")


def _metadata_word_starts(data_folder, split, rows):
    """The corpus' word times ``{ID: starts}`` of the utterances of ``rows`` that have them."""
    from taste_toolkit.data.word_alignment import read_word_starts

    starts = {}
    for part in split.split("+"):
        path = os.path.join(data_folder, part, "metadata.jsonl") if data_folder else ""
        if path and os.path.isfile(path):
            starts.update(read_word_starts(path))
    return {r["ID"]: starts[r["ID"]] for r in rows if r["ID"] in starts}


def split_word_starts_from(source, manifests, data_folder, text_tokenizer, encoder, whisper_source, vocab_size,
                           cache_dir, sample_rate=16000):
    """``{split: {ID: word starts}}`` from the corpus' metadata, the Whisper aligner, or either.

    Arguments
    ---------
    source : str
        ``"metadata"``: ``<data_folder>/<split>/metadata.jsonl`` (an error if missing);
        ``"aligner"``: :func:`split_aligned_word_starts` for every split;
        ``"auto"``: the metadata for every utterance that has it, the aligner for
        the others (all of LibriSpeech; the real-voice prompts merged into a
        training split); the choice is logged per split.
    manifests : dict
        ``{split: SpeechBrain CSV}``; a merged split is named ``"a+b"``.
    data_folder : str
        The corpus root holding the split folders.
    text_tokenizer, encoder, whisper_source, vocab_size, cache_dir, sample_rate
        As for :func:`split_aligned_word_starts`.
    """
    if source not in WORD_TIME_SOURCES:
        raise ConfigError(f"word_times must be one of {list(WORD_TIME_SOURCES)} ('metadata': the corpus' "
                          f"metadata.jsonl, 'aligner': forced alignment with the frozen Whisper), got {source!r}.")
    if source == "metadata":
        from taste_toolkit.data.word_alignment import split_word_starts

        return split_word_starts(data_folder, list(manifests))
    from taste_toolkit.data.manifest import write_manifest

    out, to_align, partial = {}, {}, {}
    for split, manifest in manifests.items():
        rows = read_manifest(manifest)
        known = _metadata_word_starts(data_folder, split, rows) if source == "auto" else {}
        missing = [r for r in rows if r["ID"] not in known]
        if not missing:
            out[split] = known
        elif known:
            # Partly covered (a corpus split merged with the real-voice prompts): the corpus' own
            # times where it has them, so training and its dev/test splits share one source;
            # the aligner for the rest only.
            folder = cache_dir or tempfile.mkdtemp(prefix="word_times_")
            os.makedirs(folder, exist_ok=True)
            rest = os.path.join(folder, f"{split}-without-metadata.csv")
            write_manifest(rest, missing)
            to_align[split], partial[split] = rest, known
            logger.info("Word times of %s: the corpus' metadata for %d utterances, the Whisper aligner for %d.",
                        split, len(known), len(missing))
        else:
            to_align[split] = manifest
    if to_align:
        logger.info("Word times from the Whisper aligner for %s%s.", sorted(to_align),
                    f" (the corpus' metadata covers {sorted(out)})" if out else "")
        aligned = split_aligned_word_starts(to_align, text_tokenizer, encoder, whisper_source, vocab_size,
                                            cache_dir, sample_rate)
        for split, starts in aligned.items():
            out[split] = {**partial.get(split, {}), **starts}
    return out
