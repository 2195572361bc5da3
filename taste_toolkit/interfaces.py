"""Abstract base class and typed output of every plugin kind.

Conventions used by every plugin
--------------------------------
* Shapes are written ``(B, T, D)``: batch, time (or tokens), features.
* **Lengths are absolute** integer counts ``(B,)`` (``torch.long``). SpeechBrain's
  relative lengths (0-1) are converted once, at the Brain boundary
  (:func:`taste_toolkit.utils.relative_to_absolute`).
* Sequences are right-padded; padded positions never change valid outputs
  (padding invariance is part of each contract test).
* Waveforms are float mono ``(B, S)`` at the plugin's ``sample_rate``.
"""

import abc
import inspect
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from torch import nn

from taste_toolkit.bitrate import bitrate as bits_per_second
from taste_toolkit.bitrate import bits_per_token

# --------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------


@dataclass
class EncoderOutput:
    """Two taps of a frozen speech encoder.

    Attributes
    ----------
    keys : torch.Tensor
        ``(B, T, D_k)`` deep layer (alignment cues), e.g. Whisper's last layer
        after its final LayerNorm.
    values : torch.Tensor
        ``(B, T, D_v)`` shallow layer (acoustic detail).
    lengths : torch.Tensor
        ``(B,)`` valid frames per utterance.
    frame_rate : float
        Frames per second of ``keys``/``values``.
    """

    keys: torch.Tensor
    values: torch.Tensor
    lengths: torch.Tensor
    frame_rate: float


@dataclass
class AggregatorOutput:
    """Speech pooled per text token, per word, or left per frame.

    Attributes
    ----------
    embeddings : torch.Tensor
        ``(B, M, D)``; ``M`` is tokens, words or frames depending on ``level``.
    lengths : torch.Tensor
        ``(B,)`` valid positions of ``embeddings``.
    level : str
        ``"token"``, ``"word"`` or ``"frame"``.
    attention : torch.Tensor, optional
        ``(B, N, T)`` cross-attention averaged over the alignment heads (by default
        the last layer's),
        text tokens x encoder frames: what each token's vector pooled (plots).
    alignment : torch.Tensor, optional
        ``(B, N, T)`` attention that locates each token in time (for word
        timestamps). Usually ``attention``; for Whisper-initialized aggregators the
        rows are shifted by one, since Whisper's query at a position attends to the
        audio of the *next* token.
    supervised_attention : torch.Tensor, optional
        ``(B, S, N, T)`` attention of the ``S`` supervised heads at the positions
        whose states become the tokens' vectors (training with attention
        supervision only; see :mod:`taste_toolkit.training.attention_supervision`).
    """

    embeddings: torch.Tensor
    lengths: torch.Tensor
    level: str
    attention: Optional[torch.Tensor] = None
    alignment: Optional[torch.Tensor] = None
    supervised_attention: Optional[torch.Tensor] = None


@dataclass
class QuantizerOutput:
    """Result of quantizing ``(B, M, D)`` vectors.

    Attributes
    ----------
    quantized : torch.Tensor
        ``(B, M, D)`` reconstruction (straight-through gradients in training).
    codes : torch.Tensor, optional
        ``(B, M, R)`` code indices, ``-1`` at padded or dropped layers;
        ``None`` for continuous quantizers.
    loss : torch.Tensor
        Scalar auxiliary loss (commitment), already averaged over valid positions.
    metrics : dict
        Scalars to log (per-layer codebook usage, perplexity).
    """

    quantized: torch.Tensor
    codes: Optional[torch.Tensor]
    loss: torch.Tensor
    metrics: Dict[str, float] = field(default_factory=dict)


@dataclass
class DecoderOutput:
    """Teacher-forced unit prediction.

    Attributes
    ----------
    logits : torch.Tensor
        ``(B, S + 1, V + 1)`` scores of the next unit (last class = end of speech)
        at each unit position and the end.
    targets : torch.Tensor
        ``(B, S + 1)`` target ids, ``-100`` at padding.
    loss : torch.Tensor
        Scalar masked cross-entropy (mean over valid targets).
    """

    logits: torch.Tensor
    targets: torch.Tensor
    loss: torch.Tensor


