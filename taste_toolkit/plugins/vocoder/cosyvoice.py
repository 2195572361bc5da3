"""``cosyvoice`` vocoder plugin: the official CosyVoice-300M flow matching + HiFT.

This is TASTE's vocoder: S3 tokens (50 Hz, 4096 ids, the ``s3`` units plugin)
plus a 192-d CAM++ x-vector (the ``campplus`` speaker plugin) -> 80-bin mel
(``MaskedDiffWithXvec``, 10 Euler steps) -> HiFT -> 22.05 kHz waveform, with no
prompt speech (zero-length prompts), as in TASTE's ``VoiceGenerator``.

Nothing of it ships with taste-toolkit and none of it can be downloaded here:

* the ``cosyvoice`` Python package (``git clone https://github.com/FunAudioLLM/CosyVoice``,
  ``pip install -r requirements.txt``, then put the clone and its
  ``third_party/Matcha-TTS`` on ``PYTHONPATH``), and ``hyperpyyaml``;
* a CosyVoice-300M model folder (model repository ``FunAudioLLM/CosyVoice-300M``)
  holding ``cosyvoice.yaml``, ``flow.pt`` and ``hift.pt``.

Loading mirrors CosyVoice's own ``CosyVoice``/``CosyVoiceModel`` code (whole
YAML, ``strict=False`` state dicts, ``generator.`` prefix stripped from HiFT).
It has only been exercised here against stand-ins with the same call
signatures, not against the real weights.
"""

import inspect
import os

import torch

from taste_toolkit.errors import InputError, MissingResourceError
from taste_toolkit.interfaces import Vocoder
from taste_toolkit.registry import register

REQUIRED_FILES = ("cosyvoice.yaml", "flow.pt", "hift.pt")
NUM_UNITS = 4096
SPEAKER_DIM = 192

HOW_TO_GET = (
    "Download the CosyVoice-300M model folder (model repository FunAudioLLM/CosyVoice-300M; "
    "it must hold cosyvoice.yaml, flow.pt and hift.pt) on a machine with internet access "
    "and set vocoder_options: {cosyvoice: {model_dir: /path/to/CosyVoice-300M}}. The "
    "cosyvoice package is not on PyPI: git clone https://github.com/FunAudioLLM/CosyVoice, "
    "pip install -r requirements.txt and add the clone and third_party/Matcha-TTS to "
    "PYTHONPATH. Without them use vocoder_name: griffin_lim (no download)."
)


