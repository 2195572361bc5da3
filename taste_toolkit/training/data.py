"""Stage-1 data pipeline on SpeechBrain's DynamicItemDataset.

Each utterance provides: ``id``, ``duration``, ``sig`` (16 kHz mono float),
``tokens`` + ``word_ids`` (word-preserving text tokenization), ``units`` (decoder
targets, from the unit cache) and, with a speaker plugin, ``spk_emb``.

Utterances whose text and audio cannot match (e.g. 1 word for 20 s, or more
words per second than anyone speaks) are excluded before training, counted and
logged by reason.
"""

import logging
import os

import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from tqdm import tqdm

from taste_toolkit.audio import load_audio
from taste_toolkit.errors import InputError
from taste_toolkit.utils import stable_hash

logger = logging.getLogger(__name__)


def filter_mismatched(dataset, split, max_seconds_per_word=3.0, max_words_per_second=8.0, count_words=None):
    """Drop (and report) utterances whose transcript cannot match their duration.

    ``count_words(text) -> int`` counts the words (default: whitespace words); it
    may raise :class:`~taste_toolkit.errors.InputError`, whose message becomes the
    reason (e.g. a punctuation-only transcript). Text tokenizers with a language
    count the language's words (:func:`word_counter`), so Mandarin is not one word.
    """
    keep, dropped = [], {}
    for uid, row in dataset.data.items():
        reason = None
        try:
            words = count_words(str(row["wrd"])) if count_words else len(str(row["wrd"]).split())
        except InputError as exc:
            words, reason = 0, str(exc)
        dur = float(row["duration"])
        if reason:
            pass
        elif words == 0:
            reason = "empty transcript"
        elif dur / words > max_seconds_per_word:
            reason = f"more than {max_seconds_per_word} s per word"
        elif words / dur > max_words_per_second:
            reason = f"more than {max_words_per_second} words per second"
        else:
            keep.append(uid)
            continue
        dropped.setdefault(reason, []).append(uid)
    for reason, ids in dropped.items():
        logger.warning("%s: excluded %d utterance(s) with %s (e.g. %s)", split, len(ids), reason, ids[:3])
    return dropped


def word_counter(text_tokenizer):
    """``text -> number of words`` of ``text_tokenizer``'s language, or None (whitespace words).

    Uses the tokenizer's :class:`~taste_toolkit.languages.WordSplitter` (``.words``)
    when it has one; its counts are not touched (a fresh splitter of the same setup).
    """
    words = getattr(text_tokenizer, "words", None)
    if words is None:
        return None
    from taste_toolkit.languages import WordSplitter

    splitter = WordSplitter(words.language, segmenter=words.segmenter.registry_name,
                            segmenter_options=(words.segmenter.build_spec or {}).get("options") or {},
                            foreign_script=words.foreign_script, lowercase=words.lowercase)
    return lambda text: len(splitter.split(text))


def compute_speaker_vectors(speaker, manifests, cache_dir, sample_rate=16000):
    """Speaker vector of every utterance, computed once and cached.

    Returns ``{id: (D,) tensor}`` or ``None`` when the plugin has no embedding.
    The cache file name hashes the plugin, its weights' size and the manifests,
    so changing either recomputes.
    """
    if speaker is None or speaker.embedding_dim == 0:
        return None
    from taste_toolkit.data.manifest import read_manifest

    rows = [row for path in manifests.values() for row in read_manifest(path, columns=("ID", "wav", "duration"))]
    key = stable_hash([type(speaker).__name__, speaker.embedding_dim, [(r["ID"], r["wav"], r["duration"]) for r in rows]])
    file = os.path.join(cache_dir, f"speaker_{key}.pt")
    if os.path.exists(file):
        try:
            return torch.load(file, weights_only=True)
        except Exception:  # truncated file: rebuild
            logger.warning("Speaker cache %s unreadable; recomputing.", file)
    vectors = {}
    for r in tqdm(rows, desc="speaker vectors"):
        wav = load_audio(r["wav"], sample_rate)
        vectors[r["ID"]] = speaker(wav[None], torch.tensor([wav.numel()]))[0].float()
    os.makedirs(cache_dir, exist_ok=True)
    tmp = file + ".tmp"
    torch.save(vectors, tmp)
    os.replace(tmp, file)
    return vectors


