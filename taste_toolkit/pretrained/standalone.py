"""Standalone checkpoints: plain data + safetensors, rebuilt through the registry.

A checkpoint is one folder::

    taste_config.json        format, version, and per component: kind, name, options
    model.safetensors        every module's weights, keys prefixed by component role
    <role>/...               files a component exported (tokenizer files, configs)

Loading never runs code from the folder: the config is JSON (no hyperpyyaml tags
are evaluated; a value that looks like one is refused), components are built by
registry name from *installed* plugins only (no ``plugin_modules`` import), and
weights are read with safetensors only (pickle files are refused), ``"./"`` paths
in options cannot leave the folder, and plugins that evaluate code-bearing files
(the cosyvoice vocoder's hyperpyyaml) are refused unless ``allow_code=True``.
Options naming anything outside the folder (an absolute path, a path relative to
the current directory, a hub id) are refused unless ``allow_external=True``; a
folder may always name its own files (``"./..."``) and ``builtin:`` sources.
Training YAMLs, in contrast, are code: only run YAML files you trust.

Export hook: a component may define ``export(folder) -> dict`` that writes its
files into ``folder`` and returns option overrides; override values starting with
``"./"`` are paths inside that folder and are resolved again at load time.
"""

import json
import logging
import os
from pathlib import Path

from taste_toolkit import registry
from taste_toolkit.errors import ConfigError, InputError, MissingResourceError, TasteError
from taste_toolkit.utils import atomic_write

logger = logging.getLogger(__name__)

FORMAT = "taste-toolkit/standalone"
FORMAT_VERSION = 1
CONFIG_FILE = "taste_config.json"
WEIGHTS_FILE = "model.safetensors"
#: Plugins whose construction evaluates code-bearing files named by their options (the
#: cosyvoice vocoder runs its folder's ``cosyvoice.yaml``, hyperpyyaml with ``!new:``
#: tags). A plugin class can also declare ``executes_files = True``. They are built
#: from a standalone folder only with ``allow_code=True``.
CODE_EXECUTING_PLUGINS = {("vocoder", "cosyvoice")}
#: hyperpyyaml tags: meaningful (executable) in training YAMLs, never in checkpoints.
_YAML_TAGS = ("!new:", "!apply:", "!name:", "!ref", "!copy", "!include:", "!tuple", "!module:", "!PLACEHOLDER")
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


