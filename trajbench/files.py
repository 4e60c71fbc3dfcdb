"""Crash-safe file writes (a file is either absent or complete, never half-written: write, then rename), and
reading back the JSON files written so."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

from trajbench.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """A temporary path beside ``path`` (same folder, ending in ``path``'s name, so its suffix is kept) for the
    block to write a file or a folder to; ``os.replace``-d onto ``path`` when the block succeeds, removed when
    it fails (or the rename does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, value) -> Path:
    return write_text_atomic(path, json.dumps(value, indent=1) + "\n")


def read_json(path: str | Path, fix: str):
    """The value in a JSON file; a damaged file is a :class:`UserError` naming it and ``fix``."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; {fix}") from None
