"""Recipe: train TASLM (stage 2) on top of an exported stage-1 TASTE tokenizer.

Called by ``recipes/librispeech/train.py`` when the YAML says ``task: taslm``::

    python recipes/librispeech/train.py hparams/taslm_token.yaml
    python recipes/librispeech/train.py hparams/taslm_embedding.yaml
    python recipes/librispeech/train.py hparams/taslm_token.yaml --backbone_source=meta-llama/Llama-3.2-1B \\
        --lora="{r: 64, alpha: 128, dropout: 0.05, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}"

Steps: (1) load the tokenizer's standalone folder; (2) compute (once, cached) the
word-level TASTE codes of every utterance of the manifests; (3) with no
``backbone_source``, train the small offline Llama text LM
(:mod:`taste_toolkit.training.text_lm`); (4) build TASLM (frozen LM + LoRA +
fusion + head) and train it with :class:`~taste_toolkit.training.taslm_brain.TaslmBrain`;
(5) test: loss, text perplexity of the adapted model vs the base model, per-layer
TASTE accuracy, two-choice accuracies with bootstrap 95% CIs -- built-in
``token_mismatch`` and ``shuffled_ending``, the acoustic minimal pairs
``prosody_minimal_pairs`` and ``speaker_minimal_pairs`` (synthesized once into
``minimal_pairs.folder`` by :mod:`taste_toolkit.data.minimal_pairs`, before
training), and a local SALMON/StoryCloze folder if given -- LoRA parameter
counts; ``test_results.json``, ``curves.png``;
(6) export the trained TASLM to ``<output_folder>/taslm`` (``TaslmModel.from_pretrained``).
"""

import json
import logging
import math
import os
import time

import torch
from speechbrain.utils.distributed import if_main_process, run_on_main

from taste_toolkit.errors import ConfigError, MissingResourceError
from taste_toolkit.hparams_loader import setup_experiment

logger = logging.getLogger(__name__)


def load_stage1_tokenizer(folder):
    """The exported stage-1 tokenizer, or a clear error telling how to make it."""
    from taste_toolkit.api import TasteTokenizer

    if not os.path.isfile(os.path.join(folder, "taste_config.json")):
        raise MissingResourceError(
            f"No exported TASTE tokenizer in {folder!r}. Train stage 1 first: "
            "python recipes/librispeech/train.py hparams/taste.yaml (it exports results/taste/1986/tokenizer), "
            "or point --tokenizer_folder at an exported tokenizer."
        )
    return TasteTokenizer.from_pretrained(folder)


def prepare_backbone(hparams, records):
    """The backbone source: the YAML's, or the embedded text LM trained on the transcripts."""
    if hparams["backbone_source"]:
        return hparams["backbone_source"]
    from taste_toolkit.training.text_lm import ensure_text_lm

    train = [" ".join(r["words"]) for r in records[hparams["train_split"]]]
    heldout = [" ".join(r["words"]) for s in (hparams["dev_split"], hparams["test_split"]) for r in records[s]]
    folder = hparams["text_lm_folder"]
    run_on_main(ensure_text_lm, args=[folder, train, heldout], kwargs=dict(hparams["text_lm_options"] or {}))
    return folder


def prepare_minimal_pairs(hparams, tokenizer):
    """``(sets, skipped)``: the tokenized acoustic minimal pairs of the YAML's ``minimal_pairs``.

    The audio is synthesized once (espeak-ng) into ``minimal_pairs.folder`` and its
    tokens cached in ``token_cache``. Without espeak-ng the sets are skipped
    (``skipped`` = ``{name: reason}``, written to ``test_results.json``), not fatal.
    """
    from taste_toolkit.data.minimal_pairs import KINDS, generate_minimal_pairs
    from taste_toolkit.taslm.scoring import load_minimal_pairs

    options = dict(hparams.get("minimal_pairs") or {})
    if not options:
        return {}, {}
    folder = options.pop("folder", None)
    unknown = set(options) - {"num_pairs", "seed", "num_speakers", "kinds", "max_chars"}
    if unknown:
        raise ConfigError(f"minimal_pairs has unknown option(s) {sorted(unknown)}; valid: folder, num_pairs, seed, "
                          "num_speakers, kinds, max_chars.")
    if not folder:
        raise ConfigError("minimal_pairs needs a 'folder' (e.g. results/prepared/minimal_pairs), or {} for none.")
    try:
        run_on_main(generate_minimal_pairs, args=[folder], kwargs=options)
    except MissingResourceError as exc:
        logger.warning("Acoustic minimal pairs skipped: %s", exc)
        return {}, {f"{k}_minimal_pairs": str(exc) for k in options.get("kinds", KINDS)}
    return load_minimal_pairs(folder, tokenizer, hparams["token_cache"]), {}


