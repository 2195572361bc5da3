"""Recipe body for LM-SPT (``task: lmspt``), run through the one entry point::

    python recipes/librispeech/train.py hparams/lmspt.yaml          # 12.5 Hz, embedded corpus
    python recipes/librispeech/train.py hparams/lmspt_25hz.yaml     # 25 Hz
    python recipes/librispeech/train.py hparams/lmspt.yaml --data_folder=/data/LibriSpeech \\
        --train_splits=[train-clean-100] --dev_splits=[dev-clean] --test_splits=[test-clean]

Same corpus preparation as the TASTE recipe
(:func:`taste_toolkit.data.corpus_preparation.prepare_corpus`: embedded corpus synthesis,
LibriSpeech manifests, merged training splits), no text tokenizer, units or speaker vectors (frame tokens
are learned from audio alone). Trains :class:`~taste_toolkit.training.lmspt_brain.LmsptBrain`,
tests on each test split with the best checkpoint, writes ``test_results.json`` and
exports the standalone :class:`~taste_toolkit.lmspt.api.LmsptTokenizer` to
``export_folder``.
"""

import json
import logging
import os

import speechbrain as sb
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.distributed import if_main_process

from taste_toolkit.audio import load_audio
from taste_toolkit.data.corpus_preparation import prepare_corpus
from taste_toolkit.errors import InputError
from taste_toolkit.hparams_loader import setup_experiment
from taste_toolkit.training.lmspt_brain import LmsptBrain
from taste_toolkit.training.data import train_loader_kwargs

logger = logging.getLogger(__name__)


def build_audio_datasets(manifests, sample_rate=16000):
    """Audio-only datasets: ``{split: DynamicItemDataset}`` with ``id, duration, sig``, sorted by duration.

    Arguments
    ---------
    manifests : dict
        ``{split: csv path}`` with at least ``ID, duration, wav``.
    sample_rate : int
        Audio is loaded mono at this rate (resampled when needed).
    """

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return load_audio(wav, sample_rate)

    datasets = {}
    for split, csv_path in manifests.items():
        ds = DynamicItemDataset.from_csv(csv_path)
        if not len(ds):
            raise InputError(f"Split {split!r} ({csv_path}) has no utterance.")
        ds.add_dynamic_item(audio_pipeline)
        ds.set_output_keys(["id", "duration", "sig"])
        datasets[split] = ds.filtered_sorted(sort_key="duration")
    return datasets


def export_tokenizer(hparams, folder):
    """Save the recipe's model (as currently loaded) + mel vocoder as a standalone LM-SPT tokenizer."""
    from taste_toolkit.lmspt.api import LmsptTokenizer

    tokenizer = LmsptTokenizer(hparams["model"], hparams.get("vocoder"))
    tokenizer.save_pretrained(folder)
    logger.info("Standalone LM-SPT tokenizer written to %s (fingerprint %s)", folder, tokenizer.fingerprint)
    return tokenizer


def main(argv):
    """Train, test and export LM-SPT as the YAML describes (``argv`` as for ``train.py``)."""
    hparams, run_opts = setup_experiment(argv)
    manifests, train = prepare_corpus(hparams)
    splits = {train: manifests[train]}
    splits.update({s: manifests[s] for s in hparams["dev_splits"] + hparams["test_splits"]})
    datasets = build_audio_datasets(splits, hparams["sample_rate"])

    brain = LmsptBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    train_kwargs = train_loader_kwargs(hparams, datasets[train], brain)
    brain.fit(
        hparams["epoch_counter"],
        datasets[train],
        datasets[hparams["dev_splits"][0]],
        train_loader_kwargs=train_kwargs,
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    results = {}
    for split in hparams["test_splits"]:
        brain.evaluate(datasets[split], min_key="loss", test_loader_kwargs=hparams["test_dataloader_opts"])
        results[split] = brain.test_stats
    if if_main_process():
        with open(os.path.join(hparams["output_folder"], "test_results.json"), "w") as f:
            json.dump(results, f, indent=2)
        for split, stats in results.items():
            shown = {k: v for k, v in stats.items() if "usage" not in k and "perplexity" not in k}
            print(f"[{split}] " + "  ".join(f"{k}={v}" for k, v in shown.items()))
        if hparams.get("export_folder"):  # the best checkpoint is loaded (min_key="loss")
            export_tokenizer(hparams, hparams["export_folder"])
            print(f"Standalone tokenizer: {hparams['export_folder']} (load with LmsptTokenizer.from_pretrained)")
