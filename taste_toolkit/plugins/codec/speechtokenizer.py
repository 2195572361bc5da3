"""``speechtokenizer`` codec plugin: SpeechTokenizer (50 Hz RVQ, HuBERT-distilled first layer).

The TASTE paper's row is "SpeechTokenizer 2RVQ". The model class comes from the
``speechtokenizer`` package on PyPI (``pip install speechtokenizer``, or the
toolkit's ``baselines`` extra); the weights (``config.json`` + ``SpeechTokenizer.pt``
from the model repository ``fnlp/SpeechTokenizer``) must be in a local folder.
Weights are read with ``torch.load(weights_only=True)``: a checkpoint carrying
pickled code is refused instead of executed.
"""

import glob
import json
import os
import pickle

import torch

from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.interfaces import Codec
from taste_toolkit.plugins.codec._transformers_codec import check_waveforms, pad_codes, pad_waves
from taste_toolkit.registry import register

HOW_TO_GET = (
    "Download a SpeechTokenizer folder (model repository fnlp/SpeechTokenizer, e.g. "
    "speechtokenizer_hubert_avg/ with config.json and SpeechTokenizer.pt) where the hub is "
    "reachable and pass model_dir: DIR; the code comes from `pip install speechtokenizer`."
)


def _find_checkpoint(model_dir):
    found = sorted(glob.glob(os.path.join(model_dir, "*.pt")))
    if len(found) != 1:
        raise MissingResourceError(
            f"SpeechTokenizer folder {model_dir!r} must hold exactly one .pt checkpoint, found {found}. "
            + HOW_TO_GET
        )
    return found[0]


@register("codec", "speechtokenizer")
class SpeechTokenizerCodec(Codec):
    """SpeechTokenizer from a local folder.

    Arguments
    ---------
    model_dir : str
        Folder with ``config.json`` and one ``.pt`` state dict.
    num_quantizers : int
        RVQ layers used (the paper's baseline: 2).
    """

    def __init__(self, model_dir: str = "", num_quantizers: int = 2):
        super().__init__()
        try:
            from speechtokenizer import SpeechTokenizer
        except ImportError as err:
            raise MissingResourceError(
                f"The speechtokenizer package cannot be imported ({err}); `pip install speechtokenizer "
                f"beartype` (beartype is an undeclared dependency of its trainer). " + HOW_TO_GET
            ) from err
        config_path = os.path.join(model_dir, "config.json")
        if not model_dir or not os.path.isfile(config_path):
            raise MissingResourceError(f"No SpeechTokenizer config.json in {model_dir!r}. " + HOW_TO_GET)
        with open(config_path) as f:
            config = json.load(f)
        self.model = SpeechTokenizer(config)
        checkpoint = _find_checkpoint(model_dir)
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ConfigError(
                f"Refused to load {checkpoint}: it holds pickled objects beyond tensors, which could run "
                "code. Use the official SpeechTokenizer.pt (a plain state dict)."
            ) from err
        self.model.load_state_dict(state)
        self.model.eval().requires_grad_(False)
        if not 1 <= int(num_quantizers) <= self.model.n_q:
            raise ConfigError(f"SpeechTokenizer num_quantizers must be in [1, {self.model.n_q}], got {num_quantizers}.")
        self._num_quantizers = int(num_quantizers)
        self._codebook_size = int(config["codebook_size"])

    @property
    def sample_rate(self):
        return int(self.model.sample_rate)

    @property
    def frame_rate(self):
        return self.model.sample_rate / float(self.model.downsample_rate)

    @property
    def codebook_size(self):
        return self._codebook_size

    @property
    def num_codebooks(self):
        return self._num_quantizers

    @torch.no_grad()
    def encode(self, wavs, wav_lengths):
        """``(B, S)`` at :attr:`sample_rate` -> ``(codes (B, T, R), lengths (B,))``."""
        check_waveforms(wavs, wav_lengths)
        rows = []
        for wav, n in zip(wavs, wav_lengths.tolist()):
            codes = self.model.encode(wav[:n].view(1, 1, -1), n_q=self._num_quantizers)  # (R, 1, T)
            rows.append(codes[:, 0].transpose(0, 1).long())
        return pad_codes(rows, self.num_codebooks)

    @torch.no_grad()
    def decode(self, codes, code_lengths):
        """``(B, T, R)`` codes -> ``(wavs (B, S), lengths (B,))``."""
        if codes.dim() != 3 or codes.shape[2] != self.num_codebooks:
            raise InputError(
                f"SpeechTokenizer codes must be (B, T, {self.num_codebooks}), got {tuple(codes.shape)}"
            )
        rows = []
        for c, n in zip(codes, code_lengths.tolist()):
            rows.append(self.model.decode(c[:n].transpose(0, 1).unsqueeze(1)).reshape(-1))
        return pad_waves(rows)
