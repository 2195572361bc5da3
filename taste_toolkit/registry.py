"""Plugin registry: every swappable component is a class registered by kind and name.

A plugin is chosen in YAML by name with a block of plain-data options::

    quantizer_name: rvq
    quantizer_options:
        rvq: {num_quantizers: 4, codebook_size: 512}
        identity: {}
    quantizer: !apply:taste_toolkit.registry.build
        kind: quantizer
        name: !ref <quantizer_name>
        blocks: !ref <quantizer_options>
        input_dim: !ref <encoder_dim>

so ``--quantizer_name=identity`` swaps the plugin and only the selected block is
used (no stale options of the previous plugin leak into the new one).

Third-party plugins register through the ``taste_toolkit.plugins`` entry-point
group or a ``plugin_modules:`` list in the YAML (see :func:`load_plugins`).

Recorded options
----------------
:func:`register` makes every instance of a plugin record its options when its
``__init__`` returns, however it was built (:func:`build`, a YAML ``!new:`` or a
direct call), so no plugin writes them by hand:

* ``build_spec = {"kind", "name", "options"}``: the options the caller passed,
  the plain-data recipe standalone checkpoints save and rebuild from;
* ``options``: every constructor option with defaults filled in, passed through
  the plugin's one hook :meth:`~taste_toolkit.interfaces.Plugin.resolve_options`
  (for derived values such as ``win_length=None`` -> ``n_fft``).
"""

import functools
import importlib
import importlib.metadata
import inspect
import logging
import os
import typing
from collections.abc import Mapping

from taste_toolkit.errors import ConfigError, PluginNotFoundError

logger = logging.getLogger(__name__)

#: Kinds of plugins, in pipeline order.
KINDS = (
    "encoder",
    "aggregator",
    "quantizer",
    "decoder",
    "vocoder",
    "lm_head",
    "units",
    "text_tokenizer",
    "speaker",
    "fusion",
    "metric",
    "codec",
    "segmenter",
)

ENTRY_POINT_GROUP = "taste_toolkit.plugins"

_REGISTRY = {kind: {} for kind in KINDS}
_loaded_builtins = False
_loaded_entry_points = False


def _base_class(kind):
    from taste_toolkit import interfaces

    return interfaces.BASES[kind]


def _check_kind(kind):
    if kind not in _REGISTRY:
        raise ConfigError(
            f"Unknown plugin kind {kind!r}. Kinds are: {', '.join(KINDS)}."
        )


def register(kind, name, *, override=False):
    """Class decorator registering ``cls`` as plugin ``name`` of ``kind``.

    Arguments
    ---------
    kind : str
        One of :data:`KINDS`.
    name : str
        Lower-case snake-case name used in YAML (``<kind>_name: <name>``).
    override : bool
        Replace an existing plugin of the same name instead of failing.

    Example
    -------
    >>> from taste_toolkit.interfaces import Speaker
    >>> @register("speaker", "doc_example", override=True)
    ... class DocSpeaker(Speaker):
    ...     pass
    >>> get("speaker", "doc_example").registry_name
    'doc_example'
    """
    _check_kind(kind)

    def decorator(cls):
        base = _base_class(kind)
        if not (inspect.isclass(cls) and issubclass(cls, base)):
            raise ConfigError(
                f"Plugin {name!r} of kind {kind!r} must subclass "
                f"{base.__module__}.{base.__qualname__}; got {cls!r}."
            )
        existing = _REGISTRY[kind].get(name)
        same_class = existing is not None and (
            existing.__module__,
            existing.__qualname__,
        ) == (cls.__module__, cls.__qualname__)
        if existing is not None and not (override or same_class):
            raise ConfigError(
                f"A {kind} plugin named {name!r} is already registered "
                f"({existing.__module__}.{existing.__qualname__}). Choose another "
                "name or pass override=True."
            )
        cls.registry_kind = kind
        cls.registry_name = name
        _record_options_on_init(cls)
        _REGISTRY[kind][name] = cls
        return cls

    return decorator


def _records_options(klass):
    """True when ``klass`` itself defines an ``__init__`` wrapped by :func:`_record_options_on_init`."""
    return getattr(klass.__dict__.get("__init__"), "_records_options_of", None) is klass


def _record_options_on_init(cls):
    """Wrap ``cls.__init__`` so that instances record ``build_spec`` and ``options``.

    Only the outermost registered ``__init__`` of an instance records (a registered
    subclass calling its registered parent's ``__init__`` records its own options once;
    an unregistered subclass records what it passed to its registered parent).
    """
    if _records_options(cls):
        return
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        outermost = next(k for k in type(self).__mro__ if _records_options(k))
        if outermost is cls:
            _record(self, cls, signature, args, kwargs)

    __init__._records_options_of = cls
    cls.__init__ = __init__


