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
        ``max_duration`` and ``skip_prep``.

    Returns
    -------
    manifests : dict
        ``{split: csv path}`` for every split, plus the merged training split
        (``"a+b+c"``) when ``train_splits`` names several.
    train : str
        Name of the training split in ``manifests``.
    """
    import speechbrain as sb
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
    if len(hparams["train_splits"]) > 1:  # e.g. LibriSpeech 960 h = three training splits
        merged = "+".join(hparams["train_splits"])
        run_on_main(
            sb.dataio.dataio.merge_csvs,
            kwargs=dict(data_folder=save, csv_lst=[f"{s}.csv" for s in hparams["train_splits"]], merged_csv=f"{merged}.csv"),
        )
        manifests[merged] = os.path.join(save, f"{merged}.csv")
        train = merged
    else:
        train = hparams["train_splits"][0]
    return manifests, train


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
