"""What the Exotel Voicebot applet's dynamic URL answers: JSON naming the WebSocket to open.

The applet's URL may be an https endpoint instead of a wss one; Exotel then fetches it and opens
the socket named by the key ``url`` of the JSON it returns
(https://support.exotel.com/support/solutions/articles/3000108630). This lets each call get its
own signed stream URL, and the sample rate travel as ``?sample-rate=``.
"""

from __future__ import annotations

__all__ = ["stream_url_json"]


def stream_url_json(ws_url: str, rate: int = 8000) -> dict[str, str]:
    if not ws_url.startswith(("wss://", "ws://")):
        raise ValueError("the stream URL must be ws:// or wss://")
    return {"url": ws_url if rate == 8000 else f"{ws_url}?sample-rate={rate}"}