def _named_arguments(signature, arguments):
    """``{name: value}`` of bound arguments without ``self``; ``**kwargs`` flattened."""
    out = {}
    for position, (key, value) in enumerate(arguments.items()):
        param = signature.parameters[key]
        if position == 0 and param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            continue  # self
        if param.kind == param.VAR_KEYWORD:
            out.update(value)
        elif param.kind == param.VAR_POSITIONAL:
            out[key] = list(value)
        else:
            out[key] = value
    return out


def _record(instance, cls, signature, args, kwargs):
    """Set ``instance.build_spec`` (options passed) and ``instance.options`` (all, resolved)."""
    bound = signature.bind(instance, *args, **kwargs)
    passed = _named_arguments(signature, bound.arguments)
    bound.apply_defaults()
    resolved = instance.resolve_options(_named_arguments(signature, bound.arguments))
    if not isinstance(resolved, dict):
        raise TypeError(
            f"{cls.__qualname__}.resolve_options must return a dict of options, got {type(resolved).__name__}."
        )
    try:
        instance.build_spec = {"kind": cls.registry_kind, "name": cls.registry_name, "options": passed}
        instance.options = resolved
    except AttributeError:  # objects with __slots__ cannot carry them
        pass


def _ensure_loaded():
    global _loaded_builtins
    if not _loaded_builtins:
        _loaded_builtins = True
        importlib.import_module("taste_toolkit.plugins")
    load_entry_points()


def load_entry_points(group=ENTRY_POINT_GROUP):
    """Import every module advertised in the ``taste_toolkit.plugins`` group.

    A broken third-party plugin is logged and skipped, so it cannot take the
    toolkit down; set ``TASTE_STRICT_PLUGINS=1`` to make it an error.
    """
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    for entry_point in importlib.metadata.entry_points(group=group):
        try:
            entry_point.load()
        except Exception as exc:  # third-party code: report, do not crash
            if os.environ.get("TASTE_STRICT_PLUGINS") == "1":
                raise
            logger.warning(
                "Skipping plugin entry point %s (%s): %s",
                entry_point.name,
                entry_point.value,
                exc,
            )
    # Only once every entry point was tried: a strict-mode failure retries next time.
    _loaded_entry_points = True


def load_plugins(modules=()):
    """Import plugin modules listed in a YAML ``plugin_modules:`` key.

    Arguments
    ---------
    modules : list of str
        Importable module names; importing them runs their ``@register``.
        An entry ending in ``.yaml`` is a language file instead, registered by
        :func:`taste_toolkit.languages.load_language_file` ("Add a language").

    Returns
    -------
    list of str
        The modules imported (handy as a YAML value).
    """
    _ensure_loaded()
    for module in modules or ():
        if str(module).endswith((".yaml", ".yml")):
            from taste_toolkit.languages import load_language_file

            load_language_file(module)
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"plugin_modules lists {module!r}, which cannot be imported: {exc}. "
                "Install the package that provides it or fix the module name."
            ) from exc
    return list(modules or ())


def available(kind=None):
    """Registered plugin names, ``{kind: [names]}`` or a list for one kind."""
    _ensure_loaded()
    if kind is not None:
        _check_kind(kind)
        return sorted(_REGISTRY[kind])
    return {k: sorted(v) for k, v in _REGISTRY.items()}


def get(kind, name):
    """Return the plugin class registered as ``name`` of ``kind``."""
    _check_kind(kind)
    _ensure_loaded()
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        names = ", ".join(sorted(_REGISTRY[kind])) or "(none)"
        raise PluginNotFoundError(
            f"No {kind} plugin named {name!r}. Available {kind} plugins: {names}."
        ) from None


