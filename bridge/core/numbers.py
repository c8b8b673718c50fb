"""Phone numbers: the one rule for what counts as a number we may dial or call from.

E.164 (ITU-T): a ``+``, a country code that does not start with 0, at most 15 digits in all. We
ask for at least 7 digits, so a short code or an extension is never taken for a number.
"""

from __future__ import annotations

import re

__all__ = ["E164", "is_e164"]

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def is_e164(number: str) -> bool:
    return bool(E164.match(number))
