"""Staged training (text-only -> no-VQ -> full TASTE), each stage initialized from the last."""

import glob
import logging
import os

import torch

from taste_toolkit.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_MODULES = ("aggregator", "quantizer", "decoder")


def find_checkpoint_dir(path):
    """A SpeechBrain checkpoint folder ``CKPT+...`` or an experiment's save folder."""
    if glob.glob(os.path.join(path, "*.ckpt")):
        return path
    ckpts = sorted(glob.glob(os.path.join(path, "CKPT+*")) + glob.glob(os.path.join(path, "save", "CKPT+*")))
    if not ckpts:
        raise ConfigError(
            f"init_from={path!r} holds no checkpoint (expected CKPT+* folders or *.ckpt files). "
            "Run the previous stage first, or clear init_from."
        )
    return ckpts[-1]


def load_previous_stage(path, model, modules=None):
    """Load the modules an earlier stage saved into ``model`` (missing params keep their init).

    Returns the list of ``(module, missing_keys)`` for logging and tests.
    """
    folder = find_checkpoint_dir(path)
    report = []
    for name in modules or DEFAULT_MODULES:
        file = os.path.join(folder, f"{name}.ckpt")
        target = getattr(model, name, None)
        if target is None or not os.path.exists(file):
            continue
        state = torch.load(file, map_location="cpu", weights_only=True)
        own = target.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        missing = sorted(set(own) - set(usable))
        target.load_state_dict(usable, strict=False)
        logger.info("init_from %s: loaded %d tensors into %s (%d kept their init)", folder, len(usable), name, len(missing))
        report.append((name, missing))
    if not report:
        raise ConfigError(f"init_from={path!r}: none of {list(modules or DEFAULT_MODULES)} found in {folder}.")
    return report


#: Stages of the paper's schedule and the YAML overrides that make each one.
STAGE_OVERRIDES = {
    "text_only": {"aggregator_name": "none"},  # the decoder learns text -> units first
    "no_vq": {"quantizer_name": "identity"},  # continuous speech vectors
    "rvq": {},  # the full tokenizer, as the YAML configures it
}


def warmup_stages(text_only_epochs, epochs, no_vq_epochs=0):
    """The default schedule: text-only, then no-VQ, then full TASTE, as in the paper.

    ``hparams/taste.yaml`` builds its ``stages:`` with it. A text-only decoder learns
    text -> units faster per epoch than one that also has to make sense of an aggregator
    and codebooks still moving (dev top-5 0.60 against 0.41 after 3 epochs), and its
    epochs are cheaper (RESULTS.md, session 12). A no-VQ stage then lets the aggregator
    learn where each word is before the RVQ's codebooks are fitted to its vectors:
    fitted on the untrained aggregator's vectors, the codes are soon stale (with a
    whitened code space, layer 0 fell from 213 codes to 15 on dev in the first epoch;
    fitted after one no-VQ epoch it keeps about 140; RESULTS.md, session 15).

    Arguments
    ---------
    text_only_epochs : int
        Epochs of the text-only stage (0 = none).
    epochs : int
        Epochs of the TASTE stage (``number_of_epochs``).
    no_vq_epochs : int
        Epochs of the no-VQ stage between them (0 = none). Both 0 = one stage,
        TASTE from the first step.

    Returns
    -------
    list of dict
        ``stages:`` entries (``[]`` for one stage).

    Example
    -------
    >>> warmup_stages(3, 4, no_vq_epochs=1)
    [{'name': 'text_only', 'epochs': 3}, {'name': 'no_vq', 'epochs': 1}, {'name': 'rvq', 'epochs': 4}]
    >>> warmup_stages(3, 5)
    [{'name': 'text_only', 'epochs': 3}, {'name': 'rvq', 'epochs': 5}]
    >>> warmup_stages(0, 5)
    []
    """
    for name, value in (("text_only_epochs", text_only_epochs), ("number_of_epochs", epochs),
                        ("no_vq_epochs", no_vq_epochs)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {value!r}.")
    stages = [{"name": name, "epochs": n} for name, n in (("text_only", text_only_epochs), ("no_vq", no_vq_epochs))
              if n > 0]
    return stages + [{"name": "rvq", "epochs": epochs}] if stages else []


def parse_stages(stages):
    """Validate a ``stages:`` list before any heavy work.

    Each entry is a mapping: ``name`` (one of :data:`STAGE_OVERRIDES`), ``epochs``
    (>= 1), optional ``init`` (``"previous"``, the default after the first stage;
    ``"none"``, the first stage's default; or the path of a save folder) and
    optional ``overrides`` (more YAML keys for this stage only).

    Returns
    -------
    list of dict
        Normalized entries ``{name, epochs, init, overrides}``.

    Raises
    ------
    ConfigError
        Unknown stage, bad epochs, a first stage told to start from a previous
        one, or duplicate names (each stage writes its own folder).
    """
    if not stages:
        return []
    if not isinstance(stages, (list, tuple)):
        raise ConfigError(f"stages must be a list of {{name, epochs}} mappings, got {stages!r}.")
    out, seen = [], set()
    for k, entry in enumerate(stages):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"stages[{k}] must be a mapping with a name, e.g. {{name: no_vq, epochs: 5}}; got {entry!r}.")
        unknown = set(entry) - {"name", "epochs", "init", "overrides"}
        if unknown:
            raise ConfigError(f"stages[{k}] has unknown keys {sorted(unknown)}; allowed: name, epochs, init, overrides.")
        name = entry["name"]
        if name not in STAGE_OVERRIDES:
            raise ConfigError(f"stages[{k}]: unknown stage {name!r}; choose from {sorted(STAGE_OVERRIDES)}.")
        if name in seen:
            raise ConfigError(f"stages[{k}]: stage {name!r} appears twice; each stage writes its own folder.")
        seen.add(name)
        epochs = entry.get("epochs")
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ConfigError(f"stages[{k}] ({name}): epochs must be an integer >= 1, got {epochs!r}.")
        init = entry.get("init", "previous" if k else "none")
        if init == "previous" and k == 0:
            raise ConfigError(f"stages[0] ({name}) has init: previous but no stage comes before it; "
                              "use init: none or the path of an earlier run's save folder.")
        overrides = entry.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"stages[{k}] ({name}): overrides must be a mapping, got {overrides!r}.")
        out.append({"name": name, "epochs": epochs, "init": init, "overrides": overrides})
    return out


def stage_plan(stages, output_folder):
    """Folders and YAML overrides of every stage.

    The last stage writes to ``output_folder`` itself (its results and export are
    the run's); earlier stages write to ``<output_folder>/stages/<k>_<name>``.

    Returns
    -------
    list of (name, folder, overrides)
    """
    plan, previous = [], None
    for k, stage in enumerate(stages):
        last = k == len(stages) - 1
        folder = output_folder if last else os.path.join(output_folder, "stages", f"{k}_{stage['name']}")
        init = stage["init"]
        init_from = "" if init == "none" else os.path.join(previous, "save") if init == "previous" else init
        overrides = {**STAGE_OVERRIDES[stage["name"]], **stage["overrides"],
                     "number_of_epochs": stage["epochs"], "output_folder": folder, "init_from": init_from,
                     "stages": []}
        if not last:
            overrides["export_folder"] = ""
        plan.append((stage["name"], folder, overrides))
        previous = folder
    return plan