def _check_plain(value, where):
    """Raise ConfigError unless ``value`` is JSON-able plain data without YAML tags."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: option keys must be strings, got {k!r}.")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif isinstance(value, str):
        if value.lstrip().startswith(_YAML_TAGS):
            raise ConfigError(
                f"{where} = {value!r} is a hyperpyyaml tag; standalone checkpoints hold plain data "
                "only and never evaluate tags. Re-export the checkpoint with save_pretrained."
            )
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise ConfigError(
            f"{where} = {value!r} ({type(value).__name__}) is not plain data (str, number, bool, "
            "list, dict); plugin options must be plain data to be saved."
        )


def _state_dict(module):
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_components(folder, components, metadata=None):
    """Write ``components`` (role -> plugin built by ``registry.build``, or None).

    Arguments
    ---------
    folder : str or Path
        Output folder (created; existing checkpoint files are replaced).
    components : dict
        ``{role: plugin}``. Every plugin must have been built through
        :func:`taste_toolkit.registry.build` (it carries ``build_spec``).
    metadata : dict, optional
        Extra plain data stored under ``"metadata"``.
    """
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, "version": FORMAT_VERSION, "components": {}, "metadata": metadata or {}}
    tensors = {}
    for role, obj in components.items():
        if obj is None:
            config["components"][role] = None
            continue
        spec = getattr(obj, "build_spec", None)
        if spec is None:
            raise ConfigError(
                f"Component {role!r} ({type(obj).__name__}) was not built by taste_toolkit.registry.build, "
                "so it cannot be rebuilt from plain data; build it through the registry (YAML: "
                "!apply:taste_toolkit.registry.build)."
            )
        options = dict(spec["options"])
        if hasattr(obj, "export"):
            options.update(obj.export(str(folder / role)))
        _check_plain(options, f"{role} options")
        config["components"][role] = {"kind": spec["kind"], "name": spec["name"], "options": options}
        if isinstance(obj, torch.nn.Module):
            tensors.update({f"{role}.{k}": v for k, v in _state_dict(obj).items()})
    _check_plain(config["metadata"], "metadata")
    # Tied weights share storage, which safetensors refuses: store copies.
    seen, payload = set(), {}
    for key, value in tensors.items():
        ptr = value.untyped_storage().data_ptr() if value.numel() else None
        payload[key] = value.clone() if ptr in seen else value
        if ptr is not None:
            seen.add(ptr)
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(payload, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, folder / WEIGHTS_FILE)
    config["weights_bytes"] = (folder / WEIGHTS_FILE).stat().st_size
    # The config goes last: a folder without it is an unfinished save.
    with atomic_write(folder / CONFIG_FILE) as f:
        f.write(json.dumps(config, indent=2, sort_keys=True))
    return folder


def read_config(folder):
    """Read and validate ``taste_config.json`` of a checkpoint folder (no building)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingResourceError(f"Checkpoint folder {str(folder)!r} does not exist.")
    path = folder / CONFIG_FILE
    if not path.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        hint = (
            f" It holds pickle files ({', '.join(pickles[:3])}), which are never loaded because "
            "unpickling can run code; export the model with TasteTokenizer.save_pretrained."
            if pickles else " Save one with TasteTokenizer.save_pretrained (or the recipe's export)."
        )
        raise MissingResourceError(f"{str(folder)!r} is not a standalone TASTE checkpoint: no {CONFIG_FILE}.{hint}")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); the checkpoint is corrupt, re-export it.") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise InputError(f"{path} is not a {FORMAT} config (format={config.get('format') if isinstance(config, dict) else None!r}).")
    version = config.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(
            f"{path} has format version {version!r}; this taste-toolkit reads version <= {FORMAT_VERSION}. "
            "Upgrade taste-toolkit."
        )
    components = config.get("components")
    if not isinstance(components, dict):
        raise InputError(f"{path} has no 'components' mapping.")
    for role, spec in components.items():
        if spec is None:
            continue
        if not isinstance(spec, dict) or not {"kind", "name", "options"} <= set(spec):
            raise InputError(f"{path}: component {role!r} needs kind, name and options, got {spec!r}.")
        _check_plain(spec["options"], f"{role} options")
    _check_plain(config.get("metadata", {}), "metadata")
    return config


def _resolve_paths(options, folder):
    """``"./x"`` option values -> paths inside the component's folder (never outside it)."""
    out = {}
    root = os.path.realpath(folder)
    for k, v in options.items():
        if isinstance(v, str) and v.startswith("./"):
            path = os.path.realpath(os.path.join(root, v[2:]))
            if path != root and not path.startswith(root + os.sep):
                raise ConfigError(
                    f"Option {k}={v!r} points outside the checkpoint folder ({path}); a standalone checkpoint "
                    "may only reference its own files. Re-export it with save_pretrained."
                )
            v = path
        out[k] = v
    return out


#: Option names whose string value names a file, folder or hub model (a plugin loads it).
PATH_OPTIONS = {"source", "model", "model_path", "model_dir", "init_from_whisper", "path", "checkpoint"}
_PATH_SUFFIXES = ("_path", "_dir", "_file", "_folder", "_source", "_checkpoint")


def _is_path_option(key):
    return key in PATH_OPTIONS or key.endswith(_PATH_SUFFIXES)


def external_reference(key, value):
    """Why option ``key=value`` of a checkpoint names something outside its folder, or None.

    Parameters
    ----------
    key : str
        Option name.
    value : object
        Option value as stored in ``taste_config.json``.

    Returns
    -------
    str or None
        ``"an absolute path"``, ``"a path leaving ..."`` or ``"a hub id or a path relative
        to the current directory"``; None when the value stays inside the folder: not a
        string, empty, ``"./..."`` (resolved inside the folder), or ``"builtin:..."``.
    """
    if not isinstance(value, str):
        return None
    v = value.strip()
    if not v or v.startswith("builtin:") or v.startswith("./"):
        return None
    if os.path.isabs(v) or v.startswith("~") or (len(v) > 1 and v[1] == ":" and v[0].isalpha()):
        return "an absolute path"
    if ".." in v.replace("\\", "/").split("/"):
        return "a path leaving the folder ('..')"
    if _is_path_option(key):
        return "a hub id or a path relative to the current directory"
    return None