@register("vocoder", "cosyvoice")
class CosyVoiceVocoder(Vocoder):
    """CosyVoice-300M flow + HiFT from a local folder (S3 tokens -> 22.05 kHz).

    Arguments
    ---------
    model_dir : str
        Local CosyVoice-300M folder with ``cosyvoice.yaml``, ``flow.pt``, ``hift.pt``.
    """

    def __init__(self, model_dir: str = ""):
        super().__init__()
        if not model_dir:
            raise MissingResourceError("The cosyvoice vocoder needs model_dir. " + HOW_TO_GET)
        if not os.path.isdir(model_dir):
            raise MissingResourceError(
                f"CosyVoice model folder {model_dir!r} does not exist. " + HOW_TO_GET
            )
        missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(model_dir, f))]
        if missing:
            raise MissingResourceError(
                f"CosyVoice model folder {model_dir!r} lacks {', '.join(missing)}. " + HOW_TO_GET
            )
        try:
            import cosyvoice  # noqa: F401  (the YAML instantiates its classes)
            from hyperpyyaml import load_hyperpyyaml
        except ImportError as exc:
            raise MissingResourceError(
                f"The cosyvoice vocoder needs the cosyvoice package ({exc}). " + HOW_TO_GET
            ) from exc
        with open(os.path.join(model_dir, "cosyvoice.yaml")) as f:
            configs = load_hyperpyyaml(f)
        self.flow, self.hift = configs["flow"], configs["hift"]
        def load(name):
            return torch.load(os.path.join(model_dir, name), map_location="cpu")

        self.flow.load_state_dict(load("flow.pt"), strict=False)
        hift_state = {k.replace("generator.", ""): v for k, v in load("hift.pt").items()}
        self.hift.load_state_dict(hift_state, strict=False)
        self.flow.eval().requires_grad_(False)
        self.hift.eval().requires_grad_(False)
        # The flow's inference gained a cache argument (and returns a pair) in later releases.
        self._flow_has_cache = "flow_cache" in inspect.signature(self.flow.inference).parameters
        self._hift_new_api = "speech_feat" in inspect.signature(self.hift.inference).parameters

    @property
    def sample_rate(self) -> int:
        return 22050

    def _one(self, tokens, speaker):
        """``tokens (1, S)`` int32, ``speaker (1, 192)`` -> waveform ``(L,)``."""
        device = tokens.device
        empty = dict(
            prompt_token=torch.zeros(1, 0, dtype=torch.int32, device=device),
            prompt_token_len=torch.zeros(1, dtype=torch.int32, device=device),
            prompt_feat=torch.zeros(1, 0, 80, device=device),
            prompt_feat_len=torch.zeros(1, dtype=torch.int32, device=device),
        )
        token_len = torch.tensor([tokens.shape[1]], dtype=torch.int32, device=device)
        if self._flow_has_cache:
            mel, _ = self.flow.inference(
                token=tokens, token_len=token_len, embedding=speaker,
                flow_cache=torch.zeros(1, 80, 0, 2, device=device), **empty,
            )  # fmt: skip
        else:
            mel = self.flow.inference(token=tokens, token_len=token_len, embedding=speaker, **empty)
        if self._hift_new_api:
            no_cache = torch.zeros(1, 1, 0, device=device)
            wav, _ = self.hift.inference(speech_feat=mel, cache_source=no_cache)
        else:
            wav = self.hift.inference(mel=mel)
        return wav.reshape(-1).float()

    @torch.no_grad()
    def forward(self, units, unit_lengths, speaker=None):
        """Synthesize a batch, one utterance at a time (CosyVoice's flow takes B=1).

        Arguments
        ---------
        units : torch.Tensor
            ``(B, S)`` S3 token ids in ``[0, 4096)``; values after ``unit_lengths`` are ignored.
        unit_lengths : torch.Tensor
            ``(B,)`` valid tokens (absolute; 0 gives an empty waveform).
        speaker : torch.Tensor
            ``(B, 192)`` CAM++ x-vectors (the flow L2-normalizes them itself).

        Returns
        -------
        wavs : torch.Tensor
            ``(B, max(wav_lengths))`` float at 22.05 kHz, zero after each length.
        wav_lengths : torch.Tensor
            ``(B,)`` long; ``int(S / 50 * 22050 / 256) * 256`` samples for ``S`` tokens
            (about ``S / 50`` seconds).
        """
        if not isinstance(units, torch.Tensor) or units.dim() != 2 or units.is_floating_point():
            shape = getattr(units, "shape", units)
            raise InputError(f"cosyvoice expects integer units (B, S), got {shape}.")
        lengths = torch.as_tensor(unit_lengths).long().cpu()
        batch, steps = units.shape
        if lengths.shape != (batch,) or (lengths < 0).any() or (lengths > steps).any():
            raise InputError(
                f"unit_lengths must be ({batch},) in [0, {steps}], got {lengths.tolist()}."
            )
        if speaker is None or tuple(speaker.shape) != (units.shape[0], SPEAKER_DIM):
            raise InputError(
                f"cosyvoice needs speaker=(B, {SPEAKER_DIM}) CAM++ x-vectors (the campplus speaker "
                f"plugin computes them), got {None if speaker is None else tuple(speaker.shape)}."
            )
        device = next(self.flow.parameters()).device
        outputs = []
        for row, n, spk in zip(units, lengths.tolist(), speaker):
            tokens = row[:n]
            if n and (int(tokens.min()) < 0 or int(tokens.max()) >= NUM_UNITS):
                raise InputError(
                    f"S3 token ids must be in [0, {NUM_UNITS}), got "
                    f"{int(tokens.min())}..{int(tokens.max())}."
                )
            if n == 0:
                outputs.append(torch.zeros(0, device=device))
                continue
            tokens = tokens.to(device=device, dtype=torch.int32).unsqueeze(0)
            outputs.append(self._one(tokens, spk.to(device).float().unsqueeze(0)))
        wav_lengths = torch.tensor([w.numel() for w in outputs], dtype=torch.long)
        wavs = torch.zeros(len(outputs), int(wav_lengths.max()), device=device)
        for i, wav in enumerate(outputs):
            wavs[i, : wav.numel()] = wav
        return wavs, wav_lengths.to(device)