def plugin_options(cls):
    """Constructor options of a plugin: ``{name: default or inspect._empty}``."""
    params = inspect.signature(cls.__init__).parameters
    return {
        p.name: p.default
        for p in list(params.values())[1:]
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _type_ok(value, annotation):
    """Loose check of plain-data option types; unknown annotations pass."""
    if annotation is inspect.Parameter.empty or value is None:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (str, bool):
        return isinstance(value, annotation)
    if annotation in (list, tuple) or origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    return True


def select_block(kind, name, blocks):
    """Options of plugin ``name`` from per-plugin ``blocks`` (``<kind>_options`` in YAML).

    Arguments
    ---------
    kind, name : str
        Which plugin (``kind`` is used in messages only).
    blocks : dict
        ``{plugin_name: options}``; a missing or empty block means no options.

    Returns
    -------
    dict
        A copy of the block of ``name``.

    Raises
    ------
    ConfigError
        ``blocks`` is not a mapping of mappings, e.g. flat options
        (``{n_iter: 32}`` instead of ``{griffin_lim: {n_iter: 32}}``).
    """
    if not isinstance(blocks, Mapping):
        raise ConfigError(f"{kind}_options must be a mapping {{plugin_name: {{options}}}}, got {blocks!r}.")
    for key, block in blocks.items():
        if block is not None and not isinstance(block, Mapping):
            raise ConfigError(
                f"{kind}_options must map each plugin name to its block of options; key {key!r} holds "
                f"{block!r}. Write the options under the plugin's name, e.g. "
                f"{kind}_options: {{{name}: {{{key}: {block!r}}}}}."
            )
    return dict(blocks.get(name) or {})


def build(kind, name, options=None, blocks=None, **extra):
    """Instantiate plugin ``name`` of ``kind`` with validated options.

    Arguments
    ---------
    kind, name : str
        Which plugin.
    options : dict, optional
        The plugin's own constructor options.
    blocks : dict, optional
        ``{plugin_name: options}``; the block of ``name`` is used (missing
        block = no options). Lets a YAML keep one block per alternative.
    **extra
        Options wired by the caller (shared sizes); they are passed only
        if the plugin accepts them, so one YAML line can feed every alternative.

    Raises
    ------
    PluginNotFoundError
        Unknown name (the message lists the available ones).
    ConfigError
        Unknown, missing or mistyped options (the message names the plugin and
        its accepted options).
    """
    cls = get(kind, name)
    if options is not None and blocks is not None:
        raise ConfigError("Pass either options or blocks to build(), not both.")
    if blocks is not None:
        options = select_block(kind, name, blocks)
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"Options of {kind} plugin {name!r} must be a mapping, got {options!r}.")
    options = dict(options or {})
    accepted = plugin_options(cls)
    params = inspect.signature(cls.__init__).parameters
    takes_var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    accepted_list = ", ".join(
        k if v is inspect.Parameter.empty else f"{k}={v!r}" for k, v in accepted.items()
    )
    unknown = [k for k in options if k not in accepted]
    if unknown and not takes_var_kw:
        raise ConfigError(
            f"Unknown option(s) {', '.join(map(repr, unknown))} for {kind} plugin "
            f"{name!r}. Accepted options: {accepted_list or '(none)'}."
        )
    # Caller-wired sizes fill in only what the plugin accepts and the user left unset.
    for key, value in extra.items():
        if key in accepted and key not in options:
            options[key] = value
    missing = [
        k for k, v in accepted.items() if v is inspect.Parameter.empty and k not in options
    ]
    if missing:
        raise ConfigError(
            f"Missing required option(s) {', '.join(map(repr, missing))} for {kind} "
            f"plugin {name!r}. Accepted options: {accepted_list}."
        )
    hints = _type_hints(cls)
    for key, value in options.items():
        annotation = hints.get(key, params[key].annotation if key in params else None)
        if annotation is not None and not _type_ok(value, annotation):
            raise ConfigError(
                f"Option {key!r} of {kind} plugin {name!r} must be {annotation}, "
                f"got {value!r} ({type(value).__name__}). Accepted options: {accepted_list}."
            )
    # The instance records its plain-data recipe (build_spec: kind, name and these
    # options) and its resolved options itself (see register); standalone checkpoints
    # rebuild it from them through the registry, never from pickles or YAML tags.
    return cls(**options)


def _type_hints(cls):
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # forward refs we cannot resolve: skip type checks
        return {}


def describe(kind=None):
    """Human-readable listing of plugins with options, used by ``taste plugins``."""
    if kind is not None:
        _check_kind(kind)
    lines = []
    for k, names in available().items():
        if kind and k != kind:
            continue
        lines.append(f"{k}:")
        for name in names:
            cls = _REGISTRY[k][name]
            doc = (inspect.getdoc(cls) or "").split("\n")[0]
            lines.append(f"  {name:<20} {doc}")
            for opt, default in plugin_options(cls).items():
                shown = "(required)" if default is inspect.Parameter.empty else repr(default)
                lines.append(f"      {opt} = {shown}")
        if k == "segmenter":
            # Which segmenter and normalizers each language uses (taste_toolkit.languages).
            from taste_toolkit.languages import describe_languages

            lines.extend(describe_languages())
    return "\n".join(lines)