@dataclass
class TokenizedText:
    """Text tokenized word by word, keeping the word of every token.

    Attributes
    ----------
    ids : list of int
        Token ids of the whole transcript.
    word_ids : list of int
        Index (0-based) of the word each token belongs to; same length as ``ids``.
    words : list of str
        The words, as split from the normalized transcript.
    """

    ids: List[int]
    word_ids: List[int]
    words: List[str]


# --------------------------------------------------------------------------
# Bases
# --------------------------------------------------------------------------


class Plugin:
    """What every plugin carries: its registry identity and its recorded options.

    :func:`taste_toolkit.registry.register` sets the class attributes and records
    the two option dicts on every instance when its ``__init__`` returns (built by
    :func:`~taste_toolkit.registry.build`, a YAML ``!new:`` or a direct call alike);
    plugins never write them by hand.

    Attributes
    ----------
    registry_kind, registry_name : str or None
        Kind and name the class is registered under (``None``: not registered).
    build_spec : dict or None
        ``{"kind", "name", "options"}`` with the options the caller passed: the
        plain-data recipe standalone checkpoints write and rebuild the plugin from.
    options : dict or None
        Every constructor option, defaults filled in, after :meth:`resolve_options`:
        what the plugin reads back (``self.options["hop_length"]``) and what caches
        hash (the unit cache keys an extractor by it).
    """

    registry_kind: Optional[str] = None
    registry_name: Optional[str] = None
    build_spec: Optional[dict] = None
    options: Optional[dict] = None

    def resolve_options(self, options: dict) -> dict:
        """The one hook to adjust the recorded :attr:`options` (default: unchanged).

        Called once, right after ``__init__``, with every constructor option
        (defaults filled in). Override it to record a derived value instead of
        its placeholder (``win_length=None`` -> ``n_fft``) or to normalize a
        value to plain data (tuples -> lists); read the values ``__init__``
        computed from ``self`` rather than deriving them a second time.

        Arguments
        ---------
        options : dict
            ``{name: value}`` of every constructor option.

        Returns
        -------
        dict
            The options to record as :attr:`options`.
        """
        return options


class Encoder(nn.Module, abc.ABC, Plugin):
    """Speech encoder: waveform ``(B, S)`` -> :class:`EncoderOutput`."""

    sample_rate: int = 16000

    @property
    @abc.abstractmethod
    def key_dim(self) -> int:
        """Feature size of ``keys``."""

    @property
    @abc.abstractmethod
    def value_dim(self) -> int:
        """Feature size of ``values``."""

    @property
    @abc.abstractmethod
    def frame_rate(self) -> float:
        """Output frames per second."""

    @abc.abstractmethod
    def forward(self, wavs, wav_lengths) -> EncoderOutput:
        """Encode ``wavs (B, S)`` with valid sample counts ``wav_lengths (B,)``."""


class Aggregator(nn.Module, abc.ABC, Plugin):
    """Pools encoder frames per text token/word, queried by the text."""

    #: False for aggregators that ignore the audio (text-only ablation). Read by
    #: ``TasteModel`` and ``TokenizerBrain``, which then skip the encoder entirely.
    needs_audio: bool = True
    #: True for aggregators whose ``forward`` takes ``unit_word_ids`` ``(B, S)``, the
    #: word of every target unit from the corpus' word times (the ``oracle_spans``
    #: ceiling). Read by ``TasteModel.tokenize``, ``TokenizerBrain`` and the recipe
    #: (``recipes/librispeech/train.py``), which then load and pass the word times.
    needs_unit_word_ids: bool = False
    #: What one output vector stands for: ``"token"`` (one per text token),
    #: ``"word"`` or ``"frame"``; it is the ``level`` of every ``AggregatorOutput``
    #: the aggregator returns (``tests/test_aggregator.py`` checks the contract) and
    #: what ``TasteTokenizer.info()`` reports. Aggregators whose level depends on an
    #: option (``word_pooling``) override it with a property.
    output_level: str = "token"

    @property
    @abc.abstractmethod
    def output_dim(self) -> int:
        """Feature size of the pooled embeddings (0 when there are none)."""

    @abc.abstractmethod
    def forward(self, tokens, token_lengths, word_ids, encoder_out) -> Optional[AggregatorOutput]:
        """Aggregate.

        Arguments
        ---------
        tokens : torch.Tensor
            ``(B, N)`` text token ids.
        token_lengths : torch.Tensor
            ``(B,)`` valid tokens.
        word_ids : torch.Tensor
            ``(B, N)`` word index of each token (padding: any value).
        encoder_out : EncoderOutput or None
            ``None`` only when ``needs_audio`` is False.
        """


