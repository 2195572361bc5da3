"""Minimal ctypes wrapper around ``libespeak-ng`` (synchronous mode).

The library is driven directly (rather than the ``espeak-ng`` CLI) because its
WORD events give the start sample of every word for free, which the synthetic
corpus stores as word time stamps.

libespeak-ng keeps *process-global* state (voice, parameters, callback), so
only one :class:`EspeakSynthesizer` exists per process (:func:`get_synthesizer`)
and parallel synthesis must use worker processes, not threads.

Determinism: the library also keeps hidden state that carries over from one
utterance to the next (e.g. the function-static pitch "flutter" phase in
``wavegen.c``), so synthesizing the same text twice in one process gives a few
samples' difference. To make every utterance sample-identical regardless of
what was synthesized before (and of which worker got it), :meth:`synthesize`
by default forks a child from the initialized-but-never-used parent, lets the
child synthesize, and reads the result back through a pipe (~15 ms overhead).

Layout of ``espeak_EVENT`` (``speak_lib.h``, espeak-ng 1.51)::

    int type; unsigned int unique_identifier; int text_position; int length;
    int audio_position; int sample; void *user_data;
    union { int number; const char *name; char string[8]; } id;
"""

import ctypes
import ctypes.util
import os
import pickle

import numpy as np

from taste_toolkit.errors import DataPreparationError, InputError, MissingResourceError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 0x1
_SSML = 0x10
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_LIB_NAMES = ("libespeak-ng.so.1", "libespeak-ng.so")


def _libc_srand():
    """``srand`` of this process's C library (espeak-ng's noise generator), or None where not found."""
    try:
        return ctypes.CDLL(None).srand
    except (OSError, AttributeError, TypeError):  # e.g. Windows: no process-wide C library handle
        return None


_SRAND = _libc_srand()


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.POINTER(ctypes.c_short),
    ctypes.c_int,
    ctypes.POINTER(_Event),
)


def _load_library():
    """Return the loaded ``libespeak-ng`` or raise :class:`MissingResourceError`."""
    names = list(_LIB_NAMES)
    found = ctypes.util.find_library("espeak-ng")
    if found:
        names.append(found)
    errors = []
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError as exc:
            errors.append(f"{name}: {exc}")
    raise MissingResourceError(
        "Could not load the espeak-ng shared library needed for the synthetic "
        "corpus (" + "; ".join(errors) + "). Install it with "
        "`apt-get install espeak-ng` (Debian/Ubuntu; it brings libespeak-ng1)."
    )


