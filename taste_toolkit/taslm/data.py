"""TASLM training data: word-level TASTE codes of every utterance, computed once and cached.

The stage-1 tokenizer is frozen, so each utterance's TASTE tokens never change:
they are computed with ``TasteTokenizer.encode`` once per (tokenizer, manifest)
and stored as plain tensors (``results/prepared/taslm_tokens/<split>_<key>.pt``).
"""

import logging
import os

import torch
from tqdm import tqdm

from taste_toolkit.audio import load_audio
from taste_toolkit.data.manifest import read_manifest
from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.utils import stable_hash

logger = logging.getLogger(__name__)

#: What to do when a manifest is missing (raised as a MissingManifestError, a MissingResourceError).
MISSING_MANIFEST_HINT = ("Run the stage-1 recipe first (python recipes/librispeech/train.py hparams/taste.yaml), "
                         "which prepares the corpus and its manifests.")


def word_level_codes(tokens):
    """``(W, R)`` codes, one row per word, from :class:`~taste_toolkit.tokens.TasteTokens`.

    Word-level tokenizers give that directly; token-level ones give one row per
    text token, and the row of each word's first token is kept (the official
    bridge's choice).
    """
    if tokens.codes is None:
        raise ConfigError("These TASTE tokens have no RVQ codes (no-VQ or text-only tokenizer); TASLM needs codes.")
    if tokens.level == "word":
        return tokens.codes.long()
    if tokens.level == "token":
        word_ids = tokens.word_ids.tolist()
        first = [i for i, w in enumerate(word_ids) if i == 0 or word_ids[i - 1] != w]
        return tokens.codes[first].long()
    raise ConfigError(f"TASLM needs word- or token-level TASTE tokens, got level {tokens.level!r}.")


@torch.no_grad()
def encode_manifest(tokenizer, manifest, cache_dir, batch_size=8):
    """Word-level TASTE codes of every utterance of ``manifest`` (cached).

    Returns
    -------
    list of dict
        ``{"id", "spk_id", "words" (list of str), "codes" (W, R) long}`` in manifest order.
    """
    rows = read_manifest(manifest, columns=("ID", "wav", "wrd"), missing_hint=MISSING_MANIFEST_HINT)
    key = stable_hash([tokenizer.fingerprint, [(r["ID"], r["wav"], r["wrd"]) for r in rows]])
    name = os.path.splitext(os.path.basename(manifest))[0]
    path = os.path.join(cache_dir, f"{name}_{key}.pt")
    if os.path.exists(path):
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # truncated by an interruption: rebuild
            logger.warning("TASLM token cache %s unreadable; recomputing.", path)
    records = []
    for s in tqdm(range(0, len(rows), batch_size), desc=f"TASTE tokens {name}"):
        chunk = rows[s:s + batch_size]
        wavs = [load_audio(r["wav"], 16000) for r in chunk]
        toks = tokenizer.encode(wavs, [16000] * len(chunk), [r["wrd"] for r in chunk])
        for r, t in zip(chunk, toks):
            codes = word_level_codes(t)
            if codes.shape[0] != len(t.words):
                raise InputError(f"{r['ID']}: {codes.shape[0]} TASTE tokens for {len(t.words)} words.")
            records.append({"id": r["ID"], "spk_id": str(r.get("spk_id", "")), "words": list(t.words), "codes": codes})
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + ".tmp"
    torch.save(records, tmp)
    os.replace(tmp, path)
    return records


class TaslmDataset(torch.utils.data.Dataset):
    """Records laid out by a :class:`~taste_toolkit.taslm.bridge.WordBridge` on access."""

    def __init__(self, records, bridge):
        if not records:
            raise InputError("Empty TASLM dataset.")
        self.records, self.bridge = records, bridge

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        return r["id"], self.bridge.build(r["words"], r["codes"])

    def collate(self, items):
        ids, examples = zip(*items)
        return self.bridge.collate(list(examples), ids)
