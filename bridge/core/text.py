"""Cutting a streamed reply into what the TTS should get, and when to flush.

The TTS wants whole words, each piece ending in one space, and a ``flush`` at sentence ends
(ElevenLabs' own guidance; a piece without its trailing space can stall generation). An agent
streams arbitrary fragments ("Hel", "lo! How a", "re you?"), so we hold back the unfinished
last word and cut at sentence ends as soon as they are certain.
"""

from __future__ import annotations

import re

__all__ = ["split_ready_text"]

_SENTENCE_END = re.compile(r"[.!?…。！？]+[\"'”’)\]]*$")
_ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "etc.", "e.g.", "i.e.", "no.", "jr.", "sr.", "prof."}
)


def _ends_sentence(word: str) -> bool:
    return bool(_SENTENCE_END.search(word)) and word.lower() not in _ABBREVIATIONS


def split_ready_text(buffer: str, *, final: bool) -> tuple[list[tuple[str, bool]], str]:
    """Split ``buffer`` into ``(piece, flush)`` pairs ready to send, and the text to hold back.

    Without ``final`` the last word is held back unless whitespace follows it, since the next
    fragment may continue it. With ``final`` everything goes, and the last piece flushes.
    """
    if final:
        ready, rest = buffer, ""
    else:
        cut = max(buffer.rfind(" "), buffer.rfind("\n"), buffer.rfind("\t"))
        if cut < 0:
            return [], buffer
        ready, rest = buffer[:cut], buffer[cut + 1 :]
    pieces: list[tuple[str, bool]] = []
    words: list[str] = []
    for word in ready.split():
        words.append(word)
        if _ends_sentence(word):
            pieces.append((" ".join(words) + " ", True))
            words = []
    if words:
        pieces.append((" ".join(words) + " ", final))
    elif final and pieces:
        pieces[-1] = (pieces[-1][0], True)
    return pieces, rest
