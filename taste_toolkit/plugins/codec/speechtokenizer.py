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

from taste_toolkit.errors import ConfigError, MissingResourceError
from taste_toolkit.plugins.codec.base import FrozenCodec
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
class SpeechTokenizerCodec(FrozenCodec):
    """SpeechTokenizer from a local folder.

    Arguments
    ---------
    model_dir : str
        Folder with ``config.json`` and one ``.pt`` state dict.
    num_quantizers : int
        RVQ layers used (the paper's baseline: 2).
    """

    display_name = "SpeechTokenizer"

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
        model = SpeechTokenizer(config)
        checkpoint = _find_checkpoint(model_dir)
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ConfigError(
                f"Refused to load {checkpoint}: it holds pickled objects beyond tensors, which could run "
                "code. Use the official SpeechTokenizer.pt (a plain state dict)."
            ) from err
        model.load_state_dict(state)
        self._freeze(model)
        self._set_num_codebooks(num_quantizers, model.n_q)
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

    def _encode_one(self, wav):
        codes = self.model.encode(wav.view(1, 1, -1), n_q=self.num_codebooks)  # (R, 1, T)
        return codes[:, 0].transpose(0, 1)

    def _decode_one(self, codes):
        return self.model.decode(codes.transpose(0, 1).unsqueeze(1))