def build_datasets(manifests, text_tokenizer, units, speaker_vectors=None, sample_rate=16000, mismatch_filter=None,
                   unit_word_starts=None, unit_frame_rate=None, speaker_targets=None):
    """Datasets for each split.

    Arguments
    ---------
    manifests : dict
        ``{split: csv path}`` with columns ``ID, duration, wav, spk_id, wrd``.
    text_tokenizer : TextTokenizer
        Word-preserving tokenizer.
    units : dict
        ``{split: {id: LongTensor (S,)}}`` decoder targets.
    speaker_vectors : dict, optional
        ``{id: (D,) tensor}``.
    mismatch_filter : dict, optional
        Options of :func:`filter_mismatched` (``None`` = defaults).
    unit_word_starts : dict, optional
        ``{split: {id: [word start seconds]}}``; adds ``unit_word_ids`` (the word of
        every unit, see :mod:`taste_toolkit.data.word_alignment`) for decoders that
        train on it. ``unit_frame_rate`` (units per second) is then required.
    speaker_targets : dict, optional
        ``{id: (D,) tensor}``; adds ``spk_target`` (the speaker vector as a training
        target, e.g. of prosody supervision, apart from the decoder's ``spk_emb``).

    Returns
    -------
    dict
        ``{split: DynamicItemDataset}`` sorted by duration (ascending).
    """

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return load_audio(wav, sample_rate)

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("tokens", "word_ids")
    def text_pipeline(wrd):
        t = text_tokenizer.encode_words(wrd)
        yield torch.tensor(t.ids, dtype=torch.long)
        yield torch.tensor(t.word_ids, dtype=torch.long)

    datasets = {}
    for split, csv_path in manifests.items():
        ds = DynamicItemDataset.from_csv(csv_path)
        split_units = units[split]

        dropped = filter_mismatched(ds, split, **{"count_words": word_counter(text_tokenizer), **(mismatch_filter or {})})
        bad = {i for ids in dropped.values() for i in ids}
        missing = [i for i in ds.data if i not in split_units]
        if missing:
            logger.warning("%s: %d utterance(s) have no units (e.g. %s); excluded.", split, len(missing), missing[:3])
        keep = [i for i in ds.data_ids if i not in bad and i in split_units]
        if not keep:
            raise InputError(f"Split {split!r} ({csv_path}) has no usable utterance left; see the warnings above.")

        @sb.utils.data_pipeline.takes("id")
        @sb.utils.data_pipeline.provides("units")
        def unit_pipeline(uid, _units=split_units):
            return _units[uid].long()

        items = [audio_pipeline, text_pipeline, unit_pipeline]
        keys = ["id", "duration", "sig", "tokens", "word_ids", "units"]
        if unit_word_starts is not None:
            from taste_toolkit.data.word_alignment import unit_word_ids

            starts = unit_word_starts[split]
            no_times = [i for i in keep if i not in starts]
            if no_times:
                raise InputError(f"{split}: {len(no_times)} utterance(s) have no word times (e.g. {no_times[:3]}).")

            @sb.utils.data_pipeline.takes("id")
            @sb.utils.data_pipeline.provides("unit_word_ids")
            def unit_word_pipeline(uid, _units=split_units, _starts=starts):
                return unit_word_ids(_starts[uid], len(_units[uid]), unit_frame_rate)

            items.append(unit_word_pipeline)
            keys.append("unit_word_ids")
        for key, table in (("spk_emb", speaker_vectors), ("spk_target", speaker_targets)):
            if table is not None:
                items.append(_lookup_by_id(key, table))
                keys.append(key)
        for item in items:
            ds.add_dynamic_item(item)
        ds.set_output_keys(keys)
        keep_set = set(keep)
        ds = ds.filtered_sorted(sort_key="duration", key_test={"id": lambda i: i in keep_set})
        datasets[split] = ds
    return datasets


def _lookup_by_id(key, table):
    """A dynamic item that provides ``key`` as ``table[id]`` (e.g. an utterance's speaker vector)."""

    @sb.utils.data_pipeline.takes("id")
    @sb.utils.data_pipeline.provides(key)
    def lookup(uid):
        return table[uid]

    return lookup


def train_loader_kwargs(hparams, dataset, brain):
    """Loader options of the training split: SpeechBrain's ``DynamicBatchSampler`` when
    ``dynamic_batching`` is on (batches of similar durations, ``dynamic_batch_sampler_train``
    options), else ``train_dataloader_opts``.

    The sampler is also set as ``brain.train_sampler``: SpeechBrain calls ``set_epoch()``
    only on that attribute, and without it the batch order would depend on how many epochs
    this process ran (not on the epoch number), so a resumed run would see other batches.
    """
    from speechbrain.dataio.sampler import DynamicBatchSampler

    if not hparams["dynamic_batching"]:
        return dict(hparams["train_dataloader_opts"])
    sampler = DynamicBatchSampler(
        dataset, length_func=lambda x: float(x["duration"]), **hparams["dynamic_batch_sampler_train"]
    )
    brain.train_sampler = sampler
    return {"batch_sampler": sampler}
