"""The one grammar of every ``--set``-style option: ``key=value`` with the value read as TOML (``200``, ``1e-3``,
``[0, 1]``, ``true``, ``"text"``), or else kept as plain text (``rf/lognorm(0.00, 1.00)``)."""

from __future__ import annotations

import tomllib
from typing import Any


def parse_assignment(item: str) -> tuple[str, str, Any] | None:
    """``"steps=200"`` -> ``("steps", "200", 200)``: the key, the value's text and its value (key and text
    stripped); None when ``item`` has no ``=`` or no key. Callers check the key and the value's kind."""
    key, sep, text = item.partition("=")
    key, text = key.strip(), text.strip()
    if not sep or not key:
        return None
    try:
        return key, text, tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return key, text, text
