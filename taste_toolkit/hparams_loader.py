"""Load hyperpyyaml files, including small override files that name a base.

An override file is a whole experiment written as a difference::

    base: ../taste.yaml          # relative to this file
    overrides:
        experiment_name: text_only
        aggregator_name: none

Command-line overrides are applied on top of the file's. hyperpyyaml merges
nested mappings, so overriding one option of a plugin block keeps the others;
choosing a different plugin (``<kind>_name``) uses that plugin's own block, so no
option of the previous plugin leaks in.
"""

import os

import yaml
from hyperpyyaml import load_hyperpyyaml

from taste_toolkit.errors import ConfigError


def _as_dict(overrides):
    if overrides is None or overrides == "":
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    loaded = yaml.safe_load(overrides)
    return dict(loaded or {})


def _merge(base, extra):
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_hparams_file(path, overrides=None):
    """Follow ``base:`` links; returns ``(real yaml path, merged overrides dict)``."""
    overrides = _as_dict(overrides)
    seen = []
    while True:
        with open(path) as f:
            text = f.read()
        head = yaml.load(text, Loader=_PlainLoader) if "base:" in text else None
        if not (isinstance(head, dict) and "base" in head and set(head) <= {"base", "overrides"}):
            return path, overrides
        if path in seen:
            raise ConfigError(f"hparams files form a cycle: {seen + [path]}")
        seen.append(path)
        overrides = _merge(_as_dict(head.get("overrides")), overrides)
        path = os.path.normpath(os.path.join(os.path.dirname(path), head["base"]))
        if not os.path.exists(path):
            raise ConfigError(f"{seen[-1]} names base {head['base']!r}, which does not exist ({path}).")


def load_hparams(path, overrides=None):
    """Load ``path`` (a full hyperpyyaml file or an override file).

    Returns ``(hparams, real path, overrides as YAML text)``; the last two are what
    ``speechbrain.create_experiment_directory`` needs to save the resolved config.
    """
    real, merged = resolve_hparams_file(path, overrides)
    with open(real) as f:
        hparams = load_hyperpyyaml(f, merged)
    return hparams, real, yaml.safe_dump(merged) if merged else ""


class _PlainLoader(yaml.SafeLoader):
    """Safe loader that keeps hyperpyyaml tags as plain strings (we only read ``base``)."""


def _tag_as_string(loader, suffix, node):
    return f"!{suffix}"


_PlainLoader.add_multi_constructor("!", _tag_as_string)


#: Training task named by a YAML's top-level ``task:`` key -> module whose ``main(argv)`` runs it.
#: ``taste`` (the default, no key needed) is the stage-1 tokenizer recipe itself.
TASKS = {
    "taste": None,
    "taslm": "taste_toolkit.training.taslm_recipe",
    "lmspt": "taste_toolkit.training.lmspt_recipe",
}


def peek_task(argv):
    """The ``task:`` of the YAML named first in ``argv`` (``"taste"`` when absent).

    Read with a safe loader (tags stay strings) before anything is built, so one
    ``train.py`` entry point serves every stage and the YAML picks the trainer.
    """
    if not argv or argv[0].startswith("-"):
        return "taste"
    path, overrides = resolve_hparams_file(argv[0])
    with open(path) as f:
        head = yaml.load(f, Loader=_PlainLoader) or {}
    task = overrides.get("task", head.get("task", "taste"))
    for arg in argv[1:]:  # a command-line --task=... wins, as for any key
        if arg.startswith("--task="):
            task = arg.split("=", 1)[1]
    if task not in TASKS:
        raise ConfigError(f"{argv[0]}: unknown task {task!r}; known tasks are {', '.join(TASKS)}.")
    return task


def setup_experiment(argv):
    """Recipe start-up shared by every ``train*.py``: parse, init DDP, load, create the folder.

    Returns
    -------
    hparams : dict
    run_opts : dict
        SpeechBrain run options (device, precision, ...).
    """
    import speechbrain as sb

    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    # Ablation files are small override files on top of a base YAML.
    hparams, hparams_file, overrides = load_hparams(hparams_file, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )
    return hparams, run_opts
