"""On-disk cache of the trained auxiliary networks (CLIP-style evaluator, GenEval detector, classifier, autoencoder).

A trained network lives in one folder ``<cache_dir>/<kind>-<dataset>-<res>px-<key>/``:

* ``meta.json`` -- format version, kind, key, the dataset spec, the config, the seed, what training
  reported, and the SHA-256 of ``params.npz``;
* ``params.npz`` -- the parameters, one array per ``/``-joined path of the Flax parameter tree.

``key`` is the first 16 hex digits of the SHA-256 of the canonical JSON of (kind, code version, format
version, dataset spec, config, seed): any change to the data, the architecture, the training budget or the
seed gives another folder.  Folders are written to a temporary name and renamed into place
(:func:`trajbench.files.atomic_path`), so a killed run never leaves a half-written entry behind under the real
name.  The cache folder is ``cache_dir`` if given, else ``$TRAJBENCH_CACHE/evaluators`` if that variable is set,
else ``~/.cache/trajbench/evaluators``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from trajbench.errors import UserError
from trajbench.files import atomic_path

FORMAT_VERSION = 1


class EvaluatorCacheError(UserError, RuntimeError):
    """A cached evaluator that cannot be read (one line: which folder, what is wrong, what to do)."""


class EvaluatorConfigError(UserError, ValueError):
    """An evaluator config with an unknown field or an invalid value (one line: which, and the valid ones)."""


def cache_root(cache_dir=None) -> Path:
    """The folder holding cached evaluators (see the module docstring for the default)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("TRAJBENCH_CACHE")
    if env:
        return Path(env).expanduser() / "evaluators"
    return Path.home() / ".cache" / "trajbench" / "evaluators"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, tuple, set)):
        return list(obj.tolist() if isinstance(obj, np.ndarray) else obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def cache_key(kind: str, dataset_spec: dict, config: dict, seed: int, version: int = 1) -> str:
    """16 hex digits of ``sha256(canonical_json({kind, version, format, dataset, config, seed}))``; ``version``
    is the network code's version (bumped when the architecture or training changes without a config change)."""
    payload = {"kind": kind, "version": int(version), "format": FORMAT_VERSION, "dataset": dataset_spec,
               "config": config, "seed": int(seed)}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()[:16]


def entry_dir(root: Path, kind: str, dataset_spec: dict, key: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(dataset_spec.get("name", "data")))[:40].strip("_") or "data"
    res = dataset_spec.get("resolution", "x")
    return Path(root) / f"{kind}-{name}-{res}px-{key}"


def _flatten(tree, prefix=()):
    out = {}
    for k, v in tree.items():
        path = prefix + (str(k),)
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(_flatten(dict(v.items()), path))
        else:
            out["/".join(path)] = v
    return out


def _unflatten(flat: dict) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        parts = path.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return tree


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_entry(path: Path, params, meta: dict) -> Path:
    """Write ``params`` (a nested dict of arrays) and ``meta`` to the folder ``path`` atomically."""
    path = Path(path)
    if path.exists():  # replace a stale / corrupt entry
        shutil.rmtree(path, ignore_errors=True)
    try:
        with atomic_path(path) as tmp:
            tmp.mkdir()
            np.savez(tmp / "params.npz", **{k: np.asarray(v) for k, v in _flatten(params).items()})
            meta = dict(meta, format=FORMAT_VERSION, params_sha256=_sha256(tmp / "params.npz"))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=_json_default))
    except OSError:
        if not (path / "meta.json").exists():
            raise
        # another process wrote the entry meanwhile: keep theirs
    return path


def load_entry(path: Path, template, *, key: str) -> tuple[dict, dict]:
    """Read an entry written by :func:`save_entry`; check its key, checksum and every array's shape and dtype
    against ``template`` (a parameter tree of the expected structure).  Raises :class:`EvaluatorCacheError`."""
    path = Path(path)
    where = str(path)

    def fail(why):
        return EvaluatorCacheError(f"cached evaluator {where} is unusable ({why}); delete that folder to retrain")

    try:
        meta = json.loads((path / "meta.json").read_text())
    except FileNotFoundError:
        raise fail("meta.json is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise fail(f"meta.json is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
        raise fail("meta.json does not match this evaluator (wrong key or format version)")
    params_file = path / "params.npz"
    try:
        if _sha256(params_file) != meta.get("params_sha256"):
            raise fail("params.npz does not match the checksum in meta.json (truncated or modified)")
        with np.load(params_file, allow_pickle=False) as data:
            flat = {name: np.array(data[name]) for name in data.files}
    except EvaluatorCacheError:
        raise
    except FileNotFoundError:
        raise fail("params.npz is missing") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise fail(f"params.npz cannot be read: {type(exc).__name__}") from None
    expected = _flatten(template)
    if set(flat) != set(expected):
        raise fail("its parameter names differ from this code's network")
    for name, arr in expected.items():
        if flat[name].shape != tuple(arr.shape) or flat[name].dtype != np.dtype(arr.dtype):
            raise fail(f"parameter {name} has shape {flat[name].shape}, expected {arr.shape}")
    return _unflatten(flat), meta
