"""A local stand-in for ElevenLabs' multi-context TTS WebSocket, faithful enough to test a bridge against.

Tests and benchmarks cannot use the real service (it costs money, needs a key, and its timing
is not reproducible), but a mock that is *nicer* than the real thing hides exactly the bugs that
matter. So this server reproduces the behaviour documented in ``shared/protocols.md`` §1,
including the unpleasant parts:

* ``flush`` never yields ``isFinal``; only ``close_context`` (or a server-side timeout, or
  ``close_socket``) does, and ``close_context`` is graceful: held text is still voiced, and that
  audio arrives *after* the close (§1.6.1-2).
* A closed context keeps its slot until its ``isFinal`` has been sent; a message for a sixth id
  while five are open or draining gets ``max_active_conversations`` and a 1008 close (§1.6.3).
* Any message for an unknown id opens a context implicitly (a "phantom" one); a later
  ``voice_settings`` for an open id closes the socket with 1008 (§1.3, pipecat's observation).
* Text is buffered until the ``chunk_length_schedule`` step is reached, unless ``flush``,
  ``close_context`` or ``auto_mode=true`` (§1.8).
* Audio chunks have arbitrary sizes, never aligned to 20 ms (§1.4).
* Optional: the close-before-synthesis race of §1.6.4 (``close_race_ms``).

The audio is a tone whose frequency identifies the context (:meth:`FakeElevenLabs.frequency_of`),
so a test can tell from what reaches the phone whose audio it is hearing, even after µ-law and
resampling.

The modules, by job:

* :mod:`.protocol`: one connection's context table, the API's behaviour (and the choices made
  where protocols.md is unsure); :mod:`.context`: one context's buffer and queue;
* :mod:`.audio`: the tone, its wire encoding, chunk sizes, alignment;
* :mod:`.faults`: the knobs a test turns to make the service misbehave;
* :mod:`.connection`: the WebSocket I/O and the records tests assert on;
* :mod:`.server`: :class:`FakeElevenLabs` itself; :mod:`.cli`: the command line.

Run it by hand with ``python -m bridge.testing.fake_elevenlabs --port 9000 --api-key test``.
"""

from bridge.testing.fake_elevenlabs.audio import chunk_alignment, plan_chunks, render_tone, tone_frequency, ulaw_encode
from bridge.testing.fake_elevenlabs.cli import main
from bridge.testing.fake_elevenlabs.connection import ConnectionRecord, SentFrame
from bridge.testing.fake_elevenlabs.context import DEFAULT_SCHEDULE, FakeContext, Segment
from bridge.testing.fake_elevenlabs.faults import FaultKnobs
from bridge.testing.fake_elevenlabs.protocol import (
    MAX_CONTEXTS,
    SAMPLE_RATES,
    Failure,
    MultiContextSession,
    SessionParams,
    parse_query,
)
from bridge.testing.fake_elevenlabs.server import FakeElevenLabs

__all__ = [
    "DEFAULT_SCHEDULE",
    "MAX_CONTEXTS",
    "SAMPLE_RATES",
    "ConnectionRecord",
    "Failure",
    "FakeContext",
    "FakeElevenLabs",
    "FaultKnobs",
    "MultiContextSession",
    "Segment",
    "SentFrame",
    "SessionParams",
    "chunk_alignment",
    "main",
    "parse_query",
    "plan_chunks",
    "render_tone",
    "tone_frequency",
    "ulaw_encode",
]
