"""Reading a local copy of the official release without running any of its code.

* :func:`resolve_source` -- a local folder, or a hub id fetched with
  ``huggingface_hub.snapshot_download`` (safetensors, JSON and tokenizer files only;
  a clear error when the hub cannot be reached).
* :class:`Checkpoint` -- the safetensors weights (``model.safetensors`` or
  ``model.safetensors.index.json`` + shards): headers are parsed up front (names,
  dtypes, shapes; nothing loaded), every listed shard must exist, pickles are refused.
  :meth:`Checkpoint.tensors` gives a lazy mapping that reads one tensor at a time,
  shard by shard, from memory-mapped files.
* :func:`write_safetensors` -- writes a safetensors file tensor by tensor (peak
  memory: one tensor), for the 1B-parameter LLM backbone.
"""

import json
import os
import struct
from collections.abc import Mapping

import torch

from taste_toolkit.errors import InputError, MissingResourceError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: What snapshot_download fetches: never pickles, never code.
HUB_PATTERNS = ["config.json", "*.safetensors", INDEX_FILE, "llama_tokenizer/*", "cosyvoice/*.onnx"]
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


def resolve_source(src, revision=None):
    """Local folder of the release: ``src`` itself, or its hub snapshot.

    Raises
    ------
    MissingResourceError
        ``src`` is neither a folder nor a reachable hub id (offline, unknown repository).
    """
    src = str(src)
    if os.path.isdir(src):
        return os.path.abspath(src)
    parts = src.split("/")
    if os.path.exists(src) or len(parts) != 2 or not all(parts) or src.startswith((".", "~")):
        raise MissingResourceError(f"{src!r} is not a folder with the release (config.json, *.safetensors, "
                                   "llama_tokenizer/) nor a hub id like MediaTek-Research/Llama-1B-TASTE-V0.")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(src, revision=revision, allow_patterns=HUB_PATTERNS)
    except Exception as exc:  # offline (LocalEntryNotFoundError, connection errors), unknown or gated repo
        raise MissingResourceError(
            f"Cannot fetch {src!r} from the Hugging Face hub ({type(exc).__name__}: {str(exc)[:200]}). Without hub "
            f"access, download it elsewhere (huggingface-cli download {src} --local-dir DIR) and pass DIR."
        ) from exc


