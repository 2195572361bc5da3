"""``resemblyzer`` speaker plugin: GE2E d-vectors (256-d) from the resemblyzer package.

The PyPI package ``resemblyzer`` ships its pretrained weights
(``resemblyzer/pretrained.pt``) inside the wheel, so this speaker model works
offline. Install it with::

    pip install resemblyzer "setuptools<81"

(``webrtcvad``, which resemblyzer uses for voice activity detection, still
imports ``pkg_resources``, removed from setuptools 81.)
"""

import logging

import numpy as np
import torch

from taste_toolkit.errors import MissingResourceError
from taste_toolkit.interfaces import Speaker
from taste_toolkit.registry import register

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install resemblyzer "setuptools<81"'


def _import_resemblyzer():
    """Import resemblyzer lazily; a missing package becomes MissingResourceError."""
    import warnings

    try:
        with warnings.catch_warnings():
            # webrtcvad's "pkg_resources is deprecated" warning is not actionable here
            warnings.simplefilter("ignore", UserWarning)
            import resemblyzer
    except ImportError as exc:
        raise MissingResourceError(
            f"The 'resemblyzer' speaker plugin needs the resemblyzer package ({exc}). "
            f"Install it with: {INSTALL_HINT}"
        ) from exc
    return resemblyzer


@register("speaker", "resemblyzer")
class ResemblyzerSpeaker(Speaker):
    """GE2E d-vector (256-d, L2-normalized) from resemblyzer's bundled weights.

    Each utterance is embedded on its valid samples only (so padding never
    changes the result), as resemblyzer does: volume normalization to
    -30 dBFS, long silences removed by its WebRTC VAD, then the average of the
    d-vectors of 1.6 s windows.

    Fallbacks (each logs a warning):

    * the VAD keeps nothing (very short or near-silent audio): the untrimmed,
      volume-normalized waveform is embedded instead;
    * no valid samples, an all-zero waveform, or a non-finite embedding: a
      **zero vector** is returned (no speaker information; cosine with it is 0).

    The encoder is frozen and kept outside the module tree: its weights are
    not part of ``state_dict`` (they come from the package) and ``.to()`` does
    not move it; use ``device`` instead. Outputs are returned on the device
    of the input waveforms.

    Arguments
    ---------
    device : str
        Torch device the voice encoder runs on (``"cpu"``, ``"cuda"``...).

    Example
    -------
    >>> spk = ResemblyzerSpeaker()  # doctest: +SKIP
    >>> spk(torch.randn(2, 32000) * 0.1, torch.tensor([32000, 16000])).shape  # doctest: +SKIP
    torch.Size([2, 256])
    """

    sample_rate = 16000

    def __init__(self, device: str = "cpu"):
        super().__init__()
        resemblyzer = _import_resemblyzer()
        self.device = device
        encoder = resemblyzer.VoiceEncoder(device=device, verbose=False)
        encoder.eval()
        for param in encoder.parameters():
            param.requires_grad_(False)
        # Stored in __dict__, not as a submodule: see the class docstring.
        self.__dict__["_encoder"] = encoder
        self.__dict__["_preprocess_wav"] = resemblyzer.preprocess_wav
        self.__dict__["_normalize_volume"] = resemblyzer.audio.normalize_volume
        self._target_dbfs = resemblyzer.hparams.audio_norm_target_dBFS
        self._dim = int(resemblyzer.hparams.model_embedding_size)

    @property
    def embedding_dim(self) -> int:
        return self._dim

    def embed_one(self, wav):
        """Embed one utterance.

        Arguments
        ---------
        wav : numpy.ndarray
            ``(S,)`` float32 at 16 kHz, valid samples only.

        Returns
        -------
        numpy.ndarray
            ``(D,)`` float32, unit norm (or zeros, see the class docstring).
        """
        zeros = np.zeros(self._dim, dtype=np.float32)
        if wav.size == 0 or not np.any(wav):
            logger.warning(
                "Speaker embedding: utterance has %s; returning a zero vector.",
                "no samples" if wav.size == 0 else "only zero samples",
            )
            return zeros
        trimmed = self._preprocess_wav(wav, source_sr=self.sample_rate)
        if trimmed.size == 0:
            logger.warning(
                "Speaker embedding: the VAD found no speech in a %.2f s utterance; "
                "embedding the untrimmed waveform instead.",
                wav.size / self.sample_rate,
            )
            trimmed = self._normalize_volume(wav, self._target_dbfs, increase_only=True)
        embedding = self._encoder.embed_utterance(trimmed.astype(np.float32))
        norm = float(np.linalg.norm(embedding))
        if not np.isfinite(norm) or norm == 0.0:
            logger.warning("Speaker embedding is not finite; returning a zero vector.")
            return zeros
        return (embedding / norm).astype(np.float32)

    @torch.no_grad()
    def forward(self, wavs, wav_lengths):
        """Speaker vectors of a batch.

        Arguments
        ---------
        wavs : torch.Tensor
            ``(B, S)`` float mono at 16 kHz, right-padded.
        wav_lengths : torch.Tensor
            ``(B,)`` valid samples (absolute).

        Returns
        -------
        torch.Tensor
            ``(B, 256)`` float32, L2-normalized rows (zeros when impossible).
        """
        out = []
        cpu = wavs.detach().to("cpu", torch.float32)
        for wav, length in zip(cpu, wav_lengths.tolist()):
            out.append(self.embed_one(wav[: int(length)].numpy()))
        if not out:
            return torch.zeros(0, self._dim, device=wavs.device)
        return torch.from_numpy(np.stack(out)).to(wavs.device)
