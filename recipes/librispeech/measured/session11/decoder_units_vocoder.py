#!/usr/bin/env python3
"""Session-11 experiment (kept as its record, not part of the toolkit): a vocoder trained on the
ground-truth units AND on the unit decoder's own teacher-forced predictions of the same
utterances, swapped into a copy of an exported tokenizer.

The idea: TASTE reconstructions lose WER against the units topline because the decoder's
units differ from the true ones; a vocoder that has seen those differences might render them
better. It did not (RESULTS.md, session 11: TASTE 0.866 against 0.765, +0.101 [-0.037, 0.233]).

    cd FRESH_CLONE   # after the main job with 8 epochs and a 2500-step vocoder (as the script trains)
    python recipes/librispeech/measured/session11/decoder_units_vocoder.py . results/taste_aware_mix mix
    taste evaluate --config recipes/librispeech/measured/session11/decoder_units_vocoder.yaml --threads 1
"""
import glob, os, shutil, sys

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open
from taste_toolkit.api import TasteTokenizer
from taste_toolkit.training import unit_vocoder as uv
from taste_toolkit.data.unit_cache import read_manifest
from taste_toolkit.evaluation.probe import read_metadata
from taste_toolkit.plugins.vocoder.unit_to_spec import UnitToSpecVocoder
from taste_toolkit.models.tokenizer import SpeechTokens
from taste_toolkit.data.word_alignment import unit_word_ids
torch.set_num_threads(1)
root, out = sys.argv[1], sys.argv[2]   # fresh clone folder, output tokenizer folder
mode = sys.argv[3] if len(sys.argv) > 3 else "mix"
tok = TasteTokenizer.from_pretrained(f"{root}/results/taste/1986/tokenizer")
meta = {r["id"]: r for r in read_metadata(f"{root}/results/synthetic_corpus/train")}
manifest = f"{root}/results/prepared/manifests/synthetic_corpus/train.csv"
unit_file = [p for p in glob.glob(f"{root}/results/prepared/units/units-train-*.safetensors")][0]
speakers = torch.load(glob.glob(f"{root}/results/prepared/speaker/speaker_*.pt")[0], weights_only=True)
rows = read_manifest(manifest)
gt = uv._load_pairs(tok.units, rows, unit_file, 320, speakers)
pred_pairs, hits, total = [], 0, 0
model = tok.model
for row, (units, wav, spk) in zip(rows, gt):
    m = meta[row["ID"]]
    tokens = tok.encode(wav[: int(float(row["duration"]) * 16000)], 16000, m["text"])
    extra = {"word_ids": tokens.word_ids[None], "unit_word_ids": unit_word_ids([float(s) for s in m["word_start"]], units.numel(), tok.units.frame_rate)[None]}
    text = tokens.text_ids[None]; tl = torch.tensor([text.shape[1]])
    r = tok._speech_rows(tokens)
    st = SpeechTokens(r[None], None, torch.tensor([r.shape[0]]), tokens.level)
    speech, sl = model.speech_for_decoder(st, tokens.word_ids[None], tl)
    with torch.no_grad():
        o = model.decoder(text, tl, speech, sl, units[None], torch.tensor([units.numel()]), None, **extra)
    valid = o.targets != -100
    p = o.logits[valid].argmax(-1)
    assert p.numel() == units.numel(), (p.numel(), units.numel())
    hits += int((p == units).sum()); total += units.numel()
    pred_pairs.append((p.long(), wav, spk))
print("train teacher-forced top-1", hits / total, flush=True)
pairs = gt + pred_pairs if mode == "mix" else pred_pairs
opts = dict(tok.vocoder.options); 
voc = UnitToSpecVocoder(**{k: v for k, v in opts.items()})
summary = uv.train_unit_vocoder(voc, pairs, steps=2500, mel_weight=1.0, seed=0)
print(summary, flush=True)
if os.path.exists(out): shutil.rmtree(out)
shutil.copytree(f"{root}/results/taste/1986/tokenizer", out)
path = f"{out}/model.safetensors"
with safe_open(path, "pt") as f: meta_st = f.metadata()
state = load_file(path)
for k, v in voc.state_dict().items():
    assert f"vocoder.{k}" in state and state[f"vocoder.{k}"].shape == v.shape, k
    state[f"vocoder.{k}"] = v.contiguous()
save_file(state, path, metadata=meta_st)
print("wrote", out)
