"""Crash-safe file writes (a file is either absent or complete, never half-written: write, then rename), and
reading back the JSON files written so."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from trajbench.errors import UserError


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, value) -> Path:
    return write_text_atomic(path, json.dumps(value, indent=1) + "\n")


def read_json(path: str | Path, fix: str):
    """The value in a JSON file; a damaged file is a :class:`UserError` naming it and ``fix``."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; {fix}") from None