class EspeakSynthesizer:
    """Text/SSML -> int16 waveform plus word start samples, via libespeak-ng.

    Use :func:`get_synthesizer` instead of constructing it twice in one
    process: the library has a single global state.
    """

    def __init__(self, isolate: bool = True):
        # Fork isolation needs os.fork (POSIX); elsewhere synthesis is in-process
        # and only deterministic for identical call sequences.
        self.isolate = bool(isolate) and hasattr(os, "fork")
        self._lib = _load_library()
        lib = self._lib
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [
            ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int
        ]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synchronize.restype = ctypes.c_int
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0)
        if rate <= 0:
            raise MissingResourceError(
                f"espeak_Initialize failed (returned {rate}); the espeak-ng data "
                "files are probably missing. Reinstall with `apt-get install --reinstall "
                "espeak-ng espeak-ng-data`."
            )
        self.sample_rate = int(rate)
        self._chunks = []
        self._word_events = []
        # Keep a reference: ctypes frees the trampoline if the object dies.
        self._callback = _SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, num_samples, events):
        if num_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_WORD:
                self._word_events.append((ev.text_position, ev.length, ev.sample))
            i += 1
        return 0  # 0 = continue synthesis

    def synthesize(self, ssml_or_text, voice, rate_wpm=175, pitch=50, return_positions=False):
        """Synthesize one utterance.

        Parameters
        ----------
        ssml_or_text : str
            Plain text, or SSML starting with ``<speak>``.
        voice : str
            espeak-ng voice file name, e.g. ``"en-us+m1"``.
        rate_wpm : int
            Baseline speaking rate in words per minute (80-450).
        pitch : int
            Baseline pitch, 0-99 (50 is the voice default).
        return_positions : bool
            Also return the text position of each WORD event.

        Returns
        -------
        samples : numpy.ndarray
            int16 waveform ``(T,)`` at ``sample_rate`` (22050 Hz for espeak-ng voices).
        sample_rate : int
            Native sample rate of ``samples``.
        word_start_samples : list of int
            Start sample of each spoken word, in order (one per WORD event).
        word_text_positions : list of int, only if ``return_positions``
            1-based character position in ``ssml_or_text`` of each WORD event,
            used to match events to the words that were written.
        """
        if self.isolate:
            result = self._synthesize_in_child(ssml_or_text, voice, rate_wpm, pitch)
        else:
            result = self._synthesize_here(ssml_or_text, voice, rate_wpm, pitch)
        return result if return_positions else result[:3]

    def _synthesize_in_child(self, ssml_or_text, voice, rate_wpm, pitch):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: synthesize from the pristine library state, report, exit
            os.close(read_fd)
            try:
                try:
                    payload = ("ok", self._synthesize_here(ssml_or_text, voice, rate_wpm, pitch))
                except Exception as exc:  # reported to and re-raised by the parent
                    payload = ("error", (type(exc).__name__, str(exc)))
                with os.fdopen(write_fd, "wb") as pipe:
                    pipe.write(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
            finally:
                os._exit(0)  # never run the parent's atexit handlers / pytest teardown
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        if not data:
            raise DataPreparationError(
                f"The espeak-ng synthesis child process died (wait status {status}) "
                f"while synthesizing {ssml_or_text!r} with voice {voice!r}."
            )
        kind, value = pickle.loads(data)
        if kind == "error":
            name, message = value
            raise InputError(f"espeak-ng synthesis failed ({name}): {message}")
        return value

    def _synthesize_here(self, ssml_or_text, voice, rate_wpm, pitch):
        if not isinstance(ssml_or_text, str) or not ssml_or_text.strip():
            raise InputError("espeak synthesis needs a non-empty text string.")
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:
            raise InputError(
                f"espeak-ng has no voice file named {voice!r}. Use names of files "
                "such as 'en-us+m1', 'en+f3', 'en-gb-x-rp+m3' (not 'en-gb+f4'); "
                "list them with `espeak-ng --voices=en`."
            )
        # Voices with breath noise (the +f variants) draw it from libc's rand(), whose
        # state is the whole process's: any other library calling rand() would change
        # the audio. Reseed to libc's start-up state so an utterance's samples depend
        # on its inputs only (same audio in-process, in a fork or in a pool worker).
        if _SRAND is not None:
            _SRAND(1)
        # Set after the voice: selecting a voice resets these parameters.
        lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
        lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        self._chunks, self._word_events = [], []
        data = ssml_or_text.encode("utf-8")
        flags = _CHARS_UTF8 | (_SSML if ssml_or_text.lstrip().startswith("<") else 0)
        err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
        if err != 0:
            raise InputError(f"espeak_Synth failed with code {err} for text {ssml_or_text!r}.")
        lib.espeak_Synchronize()
        samples = (
            np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        ).astype(np.int16, copy=False)
        starts = [int(ev[2]) for ev in self._word_events]
        positions = [int(ev[0]) for ev in self._word_events]
        return samples, self.sample_rate, starts, positions


_SYNTH = None


def get_synthesizer() -> EspeakSynthesizer:
    """Return this process's single :class:`EspeakSynthesizer` (created lazily)."""
    global _SYNTH
    if _SYNTH is None:
        _SYNTH = EspeakSynthesizer()
    return _SYNTH
