#!/usr/bin/env python3
"""Recipe: train the TASTE tokenizer (stage 1) and its ablations.

With no ``--data_folder`` the embedded synthetic corpus is generated first (a few
minutes on 2 CPU cores); with one, it is read in the LibriSpeech layout::

    python recipes/librispeech/train.py hparams/taste.yaml
    python recipes/librispeech/train.py hparams/taste.yaml --data_folder=/data/LibriSpeech \\
        --train_splits=[train-clean-100] --dev_splits=[dev-clean] --test_splits=[test-clean]
    python recipes/librispeech/train.py hparams/ablations/text_only.yaml
    torchrun --standalone --nproc_per_node=2 recipes/librispeech/train.py hparams/taste.yaml

Any YAML key can be overridden (``--quantizer_name=identity``, ``--number_of_epochs=5``);
SpeechBrain run options (``--device``, ``--precision=bf16``, ``--debug``,
``--test_only``) work as in every SpeechBrain recipe.
"""

import json
import logging
import os
import sys

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process, run_on_main

from taste_toolkit.errors import ConfigError
from taste_toolkit.hparams_loader import load_hparams, quiet_library_debug_logs, setup_experiment
from taste_toolkit.data.corpus_preparation import fit_text_tokenizer, prepare_corpus
from taste_toolkit.data.unit_cache import load_units, prepare_units
from taste_toolkit.training.data import build_datasets, compute_speaker_vectors, train_loader_kwargs
from taste_toolkit.training.export import export_tokenizer
from taste_toolkit.training.staging import parse_stages, stage_plan
from taste_toolkit.training.tokenizer_brain import TasteTokenizerBrain
from taste_toolkit.training.unit_vocoder import fit_recipe_vocoder

logger = logging.getLogger(__name__)