def text_perplexities(model, dataset, batch_size=32):
    """Held-out text perplexity: TASLM with speech, TASLM without speech, frozen base LM."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=dataset.collate)
    device = next(model.parameters()).device
    totals = {m: [0.0, 0] for m in ("speech", "no_speech", "base")}
    model.eval()
    for batch in loader:
        batch = batch.to(device)
        for mode in totals:
            nll, n = model.text_nll(batch, mode)
            totals[mode][0] += nll
            totals[mode][1] += n
    names = {"speech": "taslm_with_speech", "no_speech": "taslm_text_only", "base": "base_lm"}
    return {names[m]: round(math.exp(s / max(n, 1)), 3) for m, (s, n) in totals.items()}


def main(argv):
    hparams, run_opts = setup_experiment(argv)
    from taste_toolkit.registry import load_plugins
    from taste_toolkit.taslm.codebook import SpeechCodebook
    from taste_toolkit.taslm.data import TaslmDataset, encode_manifest
    from taste_toolkit.taslm.model import TrainableParameters, build_taslm
    from taste_toolkit.training.taslm_brain import TaslmBrain

    load_plugins(hparams.get("plugin_modules", []))
    tokenizer = load_stage1_tokenizer(hparams["tokenizer_folder"])
    splits = [hparams["train_split"], hparams["dev_split"], hparams["test_split"]]
    manifests = {s: os.path.join(hparams["manifest_folder"], f"{s}.csv") for s in splits}
    for s in splits:
        run_on_main(encode_manifest, args=[tokenizer, manifests[s], hparams["token_cache"]])
    records = {s: encode_manifest(tokenizer, manifests[s], hparams["token_cache"]) for s in splits}
    minimal_pairs = prepare_minimal_pairs(hparams, tokenizer)  # before training: fails early, cached
    source = prepare_backbone(hparams, records)
    # Building the caches above (tokens, minimal pairs, text LM) draws random numbers only
    # when they do not exist yet: reseed, so the model and its training do not depend on it.
    from speechbrain.utils import seed_everything

    seed_everything(hparams["seed"])

    head_name, fusion_name = hparams["lm_head_name"], hparams["fusion_name"]
    codebook = SpeechCodebook.from_quantizer(tokenizer.model.quantizer)
    model = build_taslm(
        source, codebook, head_name, (hparams["lm_head_options"] or {}).get(head_name) or {},
        fusion_name, (hparams["fusion_options"] or {}).get(fusion_name) or {}, lora=hparams["lora"],
        delay=hparams["delay"], dtype=hparams["backbone_dtype"], text_weight=hparams["text_weight"],
        taste_weight=hparams["taste_weight"], text_kl_weight=hparams["text_kl_weight"],
        gradient_checkpointing=hparams["gradient_checkpointing"],
        tokenizer_folder=os.path.abspath(hparams["tokenizer_folder"]), tokenizer_fingerprint=tokenizer.fingerprint,
    )
    counts = model.parameter_counts()
    logger.info("TASLM parameters: %d trainable of %d (%.2f%%)", counts["trainable"], counts["total"],
                100 * counts["trainable"] / counts["total"])
    datasets = {s: TaslmDataset(records[s], model.bridge) for s in splits}
    checkpointer = hparams["checkpointer"]
    checkpointer.add_recoverable("trainable", TrainableParameters(model))
    brain = TaslmBrain(modules={"model": model}, opt_class=hparams["opt_class"], hparams=hparams,
                       run_opts=run_opts, checkpointer=checkpointer)
    collate = {"collate_fn": datasets[splits[0]].collate}
    start = time.time()
    brain.fit(hparams["epoch_counter"], datasets[splits[0]], datasets[splits[1]],
              train_loader_kwargs={**hparams["train_dataloader_opts"], **collate},
              valid_loader_kwargs={**hparams["valid_dataloader_opts"], **collate})
    train_seconds = time.time() - start
    brain.evaluate(datasets[splits[2]], min_key="loss",
                   test_loader_kwargs={**hparams["test_dataloader_opts"], **collate})
    if not if_main_process():
        return
    results = evaluate_extras(hparams, model, brain, datasets[splits[2]], records[splits[2]], tokenizer,
                              minimal_pairs)
    results.update(parameters=counts, train_seconds=round(train_seconds, 1), backbone_source=source)
    out = hparams["output_folder"]
    with open(os.path.join(out, "test_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    model.save_pretrained(os.path.join(out, "taslm"))
    print(json.dumps(results, indent=2))
    print(f"TASLM saved to {os.path.join(out, 'taslm')} (TaslmModel.from_pretrained)")


def evaluate_extras(hparams, model, brain, test_set, test_records, tokenizer, minimal_pairs=({}, {})):
    """Perplexities, two-choice accuracies (with bootstrap 95% CIs) and one generated continuation.

    ``minimal_pairs``: ``(sets, skipped)`` from :func:`prepare_minimal_pairs`.
    """
    from taste_toolkit.taslm.generation import GenerationConfig, generate
    from taste_toolkit.taslm.scoring import builtin_two_choice_sets, load_two_choice_folder, two_choice_accuracy

    model.to(brain.device).eval()
    results = {"test": brain.test_stats, "text_perplexity": text_perplexities(model, test_set)}
    two_choice = {name: two_choice_accuracy(model, pairs)
                  for name, pairs in builtin_two_choice_sets(test_records, seed=hparams["seed"]).items() if pairs}
    sets, skipped = minimal_pairs
    two_choice.update({name: two_choice_accuracy(model, pairs) for name, pairs in sets.items() if pairs})
    if skipped:
        results["two_choice_skipped"] = skipped
    folder = hparams.get("two_choice_folder") or ""
    if folder:
        for name, pairs in load_two_choice_folder(folder, tokenizer).items():
            two_choice[f"external/{name}"] = two_choice_accuracy(model, pairs)
    results["two_choice"] = two_choice
    rec = test_records[0]
    k = max(1, len(rec["words"]) // 2)
    gen = generate(model, rec["words"][:k], rec["codes"][:k], GenerationConfig(max_new_words=12))
    results["example_continuation"] = {"prompt": " ".join(rec["words"][:k]), "continuation": " ".join(gen.new_words),
                                       "stop_reason": gen.stop_reason}
    return results
