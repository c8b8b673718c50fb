"""A minimal ctypes binding to espeak-ng, the engine behind the offline voice.

espeak-ng is GPL-3.0, so bridge (MIT) never requires it: it is the optional extra
``bridge[voice]``, which pulls the ``espeakng-loader`` wheel (libespeak-ng plus its data). Without
the wheel a system ``libespeak-ng`` is used, if the dynamic linker can find one.

espeak-ng keeps its voice, rate and output callback in process-global state, so this module
initialises it once per process and runs every synthesis on one dedicated worker thread: calls of
different phone calls queue up instead of corrupting each other, and the event loop never blocks
on the engine. Synthesis runs in ``AUDIO_OUTPUT_SYNCHRONOUS`` mode, where the engine hands its
samples (16-bit mono, 22 050 Hz) to a callback while ``espeak_Synth`` runs on the calling thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["Espeak", "EspeakError", "EspeakUnavailable", "find_library", "load", "prepare", "run"]

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000  # without it, espeak-ng calls exit() when its data is missing
POS_CHARACTER = 1
CHARS_UTF8 = 1
ENDPAUSE = 0x1000  # a short pause after the text, so sentences voiced one by one don't run together
PARAM_RATE = 1
EE_OK = 0

# int callback(short *wav, int numsamples, espeak_EVENT *events): return 1 to abort synthesis.
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)

INSTALL_HINT = "pip install 'bridge[voice]' (or install the espeak-ng library, e.g. apt install espeak-ng)"


class EspeakUnavailable(RuntimeError):
    """No usable libespeak-ng on this machine; the message says how to get one."""


class EspeakError(RuntimeError):
    """The engine refused a request (an unknown voice, a failed synthesis)."""


class Espeak:
    """The process's one initialised engine. Every method is blocking and serialised by a lock."""

    def __init__(self, lib: ctypes.CDLL, data_path: str | None) -> None:
        self._lib = lib
        self._lock = threading.Lock()
        self._samples: list[bytes] = []
        self._abort: threading.Event | None = None
        self._voice: tuple[str, int] | None = None
        _declare(lib)
        path = data_path.encode() if data_path is not None else None
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, path, INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakUnavailable(f"espeak-ng failed to initialise (data at {data_path!r}); {INSTALL_HINT}")
        self.sample_rate: int = rate
        # Kept on the instance: ctypes does not keep the thunk alive, and a collected one crashes.
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: int | None, count: int, _events: int | None) -> int:
        """Called by espeak-ng on the synthesising thread with each block of samples."""
        if wav and count > 0:
            self._samples.append(ctypes.string_at(wav, count * 2))
        abort = self._abort
        return 1 if abort is not None and abort.is_set() else 0

    def use_voice(self, voice: str, rate_wpm: int) -> None:
        """Select voice and rate, only when they differ from the last ones (loading costs time)."""
        with self._lock:
            self._select(voice, rate_wpm)

    def _select(self, voice: str, rate_wpm: int) -> None:
        if self._voice == (voice, rate_wpm):
            return
        self._voice = None
        if self._lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
            raise EspeakError(f"espeak-ng has no voice {voice!r}")
        if self._lib.espeak_SetParameter(PARAM_RATE, rate_wpm, 0) != EE_OK:
            raise EspeakError(f"espeak-ng refused the rate {rate_wpm} wpm")
        self._voice = (voice, rate_wpm)

    def synthesize(
        self, text: str, *, voice: str, rate_wpm: int, abort: threading.Event | None = None
    ) -> bytes:
        """Voice ``text`` as PCM16 mono at ``sample_rate``; stops early (partial audio) on ``abort``."""
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            if abort is not None and abort.is_set():
                return b""
            self._select(voice, rate_wpm)
            self._samples, self._abort = [], abort
            try:
                status = self._lib.espeak_Synth(
                    data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8 | ENDPAUSE, None, None
                )
                pcm = b"".join(self._samples)
            finally:
                self._samples, self._abort = [], None
        if status != EE_OK and not (abort is not None and abort.is_set()):
            raise EspeakError(f"espeak_Synth failed with status {status}")
        return pcm


def _declare(lib: ctypes.CDLL) -> None:
    """Prototypes, so ctypes converts arguments right instead of guessing ints."""
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]  # fmt: skip
    lib.espeak_Synth.restype = ctypes.c_int


def find_library() -> tuple[ctypes.CDLL, str | None]:
    """The wheel's library and data first, then the system's (which knows its own data path)."""
    problems: list[str] = []
    try:
        import espeakng_loader
    except ImportError:
        problems.append("the espeakng-loader wheel is not installed")
    else:
        try:
            return ctypes.CDLL(espeakng_loader.get_library_path()), espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as exc:
            problems.append(f"the espeakng-loader wheel is unusable ({exc})")
    name = ctypes.util.find_library("espeak-ng")
    if name is None:
        problems.append("no system libespeak-ng found")
    else:
        try:
            return ctypes.CDLL(name), None
        except OSError as exc:
            problems.append(f"the system {name} does not load ({exc})")
    raise EspeakUnavailable(f"the offline voice needs espeak-ng: {'; '.join(problems)}. {INSTALL_HINT}")


_engine: Espeak | None = None
_engine_lock = threading.Lock()
_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")


def load() -> Espeak:
    """The process's engine, initialised on first use; raises `EspeakUnavailable`. Blocking."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Espeak(*find_library())
        return _engine


async def run(text: str, *, voice: str, rate_wpm: int, abort: threading.Event | None = None) -> bytes:
    """`Espeak.synthesize` on the shared worker thread; cancelling drops the job if not yet started."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        _worker, lambda: load().synthesize(text, voice=voice, rate_wpm=rate_wpm, abort=abort)
    )


async def prepare(voice: str, rate_wpm: int) -> int:
    """Load the engine and check the voice off the event loop; the engine's sample rate."""
    loop = asyncio.get_running_loop()

    def check() -> int:
        engine = load()
        engine.use_voice(voice, rate_wpm)
        return engine.sample_rate

    return await loop.run_in_executor(_worker, check)
