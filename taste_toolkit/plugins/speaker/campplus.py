"""``campplus`` speaker plugin: CAM++ x-vectors (192-d) from a local ONNX file.

This is the speaker model TASTE's official unit decoder is conditioned on
(CosyVoice's ``campplus.onnx``, also shipped as ``speaker_embed.onnx``). Its
weights cannot be downloaded here: point ``model_path`` at a copy you have,
e.g. from the ``FunAudioLLM/CosyVoice-300M`` model repository
(``pretrained_models/CosyVoice-300M/campplus.onnx`` in CosyVoice's layout).
Needs ``pip install onnxruntime``.

Features follow CosyVoice's ``_extract_spk_embedding`` exactly: 80-bin Kaldi
fbank of the 16 kHz waveform in [-1, 1] (``dither=0``), minus its mean over
time, fed as ``(1, T, 80)``. As in CosyVoice the raw embedding is returned
(its flow decoder normalizes it itself); set ``normalize`` to L2-normalize.
"""

import logging
import os

import numpy as np
import torch

from taste_toolkit.errors import MissingResourceError
from taste_toolkit.interfaces import Speaker
from taste_toolkit.registry import register

logger = logging.getLogger(__name__)

NUM_MEL_BINS = 80
DEFAULT_DIM = 192
#: Kaldi fbank needs at least one 25 ms window at 16 kHz.
MIN_SAMPLES = 400

WHERE_FROM = (
    "CAM++ ONNX weights are not bundled with taste-toolkit and cannot be downloaded "
    "here. Get campplus.onnx from a CosyVoice release (e.g. the FunAudioLLM/CosyVoice-300M "
    "model repository, file campplus.onnx; also distributed as speaker_embed.onnx) and "
    "set speaker_options: {campplus: {model_path: /path/to/campplus.onnx}}, or use "
    "speaker_name: resemblyzer, which needs no external file."
)


def load_session(model_path):
    """Open ``model_path`` with onnxruntime on CPU, as CosyVoice does.

    Raises
    ------
    MissingResourceError
        Empty/missing path, onnxruntime not installed, or a file onnxruntime
        cannot load.
    """
    if not model_path:
        raise MissingResourceError(
            "The 'campplus' speaker plugin needs model_path (campplus.onnx). " + WHERE_FROM
        )
    if not os.path.isfile(model_path):
        raise MissingResourceError(
            f"CAM++ model file {model_path!r} (campplus.onnx) does not exist. " + WHERE_FROM
        )
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingResourceError(
            f"The 'campplus' speaker plugin needs onnxruntime ({exc}). "
            "Install it with: pip install onnxruntime"
        ) from exc
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1  # CosyVoice's setting; utterances are tiny
    try:
        return onnxruntime.InferenceSession(
            model_path, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise MissingResourceError(
            f"onnxruntime cannot load {model_path!r} as an ONNX model: {exc}. "
            "Check that the file is the complete campplus.onnx. " + WHERE_FROM
        ) from exc


def campplus_features(wav, sample_rate=16000):
    """CosyVoice's CAM++ input: mean-normalized 80-bin Kaldi fbank.

    Arguments
    ---------
    wav : torch.Tensor
        ``(S,)`` float waveform in [-1, 1], ``S >= 400``.

    Returns
    -------
    torch.Tensor
        ``(T, 80)`` float32 with zero mean over time.
    """
    import torchaudio.compliance.kaldi as kaldi

    feat = kaldi.fbank(
        wav.reshape(1, -1).to(torch.float32),
        num_mel_bins=NUM_MEL_BINS,
        dither=0,
        sample_frequency=sample_rate,
    )
    return feat - feat.mean(dim=0, keepdim=True)


def _declared_dim(session):
    """Embedding size declared by the ONNX output, or the CAM++ default."""
    try:
        last = session.get_outputs()[0].shape[-1]
    except Exception:
        return DEFAULT_DIM
    return last if isinstance(last, int) and last > 0 else DEFAULT_DIM


@register("speaker", "campplus")
class CampPlusSpeaker(Speaker):
    """CAM++ x-vector (192-d) from CosyVoice's ONNX export, on CPU.

    Utterances shorter than 25 ms (400 samples, one fbank window) get a zero
    vector and a warning. Each utterance is embedded on its valid samples
    only, so padding never changes the result.

    Arguments
    ---------
    model_path : str
        Path of ``campplus.onnx`` (see the module docstring for its source).
    normalize : bool
        L2-normalize the output (CosyVoice stores the raw embedding).
    """

    sample_rate = 16000

    def __init__(self, model_path: str = "", normalize: bool = False):
        super().__init__()
        self.model_path = model_path
        self.normalize = normalize
        # onnxruntime session: not a module, nothing to save in state_dict
        self._session = load_session(model_path)
        self._input_name = self._session.get_inputs()[0].name
        self._dim = _declared_dim(self._session)

    @property
    def embedding_dim(self) -> int:
        return self._dim

    def embed_one(self, wav):
        """Embed one ``(S,)`` float tensor at 16 kHz; returns ``(D,)`` float32 numpy."""
        if wav.numel() < MIN_SAMPLES:
            logger.warning(
                "CAM++ needs at least %d samples (25 ms); got %d. Returning a zero vector.",
                MIN_SAMPLES,
                wav.numel(),
            )
            return np.zeros(self._dim, dtype=np.float32)
        feat = campplus_features(wav, self.sample_rate)
        out = self._session.run(None, {self._input_name: feat.unsqueeze(0).numpy()})[0]
        out = np.asarray(out, dtype=np.float32).reshape(-1)
        if out.size != self._dim:
            raise MissingResourceError(
                f"{self.model_path!r} returned a {out.size}-d vector, expected {self._dim}; "
                "is it really campplus.onnx?"
            )
        if self.normalize:
            norm = float(np.linalg.norm(out))
            out = out / norm if norm > 0 else out
        return out

    @torch.no_grad()
    def forward(self, wavs, wav_lengths):
        """Speaker vectors ``(B, D)`` of ``wavs (B, S)`` with ``wav_lengths (B,)``."""
        cpu = wavs.detach().to("cpu", torch.float32)
        out = [self.embed_one(w[: int(n)]) for w, n in zip(cpu, wav_lengths.tolist())]
        if not out:
            return torch.zeros(0, self._dim, device=wavs.device)
        return torch.from_numpy(np.stack(out)).to(wavs.device)