def _check_external(role, spec, folder, allow_external):
    """Refuse options that name files or models outside the checkpoint folder, unless allowed."""
    if allow_external:
        return
    for key, value in spec["options"].items():
        why = external_reference(key, value)
        if why is not None:
            raise ConfigError(
                f"Component {role!r} ({spec['kind']} {spec['name']!r}) of {Path(folder) / CONFIG_FILE} has option "
                f"{key}={value!r}, {why}: it names something outside the tokenizer folder, which is not loaded by "
                "default (a folder should only use its own './...' files and builtin: sources). If you trust the "
                "folder and what it names, opt in: TasteTokenizer.from_pretrained(folder, allow_external=True), "
                "or --allow-external on the taste command line. Otherwise re-export the tokenizer with that "
                "file inside the folder."
            )


def _executes_files(kind, name):
    if (kind, name) in CODE_EXECUTING_PLUGINS:
        return True
    try:
        return bool(getattr(registry.get(kind, name), "executes_files", False))
    except Exception:  # unknown plugin: registry.build reports it
        return False


def load_components(folder, device="cpu", allow_code=False, allow_external=False):
    """Rebuild every component of a checkpoint and load its weights.

    Returns
    -------
    components : dict
        ``{role: plugin or None}``, modules in eval mode on ``device``.
    config : dict
        The validated ``taste_config.json``.

    Arguments
    ---------
    folder : str or Path
    device : str
    allow_code : bool
        Build plugins that evaluate code-bearing files named by their options
        (:data:`CODE_EXECUTING_PLUGINS`). Off by default: only for folders you trust.
    allow_external : bool
        Follow options that name files or models outside the folder (absolute paths,
        paths relative to the current directory, hub ids; see
        :func:`external_reference`). Off by default: ``"./..."`` files of the folder
        and ``builtin:`` sources are always allowed.

    Raises
    ------
    MissingResourceError
        Missing folder, config or weights, or a plugin that is not installed.
    InputError
        Corrupt or partial files, a newer format version, weights that do not match,
        a component that fails to build from its files.
    ConfigError
        YAML tags or non-plain values in the config, paths leaving the folder, a
        code-executing plugin without ``allow_code``, an option naming something
        outside the folder without ``allow_external``.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise MissingResourceError(f"{weights} is missing: the checkpoint is partial; re-export it.")
    expected = config.get("weights_bytes")
    if expected is not None and weights.stat().st_size != expected:
        raise InputError(
            f"{weights} has {weights.stat().st_size} bytes, the config says {expected}: the checkpoint "
            "is partial or was modified; re-export or re-copy it."
        )
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{weights} cannot be read as safetensors ({exc}); re-export the checkpoint.") from exc
    registry.load_entry_points()  # installed third-party plugins; never modules named by the folder
    components = {}
    for role, spec in config["components"].items():
        if spec is None:
            components[role] = None
            continue
        if _executes_files(spec["kind"], spec["name"]) and not allow_code:
            raise ConfigError(
                f"Component {role!r} is the {spec['kind']} plugin {spec['name']!r}, which runs code from the files "
                f"named by its options; it is not built from a checkpoint folder unless you trust the folder: "
                "TasteTokenizer.from_pretrained(folder, allow_code=True)."
            )
        _check_external(role, spec, folder, allow_external)
        options = _resolve_paths(spec["options"], folder / role)
        try:
            obj = registry.build(spec["kind"], spec["name"], options)
        except TasteError:
            raise
        except Exception as exc:  # a plugin's own loader refusing a corrupt or hostile file
            raise InputError(
                f"Component {role!r} ({spec['kind']} {spec['name']!r}) of {folder} cannot be built from its files: "
                f"{type(exc).__name__}: {exc}. The checkpoint is corrupt or not trustworthy; re-export it."
            ) from exc
        if isinstance(obj, torch.nn.Module):
            prefix = role + "."
            own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                obj.load_state_dict(own, strict=True)
            except RuntimeError as exc:
                raise InputError(f"Weights of {role!r} in {weights} do not match its config: {exc}") from exc
            obj.to(device).eval()
        components[role] = obj
    return components, config