class Quantizer(nn.Module, abc.ABC, Plugin):
    """Discretizes ``(B, M, D)`` vectors; ``encode``/``decode`` are deterministic."""

    @property
    @abc.abstractmethod
    def input_dim(self) -> int:
        """Feature size in and out."""

    @property
    def num_quantizers(self) -> int:
        """Codes per vector (R); 0 for a continuous pass-through."""
        return 0

    @property
    def codebook_size(self) -> int:
        """Codes per codebook (K); 0 for a continuous pass-through."""
        return 0

    @property
    def bits_per_vector(self) -> float:
        """Bits needed for one quantized vector (R * log2 K; NaN for a continuous pass-through)."""
        if not self.codebook_size:
            return float("nan")
        return bits_per_token(self.num_quantizers, self.codebook_size)

    @abc.abstractmethod
    def forward(self, x, lengths) -> QuantizerOutput:
        """Quantize ``x (B, M, D)`` with ``lengths (B,)`` (training path)."""

    @abc.abstractmethod
    def encode(self, x, lengths) -> Optional[torch.Tensor]:
        """Codes ``(B, M, R)`` (``-1`` at padding), no statistics updated."""

    @abc.abstractmethod
    def decode(self, codes) -> torch.Tensor:
        """Vectors ``(B, M, D)`` from codes ``(B, M, R)``; ``-1`` gives zeros."""


class UnitDecoder(nn.Module, abc.ABC, Plugin):
    """Predicts speech units from text and (optionally) aligned speech embeddings."""

    #: True for decoders whose ``forward`` takes the keywords ``word_ids`` ``(B, N)``
    #: and ``unit_word_ids`` ``(B, S)`` (``word_pointer_transformer``). Read by
    #: ``TasteModel.forward`` and ``TasteTokenizer``, which then pass them.
    needs_word_ids: bool = False
    #: True for decoders trained with the word of every unit, taken from the corpus'
    #: word times. Read by the recipe (``recipes/librispeech/train.py``), which then
    #: loads the word times, and by ``evaluation.systems`` (teacher-forced accuracy).
    needs_unit_word_ids: bool = False

    @property
    @abc.abstractmethod
    def num_units(self) -> int:
        """Unit vocabulary size V (without the end-of-speech class)."""

    @property
    @abc.abstractmethod
    def speech_dim(self) -> int:
        """Expected feature size of the speech embeddings (0 = text only)."""

    @property
    def speaker_dim(self) -> int:
        """Expected speaker-vector size (0 = no speaker prefix)."""
        return 0

    @abc.abstractmethod
    def forward(
        self, tokens, token_lengths, speech, speech_lengths, units, unit_lengths, speaker=None
    ) -> DecoderOutput:
        """Teacher-forced pass.

        ``tokens (B, N)``, ``speech (B, M, D)`` or ``None``, ``units (B, S)``,
        ``speaker (B, D_s)`` or ``None``; lengths are ``(B,)``.
        """

    @property
    def eos(self) -> int:
        """Class id of the end of speech: the last logit class, ``num_units`` (see :class:`DecoderOutput`)."""
        return self.num_units

    @abc.abstractmethod
    def generate(self, tokens, token_lengths, speech, speech_lengths, speaker=None, **kwargs):
        """Autoregressive generation; returns ``(units (B, S), lengths (B,))``."""

    def generation_cap(self, token_lengths, **generate_options):
        """Most units :meth:`generate` emits per row with these options, or ``None``.

        A decode that reaches it stopped at the length cap, not at end of speech
        (``DecodedSpeech.capped``). The default reads a ``max_len_ratio`` option of
        ``generate`` (``floor(max_len_ratio x token_lengths)``); decoders that count
        their cap from something else override this.

        Arguments
        ---------
        token_lengths : torch.Tensor
            ``(B,)`` text tokens per row.
        **generate_options
            The options the caller passes to :meth:`generate`.
        """
        params = inspect.signature(self.generate).parameters
        if "max_len_ratio" not in params:
            return None
        ratio = float(generate_options.get("max_len_ratio", params["max_len_ratio"].default))
        return torch.floor(ratio * torch.as_tensor(token_lengths).double()).long()


