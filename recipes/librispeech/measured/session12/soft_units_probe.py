"""Experiment record (session 12): does the vocoder read the decoder's unit *posteriors* better than its argmax?

The ``duration_transformer`` decodes every unit greedily; where it hesitates between two
units the vocoder hears one of them. This probe feeds the vocoder's unit embedding the
posterior-weighted mean of the embeddings (``softmax(logits / T) @ E``) instead, with no
retraining, and writes one wav per test utterance for the evaluation harness
(a ``directory`` system). It patches the decoder's ``_pick`` and the vocoder net's
``embed`` for the duration of a decode; it is an experiment, not a toolkit feature.

    python recipes/librispeech/measured/session12/soft_units_probe.py \
        --tokenizer results/s12_token_context/1986/tokenizer --out results/s12_soft_units/T1.0 --temperature 1.0
"""

import argparse
import os

import soundfile as sf
import torch
from tqdm import tqdm

from taste_toolkit.api import TasteTokenizer
from taste_toolkit.audio import read_audio
from taste_toolkit.evaluation.data import load_eval_set


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--metadata", default="results/synthetic_corpus/test")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of the posteriors")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    tok = TasteTokenizer.from_pretrained(args.tokenizer)
    decoder, net = tok.model.decoder, tok.vocoder.net
    captured = {}
    pick = decoder._pick

    def keep_logits(logits, *rest):
        captured["logits"] = logits
        return pick(logits, *rest)

    class SoftEmbedding(torch.nn.Module):
        def __init__(self, table):
            super().__init__()
            self.table = table

        def forward(self, units):
            probs = torch.softmax(captured["logits"].float() / args.temperature, dim=-1)
            return (probs @ self.table.weight).view(*units.shape, -1)

    decoder._pick = keep_logits
    net.embed = SoftEmbedding(net.embed)
    os.makedirs(args.out, exist_ok=True)
    for utt in tqdm(load_eval_set(metadata=args.metadata, limit=args.limit), desc="soft units"):
        wav, sr = read_audio(utt.path)
        tokens = tok.encode(wav, sr, utt.text)
        out = tok.decode(tokens, top_k=0, max_len_ratio=40.0)
        sf.write(os.path.join(args.out, utt.id + ".wav"), out.waveforms[0].numpy(), out.sample_rate)


if __name__ == "__main__":
    main()
