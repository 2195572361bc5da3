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

Config errors surface as one :class:`~taste_toolkit.errors.ConfigError` *before*
anything is built (:func:`check_config`, on the YAML read as plain data): unknown
keys, overrides whose type differs from the YAML's value, values out of range
(``number_of_epochs: 0``, ``lr: -1``), and ``!PLACEHOLDER`` values nobody filled.
Errors raised while building (plugin options, incompatible plugin dimensions) are
``ConfigError`` too.
"""

import difflib
import logging
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

    Raises
    ------
    ConfigError
        The configuration is invalid (see :func:`check_config`), or building it
        failed on a bad value.
    """
    real, merged = resolve_hparams_file(path, overrides)
    with open(real) as f:
        text = f.read()
    merged = check_config(text, merged, real)
    try:
        hparams = load_hyperpyyaml(text, merged)
    except ConfigError:
        raise
    except (KeyError, ValueError, TypeError) as exc:  # hyperpyyaml / a constructor refusing a value
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ConfigError(f"{path}: cannot build the configuration: {type(exc).__name__}: {msg}") from exc
    return hparams, real, yaml.safe_dump(merged) if merged else ""


#: Keys checked wherever they appear at the top level: ``(kind, minimum, strict)``.
RANGES = {
    "number_of_epochs": ("int", 1, False),
    "lr": ("number", 0, True),
    "max_grad_norm": ("number", 0, True),
    "sample_rate": ("int", 1, False),
    "num_units": ("int", 1, False),
    "num_quantizers": ("int", 1, False),
    "codebook_size": ("int", 2, False),
    "max_duration": ("number", 0, True),
    "seed": ("int", 0, False),
}
#: Keys that must be lists of split names (``train_splits`` and ``dev_splits`` non-empty).
SPLIT_LISTS = {"train_splits": True, "dev_splits": True, "test_splits": False}


def _kind(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _is_tag(value):
    return isinstance(value, str) and value.startswith("!")


def _check_value(where, default, value, problems):
    """Append why ``value`` cannot replace ``default`` (types; mappings recursively); returns the value."""
    if default is None or _is_tag(default) or _is_tag(value):
        return value
    want, got = _kind(default), _kind(value)
    if want == "number" and got == "str":
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    ok = (
        got == want
        or (want == "number" and got == "int")
        or (want == "str" and got in ("int", "number"))
    )
    if not ok:
        article = "an" if want[0] in "aeiou" else "a"
        problems.append(f"{where} must be {article} {want} (like the YAML's {default!r}), got {value!r} ({got})")
        return value
    if want == "mapping":
        return {k: _check_value(f"{where}.{k}", default.get(k), v, problems) for k, v in value.items()}
    return value


def _placeholders(tree, overrides, where=""):
    """Paths of ``!PLACEHOLDER`` values in ``tree`` that ``overrides`` does not fill."""
    out = []
    for key, value in (tree or {}).items() if isinstance(tree, dict) else []:
        given = overrides.get(key) if isinstance(overrides, dict) else None
        path = f"{where}{key}"
        if value == "!PLACEHOLDER" and (not isinstance(overrides, dict) or key not in overrides):
            out.append(path)
        elif isinstance(value, dict):
            out += _placeholders(value, given if isinstance(given, dict) else {}, path + ".")
    return out


def _range_problems(values):
    problems = []
    for key, (kind, minimum, strict) in RANGES.items():
        value = values.get(key)
        if value is None or _is_tag(value):
            continue
        if _kind(value) not in (("int",) if kind == "int" else ("int", "number")):
            problems.append(f"{key} must be a{'n integer' if kind == 'int' else ' number'}, got {value!r}")
        elif value < minimum or (strict and value == minimum):
            problems.append(f"{key} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    for key, required in SPLIT_LISTS.items():
        value = values.get(key)
        if value is None or _is_tag(value):
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            problems.append(f"{key} must be a list of split names like [train], got {value!r}")
        elif required and not value:
            problems.append(f"{key} must name at least one split")
    return problems


def check_config(yaml_text, overrides, path="the YAML"):
    """Validate a hyperpyyaml file and its overrides as plain data, before anything is built.

    Arguments
    ---------
    yaml_text : str
        The YAML (tags are not evaluated: they read as strings).
    overrides : dict
        Merged overrides (override file + command line).
    path : str
        Named in the message.

    Returns
    -------
    dict
        ``overrides``, with numbers that YAML read as strings (``1e-3``) converted.

    Raises
    ------
    ConfigError
        Listing every problem: unknown keys (with close matches), wrong types,
        values out of range, unfilled ``!PLACEHOLDER`` values.
    """
    defaults = yaml.load(yaml_text, Loader=_PlainLoader) or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path} must be a mapping of keys to values, got {type(defaults).__name__}.")
    problems, checked, mistyped = [], {}, set()
    for key, value in (overrides or {}).items():
        if key not in defaults:
            close = difflib.get_close_matches(str(key), [str(k) for k in defaults], n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"unknown key {key!r}{hint}; an override must name a key of the YAML")
            continue
        before = len(problems)
        checked[key] = _check_value(key, defaults[key], value, problems)
        if len(problems) > before:
            mistyped.add(key)
    missing = _placeholders(defaults, checked)
    if missing:
        problems.append(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} !PLACEHOLDER: give "
                        + " ".join(f"--{m}=..." for m in missing))
    values = {k: v for k, v in {**defaults, **checked}.items() if k not in mistyped}  # reported once
    problems += _range_problems(values)
    if values.get("stages") and not _is_tag(values["stages"]):  # a built list is checked when built
        from taste_toolkit.training.staging import parse_stages

        try:  # the staged schedule is checked before any stage builds or reads anything
            parse_stages(values["stages"])
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(f"Invalid configuration {path}: " + "; ".join(problems)
                          + ". Fix the YAML or the --key=value overrides.")
    return checked


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
    quiet_library_debug_logs()
    return hparams, run_opts


# Libraries whose DEBUG records SpeechBrain's file handler would keep: numba's compiler
# alone wrote 35,000 of the 54,000 lines of a main job's log.txt (session 12).
QUIET_LOGGERS = ("numba", "matplotlib", "PIL", "h5py", "urllib3", "fsspec")


def quiet_library_debug_logs(level=logging.INFO):
    """Raise third-party loggers (``QUIET_LOGGERS``) to ``level`` so log.txt keeps the run's own records."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)