def read_header(path):
    """``{name: (dtype name, shape)}`` of a safetensors file from its header (no tensor is read).

    Raises
    ------
    InputError
        The file is not a safetensors file (e.g. a renamed pickle) or is truncated.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if n <= 0 or n > min(MAX_HEADER, size - 8):
            raise InputError(f"{path} is not a safetensors file (bad header; a pickle renamed .safetensors?). "
                             "Only safetensors weights are read.")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path} has a corrupt safetensors header ({exc}).") from exc
    out, end = {}, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info.get("dtype") not in DTYPES:
            raise InputError(f"Tensor {name} in {path} has unsupported dtype {info.get('dtype')!r}.")
        out[name] = (info["dtype"], tuple(info["shape"]))
        end = max(end, info["data_offsets"][1])
    if 8 + n + end > size:
        raise InputError(f"{path} is truncated: its header describes {8 + n + end} bytes, the file has {size}. "
                         "Download it again.")
    return out


class Checkpoint:
    """The release's weights: shard list, tensor names, dtypes and shapes (headers only).

    Arguments
    ---------
    folder : str
        Local folder of the release.

    Raises
    ------
    InputError
        A pickle checkpoint in place of safetensors, an index naming a non-safetensors
        file, a corrupt shard, a tensor listed twice.
    MissingResourceError
        No weights at all, or a shard listed in the index is missing.
    """

    def __init__(self, folder):
        self.folder = folder
        index = os.path.join(folder, INDEX_FILE)
        if os.path.isfile(index):
            try:
                with open(index) as f:
                    weight_map = json.load(f)["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise InputError(f"{index} is not a safetensors index with a weight_map ({exc}).") from exc
            shards = sorted(set(weight_map.values()))
        elif os.path.isfile(os.path.join(folder, SINGLE_FILE)):
            weight_map, shards = None, [SINGLE_FILE]
        else:
            pickles = sorted(f for f in os.listdir(folder) if f.endswith(PICKLE_SUFFIXES) or ".bin.index" in f)
            if pickles:
                raise InputError(f"{os.path.join(folder, pickles[0])} is a pickle checkpoint: it is never loaded "
                                 "(unpickling can run code). Use the release's safetensors files "
                                 f"({SINGLE_FILE} or {INDEX_FILE} + shards).")
            raise MissingResourceError(f"No weights in {folder}: expected {SINGLE_FILE} or {INDEX_FILE} + shards.")
        for shard in shards:
            path = os.path.join(folder, shard)
            if not shard.endswith(".safetensors") or shard.endswith(PICKLE_SUFFIXES):
                raise InputError(f"{INDEX_FILE} lists {shard!r}, which is not a safetensors file; pickle shards "
                                 "are never loaded (unpickling can run code).")
            if not os.path.isfile(path):
                raise MissingResourceError(f"Shard {path} listed in {INDEX_FILE} is missing: the download is "
                                           "incomplete. Download it again.")
        self.shards = shards
        self.location, self.info = {}, {}
        for shard in shards:
            for name, info in read_header(os.path.join(folder, shard)).items():
                if name in self.location:
                    raise InputError(f"Tensor {name} is stored twice ({self.location[name]} and {shard}).")
                self.location[name], self.info[name] = shard, info
        if weight_map is not None:
            for name, shard in weight_map.items():
                if self.location.get(name) != shard:
                    raise InputError(f"{INDEX_FILE} puts tensor {name} in {shard}, which does not hold it.")
        self._handles = {}

    def names(self, prefix=""):
        """Sorted tensor names starting with ``prefix``."""
        return sorted(n for n in self.location if n.startswith(prefix))

    def shape(self, name):
        return self.info[name][1]

    def dtype(self, name):
        return DTYPES[self.info[name][0]]

    def numel(self, name):
        n = 1
        for s in self.shape(name):
            n *= s
        return n

    def nbytes(self, name):
        return self.numel(name) * torch.empty((), dtype=self.dtype(name)).element_size()

    def get(self, name):
        """Read one tensor (CPU, its stored dtype)."""
        from safetensors import safe_open

        shard = self.location[name]
        if shard not in self._handles:
            self._handles[shard] = safe_open(os.path.join(self.folder, shard), framework="pt", device="cpu")
        return self._handles[shard].get_tensor(name)

    def tensors(self, prefix):
        """Lazy ``{name without prefix: tensor}`` mapping of the tensors under ``prefix``."""
        return LazyTensors(self, prefix)

    def close(self):
        self._handles.clear()


class LazyTensors(Mapping):
    """Read-only mapping reading each tensor when asked (sorted by shard, then name)."""

    def __init__(self, checkpoint, prefix):
        self.checkpoint, self.prefix = checkpoint, prefix
        names = checkpoint.names(prefix)
        names.sort(key=lambda n: (checkpoint.location[n], n))
        self._keys = [n[len(prefix):] for n in names]
        self._set = set(self._keys)

    def __getitem__(self, key):
        if key not in self._set:
            raise KeyError(key)
        return self.checkpoint.get(self.prefix + key)

    def __contains__(self, key):
        return key in self._set

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


def write_safetensors(path, entries, metadata=None):
    """Write a safetensors file one tensor at a time.

    Arguments
    ---------
    path : str
    entries : list of (name, dtype, shape, read)
        ``read()`` returns the tensor (called once, in name order, then dropped).
    metadata : dict of str, optional

    Raises
    ------
    InputError
        A tensor read does not have the announced dtype or shape.
    """
    entries = sorted(entries, key=lambda e: e[0])
    header, offset = {}, 0
    for name, dtype, shape, _ in entries:
        size = torch.empty((), dtype=dtype).element_size()
        for s in shape:
            size *= s
        header[name] = {"dtype": NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, dtype, shape, read in entries:
            t = read()
            if t.dtype != dtype or tuple(t.shape) != tuple(shape):
                raise InputError(f"Tensor {name}: got {t.dtype} {tuple(t.shape)}, expected {dtype} {tuple(shape)}.")
            f.write(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            del t


def check_no_code(folder):
    """Refuse nothing, but list files of ``folder`` that are code or pickles (never used)."""
    found = []
    for root, _, files in os.walk(folder):
        for f in files:
            if f.endswith(PICKLE_SUFFIXES + (".py",)):
                found.append(os.path.relpath(os.path.join(root, f), folder))
    return sorted(found)


__all__ = ["Checkpoint", "LazyTensors", "read_header", "resolve_source", "write_safetensors", "check_no_code"]
