"""The recipes' corpus preparation: manifests for every split, and the text tokenizer fitted on them.

Every training recipe (``task: taste``, ``task: lmspt``, the vocoder recipe and
``export.py``) starts with the same two steps, which live here so the library
never imports a recipe::

    manifests, train = prepare_corpus(hparams)
    text_tokenizer = fit_text_tokenizer(hparams, manifests, train)

Both are safe under ``torchrun``: the work is done on the main process
(``run_on_main``) and the other ranks read its result.
"""

import os

from taste_toolkit.data.manifest import read_manifest


def prepare_corpus(hparams):
    """Manifests for every split; the embedded corpus is synthesized when no ``data_folder`` is set.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters. Read: ``data_folder`` (empty: synthesize
        the embedded corpus into ``corpus_folder`` with ``corpus_options``),
        ``train_splits``, ``dev_splits``, ``test_splits``, ``prep_folder``,
        ``max_duration`` and ``skip_prep``; optional ``extra_train_manifests``
        (more SpeechBrain CSVs for training) and ``real_voice_split`` (true: add
        the Asterisk prompts outside the real-speech evaluation set, a real
        recorded voice, :func:`taste_toolkit.data.asterisk.prepare_asterisk_split`).

    Returns
    -------
    manifests : dict
        ``{split: csv path}`` for every split, plus the merged training split
        (``"a+b+c"``) when ``train_splits`` names several or extra training
        manifests are given (then ``"train+extra"``).
    train : str
        Name of the training split in ``manifests``.
    """
    from speechbrain.utils.distributed import run_on_main

    from taste_toolkit.data.librispeech import prepare_librispeech

    data_folder = hparams["data_folder"]
    if not data_folder:
        from taste_toolkit.data.synthetic_corpus import generate_corpus

        data_folder = hparams["corpus_folder"]
        run_on_main(generate_corpus, args=[data_folder], kwargs=dict(hparams["corpus_options"]))
    splits = hparams["train_splits"] + hparams["dev_splits"] + hparams["test_splits"]
    save = os.path.join(hparams["prep_folder"], "manifests", os.path.basename(os.path.normpath(data_folder)))
    run_on_main(
        prepare_librispeech,
        kwargs=dict(
            data_folder=data_folder,
            save_folder=save,
            splits=splits,
            max_duration=hparams["max_duration"],
            skip_prep=hparams["skip_prep"],
        ),
    )
    manifests = {s: os.path.join(save, f"{s}.csv") for s in splits}
    extra = _extra_train_manifests(hparams)
    if len(hparams["train_splits"]) > 1 or extra:  # e.g. LibriSpeech 960 h = three training splits
        merged = "+".join(hparams["train_splits"] + (["extra"] if extra else []))
        run_on_main(
            _merge_manifests,
            kwargs=dict(paths=[manifests[s] for s in hparams["train_splits"]] + extra,
                        merged=os.path.join(save, f"{merged}.csv"), max_duration=hparams["max_duration"]),
        )
        manifests[merged] = os.path.join(save, f"{merged}.csv")
        train = merged
    else:
        train = hparams["train_splits"][0]
    return manifests, train


def _extra_train_manifests(hparams):
    """The CSVs added to the training split: ``extra_train_manifests`` and the real-voice split."""
    from speechbrain.utils.distributed import run_on_main

    extra = [str(p) for p in hparams.get("extra_train_manifests") or []]
    for path in extra:
        if not os.path.isfile(path):
            from taste_toolkit.errors import DataPreparationError

            raise DataPreparationError(f"extra_train_manifests: {path!r} does not exist; write it first "
                                       "(a SpeechBrain CSV with ID, duration, wav, spk_id, wrd).")
    if hparams.get("real_voice_split"):
        from taste_toolkit.data.asterisk import prepare_asterisk_split

        extra.append(run_on_main(prepare_asterisk_split, args=[os.path.join(hparams["prep_folder"], "real_voice")]))
    return extra


def _merge_manifests(paths, merged, max_duration=None):
    """Concatenate SpeechBrain CSVs (same header) into ``merged``; a duplicate ID is an error.

    Rows longer than ``max_duration`` seconds (the Whisper window) are left out and
    counted in the log, as the corpus preparation excludes them from its own splits.
    """
    import csv
    import logging

    from taste_toolkit.errors import DataPreparationError

    header, rows, seen = None, [], {}
    too_long = {}
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            head = next(reader)
            if header is None:
                header = head
            elif head != header:
                raise DataPreparationError(f"Cannot merge {path!r}: columns {head} differ from {header}.")
            for row in reader:
                if row[0] in seen:
                    raise DataPreparationError(f"Utterance ID {row[0]!r} is in both {seen[row[0]]!r} and {path!r}.")
                seen[row[0]] = path
                if max_duration is not None and "duration" in header and \
                        float(row[header.index("duration")]) > max_duration:
                    too_long.setdefault(path, []).append(row[0])
                    continue
                rows.append(row)
    for path, ids in too_long.items():
        logging.getLogger(__name__).warning(
            "Left %d utterance(s) of %s out of the training split: longer than max_duration=%s s (e.g. %s).",
            len(ids), path, max_duration, ids[0])
    tmp = merged + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, merged)


def fit_text_tokenizer(hparams, manifests, train):
    """The recipe's text tokenizer, fitted on the training transcripts when it needs fitting.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters; ``text_tokenizer`` is the tokenizer plugin
        and ``prep_folder`` the folder its fitted model is cached in
        (``<prep_folder>/text_tokenizer``).
    manifests : dict
        ``{split: csv path}``, as returned by :func:`prepare_corpus`.
    train : str
        The training split: its ``wrd`` column is what the tokenizer is fitted on.

    Returns
    -------
    object
        ``hparams["text_tokenizer"]``, fitted (a tokenizer without ``needs_fit``
        is returned as is).
    """
    from speechbrain.utils.distributed import run_on_main

    tok = hparams["text_tokenizer"]
    if not getattr(tok, "needs_fit", False):
        return tok
    transcripts = [row["wrd"] for row in read_manifest(manifests[train], columns=("wrd",), unique_ids=False)]
    folder = os.path.join(hparams["prep_folder"], "text_tokenizer")
    run_on_main(tok.fit, args=[transcripts, folder])
    tok.fit(transcripts, folder)  # every rank loads the same (already trained) model
    return tok
