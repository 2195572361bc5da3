"""``lmspt`` and ``mel_topline`` system types: the frame-rate LM-SPT tokenizer in the evaluation table.

YAML entries::

    - {name: lmspt_12.5hz, type: lmspt, options: {path: results/lmspt/1986/tokenizer}}
    - {name: lmspt_semantic, type: lmspt, options: {path: ..., acoustic_layers: 0}}
    - {name: mel_topline, type: mel_topline, options: {tokenizer: results/lmspt/1986/tokenizer}}

``lmspt`` runs audio -> frame tokens -> predicted log-mel -> the tokenizer's vocoder;
the transcript is not used (the tokens are frame-aligned). ``mel_topline`` sends the
source's own Whisper log-mel through the same vocoder: what a perfect LM-SPT decoder
would give, the counterpart of TASTE's ``units_topline``.
"""

import os

import numpy as np
import torch

from taste_toolkit.bitrate import bits_per_token
from taste_toolkit.errors import MissingResourceError
from taste_toolkit.evaluation.systems import System, register_system


def _load_lmspt(path):
    from taste_toolkit.lmspt import LmsptTokenizer

    if not path or not os.path.isdir(path):
        raise MissingResourceError(f"LM-SPT tokenizer folder {path!r} not found: train one "
                                   "(python recipes/librispeech/train.py hparams/lmspt.yaml).")
    tok = LmsptTokenizer.from_pretrained(path)
    if tok.vocoder is None:
        raise MissingResourceError(f"LM-SPT tokenizer {path!r} has no vocoder; export it with one.")
    return tok


@register_system("lmspt")
class LmsptSystem(System):
    """An exported LM-SPT tokenizer: audio -> frame codes -> log-mel -> vocoder.

    Arguments
    ---------
    path : str
        Standalone folder written by ``LmsptTokenizer.save_pretrained``.
    acoustic_layers : int, optional
        Decode with only the first ``k`` acoustic RVQ layers (0 = the semantic
        stream alone); ``None`` = all. The bitrate reported counts only the
        streams used.
    use_aux_decoder : bool
        Decode the semantic stream with the auxiliary (distillation) decoder.
    """

    def __init__(self, path, acoustic_layers=None, use_aux_decoder=False):
        self.path = path
        self.tok = _load_lmspt(path)
        self.acoustic_layers = acoustic_layers
        self.use_aux_decoder = bool(use_aux_decoder)
        m = self.tok.model
        acoustic = m.acoustic_quantizer
        total = acoustic.num_quantizers if acoustic is not None else 0
        used = total if acoustic_layers is None else min(int(acoustic_layers), total)
        if self.use_aux_decoder:
            used = 0  # the auxiliary decoder reads the semantic stream only
        self.streams = 1 + used
        self.bits = float(m.semantic_quantizer.bits_per_vector) + (
            bits_per_token(used, acoustic.codebook_size) if used else 0.0)

    def info(self):
        rate = self.tok.token_rate
        return {"path": self.path, "fingerprint": self.tok.fingerprint, "alignment": "frame",
                "token_rate_hz": rate, "bitrate_bps": rate * self.bits, "bits_per_token": self.bits,
                "plugins": self.tok.info()["plugins"]}

    def reconstruct(self, wav, sample_rate, text, utt_id, words=None):
        tokens = self.tok.encode(wav, sample_rate, text)
        tokens.codes = tokens.codes[:, : self.streams]
        speech = self.tok.decode(tokens, use_aux_decoder=self.use_aux_decoder)
        out = speech.waveforms[0].numpy().astype(np.float32)
        extras = {"speech_tokens": int(tokens.codes.shape[0]), "bits_per_token": self.bits,
                  "codes": tokens.codes.tolist()}
        return out, int(speech.sample_rate), extras

    def close(self):
        self.tok = None


@register_system("mel_topline")
class MelToplineSystem(System):
    """The source's Whisper log-mel through an LM-SPT tokenizer's vocoder (a perfect decoder's output).

    Arguments
    ---------
    tokenizer : str
        LM-SPT tokenizer folder whose encoder front end and vocoder are used.
    """

    def __init__(self, tokenizer):
        self.path = tokenizer
        self.tok = _load_lmspt(tokenizer)

    def info(self):
        return {"path": self.path, "alignment": "frame", "token_rate_hz": 100.0, "bits_per_token": None}

    def reconstruct(self, wav, sample_rate, text, utt_id, words=None):
        from taste_toolkit.audio import prepare_waveform

        x = prepare_waveform(wav, sample_rate, target_sr=self.tok.model.encoder.sample_rate)
        with torch.no_grad():
            mel = self.tok.model.encoder.log_mel(x).T  # (F, n_mels)
        out = self.tok.vocode([mel])[0].numpy().astype(np.float32)
        return out, int(self.tok.vocoder.sample_rate), {"speech_tokens": int(mel.shape[0]), "bits_per_token": None}

    def close(self):
        self.tok = None