def run_stage(hparams, run_opts, encoder_cache=None):
    """Prepare data, train, test and export one (stage of a) run; returns the test results."""
    manifests, train = prepare_corpus(hparams)
    text_tokenizer = fit_text_tokenizer(hparams, manifests, train)
    splits = {train: manifests[train]}
    splits.update({s: manifests[s] for s in hparams["dev_splits"] + hparams["test_splits"]})

    unit_files = run_on_main(
        prepare_units,
        kwargs=dict(extractor=hparams["units"], manifests=splits, cache_dir=os.path.join(hparams["prep_folder"], "units"), fit_split=train),
    )
    units = {s: load_units(p) for s, p in unit_files.items()}
    # Computed (and cached) once by the main process; every rank receives them.
    speakers = run_on_main(compute_speaker_vectors, args=[hparams["speaker"], splits,
                                                          os.path.join(hparams["prep_folder"], "speaker")])
    word_starts = None
    if any(hparams[m].needs_unit_word_ids for m in ("decoder", "aggregator")) \
            or hparams["model"].prosody_supervision is not None:
        # The decoder (or the oracle aggregator, or the prosody supervision) uses the word of every
        # unit: the corpus' word times (metadata.jsonl), or a forced alignment by the frozen Whisper aligner.
        word_starts = load_word_starts(hparams, splits, text_tokenizer)
    prosody = hparams["model"].prosody_supervision
    if prosody is not None and prosody.speaker_dim:
        available = int(getattr(hparams.get("speaker"), "embedding_dim", 0) or 0)
        if prosody.speaker_dim != available:
            raise ConfigError(f"prosody supervision speaker_dim={prosody.speaker_dim} but the speaker plugin "
                              f"({hparams.get('speaker_name')}) gives {available or 'no'} vectors; set speaker_name "
                              "(e.g. resemblyzer) or prosody_supervision_speaker_dim to its embedding size.")
    datasets = build_datasets(
        # the speaker vectors go to the decoder only if it takes them (they may serve the vocoder alone)
        splits, text_tokenizer, units, speakers if hparams["decoder"].speaker_dim else None, hparams["sample_rate"],
        unit_word_starts=word_starts, unit_frame_rate=hparams["units"].frame_rate,
        speaker_targets=speakers if prosody is not None and prosody.speaker_dim else None,
    )

    brain = TasteTokenizerBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    if encoder_cache is not None and hparams.get("cache_encoder_outputs", False):
        brain._enc_cache = encoder_cache  # the frozen encoder's taps, shared by the stages
    # The RVQ codebooks start from k-means over the training set's word vectors
    # (after the previous stage's aggregator is loaded), not from one batch.
    brain.init_quantizer_codebooks(datasets[train], hparams["valid_dataloader_opts"], hparams.get("rvq_init_batches", 0))
    train_kwargs = train_loader_kwargs(hparams, datasets[train], brain)
    valid = hparams["dev_splits"][0]
    brain.fit(
        hparams["epoch_counter"],
        datasets[train],
        datasets[valid],
        train_loader_kwargs=train_kwargs,
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    results = {}
    for split in hparams["test_splits"]:
        brain.evaluate(datasets[split], min_key="loss", test_loader_kwargs=hparams["test_dataloader_opts"])
        results[split] = brain.test_stats
    vocoder_blocks = dict(hparams.get("vocoder_options") or {})
    if hparams.get("export_folder") and hparams.get("vocoder_name") == "unit_to_spec" \
            and not (vocoder_blocks.get("unit_to_spec") or {}).get("checkpoint"):
        # Only an export needs it: trained on the training split's units once (every rank
        # waits for the main one), cached by their fingerprint and reused by later runs.
        vocoder_blocks["unit_to_spec"] = fit_recipe_vocoder(hparams, splits[train], unit_files[train], speakers)
        hparams["vocoder_options"] = vocoder_blocks
    if if_main_process():
        # The best checkpoint is loaded (evaluate used min_key="loss"): ship it.
        if hparams.get("export_folder"):
            export_tokenizer(hparams, hparams["export_folder"])
            print(f"Standalone tokenizer: {hparams['export_folder']} (load with TasteTokenizer.from_pretrained)")
            add_token_measurements(hparams, results)
        with open(os.path.join(hparams["output_folder"], "test_results.json"), "w") as f:
            json.dump(results, f, indent=2)
        for split, stats in results.items():
            print(f"[{split}] " + "  ".join(f"{k}={v}" for k, v in stats.items() if not k.startswith("rvq_usage")))
    return results, getattr(brain, "_enc_cache", None)


def load_word_starts(hparams, splits, text_tokenizer):
    """``{split: {ID: word start seconds}}`` by ``word_times`` (``auto``, ``metadata`` or ``aligner``)."""
    from taste_toolkit.data.aligned_word_times import split_word_starts_from

    return run_on_main(split_word_starts_from, kwargs=dict(
        source=hparams.get("word_times", "auto"), manifests=splits,
        data_folder=hparams["data_folder"] or hparams["corpus_folder"], text_tokenizer=text_tokenizer,
        encoder=hparams["encoder"], whisper_source=hparams["whisper_source"], vocab_size=hparams["text_vocab_size"],
        cache_dir=os.path.join(hparams["prep_folder"], "word_times"), sample_rate=hparams["sample_rate"]))


def add_token_measurements(hparams, results):
    """Alignment error and token probes of the exported tokenizer, on corpora with word-level metadata.

    Adds ``align_boundary_error_s`` and ``probe_*`` to each test split's results
    (see :mod:`taste_toolkit.evaluation.token_measurements`); skipped, with a log
    line, when the corpus has no ``metadata.jsonl`` (e.g. LibriSpeech).
    """
    if not hparams.get("measure_tokens", True):
        return
    from taste_toolkit.evaluation.token_measurements import measure_exported_tokenizer

    from taste_toolkit.errors import TasteError

    corpus = hparams["data_folder"] or hparams["corpus_folder"]
    for split in hparams["test_splits"]:
        try:
            extra = measure_exported_tokenizer(hparams["export_folder"], corpus, hparams["train_splits"][0], split,
                                               hparams.get("probe_train_utterances", 240))
        except TasteError as exc:  # e.g. oracle_spans needs the corpus' word times to encode
            logger.warning("Token measurements skipped for %s: %s", split, exc)
            continue
        results[split].update(extra)


def main():
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    hparams, run_opts = setup_experiment(sys.argv[1:])
    stages = parse_stages(hparams.get("stages") or [])
    if not stages:
        run_stage(hparams, run_opts)
        return
    # The paper's staged schedule: each stage its own folder and results, initialized
    # from the previous one; a finished stage is skipped when the run is restarted.
    cache = None
    plan = stage_plan(stages, hparams["output_folder"])
    del hparams
    for k, (name, folder, stage_overrides) in enumerate(plan):
        last = k == len(plan) - 1
        if not last and os.path.isfile(os.path.join(folder, "test_results.json")):
            logger.info("Stage %d (%s) already finished in %s: skipped.", k, name, folder)
            continue
        print(f"=== stage {k + 1}/{len(plan)}: {name} -> {folder}", flush=True)
        merged = {**_as_overrides(overrides), **stage_overrides}
        hparams, path, merged = load_hparams(hparams_file, merged)
        sb.create_experiment_directory(experiment_directory=folder, hyperparams_to_save=path, overrides=merged)
        quiet_library_debug_logs()
        _, cache = run_stage(hparams, run_opts, cache)


def _as_overrides(text):
    import yaml

    return dict(yaml.safe_load(text) or {}) if isinstance(text, str) else dict(text or {})


if __name__ == "__main__":
    # One entry point for every stage: the YAML's ``task:`` picks the trainer
    # (hparams/taslm_token.yaml -> TASLM, hparams/lmspt.yaml -> LM-SPT).
    from importlib import import_module

    from taste_toolkit.hparams_loader import TASKS, peek_task

    task_module = TASKS[peek_task(sys.argv[1:])]
    if task_module is None:
        main()
    else:
        import_module(task_module).main(sys.argv[1:])