class Vocoder(nn.Module, abc.ABC, Plugin):
    """Units ``(B, S)`` -> waveform ``(B, L)`` at ``sample_rate``."""

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int:
        """Output sample rate (Hz); part of the contract."""

    @abc.abstractmethod
    def forward(self, units, unit_lengths):
        """Return ``(wavs (B, L), wav_lengths (B,))``."""

    def check_units(self, extractor):
        """Refuse (``ConfigError``) a units extractor this vocoder was not trained for.

        Called by :class:`~taste_toolkit.api.TasteTokenizer` when a tokenizer pairs
        the two. The default accepts any; trained vocoders (``unit_to_spec``) compare
        the unit count and the extractor's fingerprint.
        """


class LMHead(nn.Module, abc.ABC, Plugin):
    """Speech-token head of a spoken LM (TASLM)."""

    @property
    @abc.abstractmethod
    def input_dim(self) -> int:
        """Hidden size of the LM it sits on."""


class Fusion(nn.Module, abc.ABC, Plugin):
    """Fuses a spoken LM's text embeddings with speech embeddings at the same position.

    ``forward(text (B, N, H), speech (B, N, D_s)) -> (B, N, H)``; ``D_s`` is the
    speech-token dimension given as ``speech_dim`` and ``H`` the LM's hidden size.
    """

    @abc.abstractmethod
    def forward(self, text, speech):
        """Return the fused ``(B, N, H)`` input embeddings."""


class Codec(nn.Module, abc.ABC, Plugin):
    """Neural audio codec baseline (EnCodec, Mimi, ...): waveform <-> frame-rate codes.

    Codes are ``(B, T, R)``: ``T`` frames at :attr:`frame_rate`, ``R`` codebooks of
    :attr:`codebook_size` entries. Waveforms are ``(B, S)`` at :attr:`sample_rate`.
    Unlike TASTE tokens, codes are aligned with time, not with text.
    """

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int:
        """Input and output sample rate (Hz)."""

    @property
    @abc.abstractmethod
    def frame_rate(self) -> float:
        """Code frames per second."""

    @property
    @abc.abstractmethod
    def num_codebooks(self) -> int:
        """Codebooks ``R`` used per frame."""

    @property
    @abc.abstractmethod
    def codebook_size(self) -> int:
        """Entries per codebook."""

    @property
    def bitrate(self) -> float:
        """Bits per second: frame rate x codebooks x log2(codebook size)."""
        return bits_per_second(self.frame_rate, self.num_codebooks, self.codebook_size)

    @abc.abstractmethod
    def encode(self, wavs, wav_lengths):
        """``(B, S)`` waveforms -> ``(codes (B, T, R) long, code_lengths (B,))``."""

    @abc.abstractmethod
    def decode(self, codes, code_lengths):
        """``(B, T, R)`` codes -> ``(wavs (B, S), wav_lengths (B,))``."""


class Metric(abc.ABC, Plugin):
    """Evaluation metric: scores one system output against its reference.

    ``needs`` names what the metric reads (for example ``{"reference_audio",
    "reference_text", "units", "word_boundaries"}``) so a harness can skip it,
    with a reason, when a system cannot provide it. Metrics holding a model load
    it lazily and release it in :meth:`close`, so only one is in memory at a time.
    """

    #: What the metric reads; the evaluation harness skips it (with a reason) for a
    #: system that cannot provide one of them.
    needs: frozenset = frozenset()

    def unavailable(self) -> Optional[str]:
        """``None`` when the metric can run, else why not (the harness reports it)."""
        return None

    @abc.abstractmethod
    def score(self, sample) -> Dict:
        """Per-utterance values ``{field: value}`` of one :class:`~taste_toolkit.metrics.base.Sample`."""

    @abc.abstractmethod
    def summarize(self, rows: List[Dict]) -> Dict:
        """Summary columns of one system from its scored rows."""

    def close(self):
        """Release models or other large state."""


class UnitExtractor(nn.Module, abc.ABC, Plugin):
    """Turns audio into discrete target units for the unit decoder.

    Extractors that need training (k-means) implement :meth:`fit`; their fitted
    state lives in buffers so it is saved with ``state_dict``.
    """

    sample_rate: int = 16000
    #: True for extractors that must be fitted (:meth:`fit`, k-means) before use.
    #: Read by ``taste_toolkit.data.unit_cache.prepare_units``, which fits and caches them.
    needs_fit: bool = False

    @property
    @abc.abstractmethod
    def num_units(self) -> int:
        """Unit vocabulary size."""

    @property
    @abc.abstractmethod
    def frame_rate(self) -> float:
        """Units per second."""

    def fit(self, waveforms):
        """Fit on an iterable of 1-D float tensors at ``sample_rate``."""

    @abc.abstractmethod
    def forward(self, wavs, wav_lengths):
        """Return ``(units (B, S) long, lengths (B,))``."""


class TextTokenizer(abc.ABC, Plugin):
    """Word-preserving text tokenizer (not a module: it has no weights)."""

    #: True for tokenizers trained on the corpus transcripts (:meth:`fit`, sentencepiece).
    #: Read by the recipe (``fit_text_tokenizer``) and ``hparams_utils.planned_vocab_size``.
    needs_fit: bool = False

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids."""

    @abc.abstractmethod
    def encode_words(self, text: str) -> TokenizedText:
        """Tokenize ``text`` word by word (see :class:`TokenizedText`)."""

    @abc.abstractmethod
    def decode(self, ids) -> str:
        """Text of token ids."""

    def fit(self, transcripts, save_dir):
        """Train on an iterable of transcripts (tokenizers with ``needs_fit``)."""


class Speaker(nn.Module, abc.ABC, Plugin):
    """Utterance-level speaker vector ``(B, D)``; dimension 0 means no speaker."""

    sample_rate: int = 16000

    @property
    @abc.abstractmethod
    def embedding_dim(self) -> int:
        """Size ``D`` of the speaker vector; 0 means no speaker conditioning."""

    @abc.abstractmethod
    def forward(self, wavs, wav_lengths):
        """``(B, S)`` waveforms at ``sample_rate`` -> ``(B, D)`` vectors (``None`` when ``D`` is 0)."""


class WordSegmenter(abc.ABC, Plugin):
    """Splits a normalized transcript into words, the units TASTE pools speech over.

    Segmenters get text already normalized by the language's normalizer
    (:mod:`taste_toolkit.text_normalization`) and return its words in order:
    non-empty strings without whitespace whose concatenation is the text minus
    its whitespace. :meth:`attach_punctuation` is the shared rule for
    punctuation tokens: opening marks join the next word, the rest the previous.
    """

    @abc.abstractmethod
    def segment(self, text: str) -> List[str]:
        """Words of ``text`` (an empty list when it has none)."""

    @staticmethod
    def attach_punctuation(tokens: List[str]) -> List[str]:
        """Merge punctuation-only tokens into a neighbouring word.

        Opening punctuation (``(``, ``“``, ``¿``: Unicode ``Ps``/``Pi``, and
        ``¿``/``¡``) joins the next token; any other punctuation joins the
        previous one (the next one at the start). Tokens that are all
        punctuation stay as they are (the caller reports an empty segmentation).
        """
        import unicodedata

        def punct(tok):
            return bool(tok) and all(unicodedata.category(c).startswith("P") for c in tok)

        def opening(tok):
            return all(unicodedata.category(c) in ("Ps", "Pi") or c in "\u00bf\u00a1" for c in tok)

        out, pending = [], ""
        for tok in tokens:
            if not tok:
                continue
            if punct(tok):
                if out and not opening(tok) and not pending:
                    out[-1] += tok
                else:
                    pending += tok
                continue
            out.append(pending + tok)
            pending = ""
        if pending:
            if out:
                out[-1] += pending
            else:
                out.append(pending)
        return out


BASES = {
    "encoder": Encoder,
    "aggregator": Aggregator,
    "quantizer": Quantizer,
    "decoder": UnitDecoder,
    "vocoder": Vocoder,
    "lm_head": LMHead,
    "units": UnitExtractor,
    "text_tokenizer": TextTokenizer,
    "speaker": Speaker,
    "fusion": Fusion,
    "metric": Metric,
    "codec": Codec,
    "segmenter": WordSegmenter,
}
