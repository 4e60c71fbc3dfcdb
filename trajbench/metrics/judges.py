"""Which network judges the generated images: the FID / KID features and the CLIP score.

A choice is ``inhouse`` (the evaluator trained per dataset, :mod:`trajbench.metrics.evaluator`),
``inception:PATH`` (FID Inception pool3 features; features only, :mod:`trajbench.metrics.inception`) or
``clip:PATH`` (a converted CLIP: image embeddings as features, cosine as CLIP score; :mod:`trajbench.metrics.clip`).
In a spec a choice may name environment variables (``$VAR``, ``${VAR}``) and may be a list, of which the first
entry whose variables are all set is taken: ``["inception:$TRAJBENCH_INCEPTION", "inhouse"]``.

Identity: numbers depend on the weights, not on where the file lies, so a choice is identified by
``inhouse``, ``inception:<sha256>`` or ``clip:<architecture>:<sha256>`` (the first 16 hex digits of the file's
SHA-256); results with different identities are never mixed in one table.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from trajbench.errors import UserError

__all__ = ["INHOUSE", "INHOUSE_JUDGES", "ROLES", "JudgeChoiceError", "check_choice", "identities", "identity",
           "load_judge", "resolve_choice"]

INHOUSE = "inhouse"
ROLES = {"features": ("inhouse", "inception", "clip"), "clip_score": ("inhouse", "clip")}
"""What each role may be judged by."""
INHOUSE_JUDGES = {"features": INHOUSE, "clip_judge": INHOUSE}
"""The identities of the default judges, as result rows record them (columns ``features`` and ``clip_judge``)."""

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


class JudgeChoiceError(UserError, ValueError):
    """A malformed choice of judge (one line naming the role, the value and the accepted forms)."""


def _forms(role: str) -> str:
    return " | ".join(kind if kind == INHOUSE else f"{kind}:PATH" for kind in ROLES[role])


def parse(text: str, role: str) -> tuple[str, str]:
    """``"inception:/w/inc.npz"`` -> ``("inception", "/w/inc.npz")``; ``"inhouse"`` -> ``("inhouse", "")``."""
    if role not in ROLES:
        raise JudgeChoiceError(f"unknown judge role {role!r}; roles are {', '.join(ROLES)}")
    kind, sep, path = str(text).partition(":")
    if kind not in ROLES[role] or (kind == INHOUSE) == bool(sep) or (sep and not path.strip()):
        raise JudgeChoiceError(f"{role} = {text!r} is not one of {_forms(role)}")
    return kind, path.strip()


def resolve_choice(value, role: str) -> str:
    """The concrete choice of a spec value: environment variables expanded (``~`` too), and of a list the first
    entry whose variables are all set.  JudgeChoiceError when none is usable or the form is wrong."""
    entries = list(value) if isinstance(value, (list, tuple)) else [value]
    if not entries or not all(isinstance(entry, str) for entry in entries):
        raise JudgeChoiceError(f"{role} must be a string or a list of strings ({_forms(role)}), got {value!r}")
    for entry in entries:
        names = [a or b for a, b in _VARIABLE.findall(entry)]
        if all(os.environ.get(name) for name in names):
            text = _VARIABLE.sub(lambda m: os.environ[m[1] or m[2]], entry)
            kind, path = parse(text, role)
            return kind if kind == INHOUSE else f"{kind}:{Path(path).expanduser()}"
    unset = sorted({a or b for entry in entries for a, b in _VARIABLE.findall(entry)} - set(os.environ))
    raise JudgeChoiceError(f"{role} = {value!r}: no entry is usable (unset: {', '.join(unset)}); set the variable or "
                           f"add \"{INHOUSE}\" as a last entry")


def identity(choice: str, role: str) -> str:
    """The identity of a resolved choice (see the module docstring); reads only the file's bytes and, for a
    CLIP, its recorded architecture."""
    kind, path = parse(choice, role)
    if kind == INHOUSE:
        return INHOUSE
    digest = _digest_or_explain(kind, path)
    if kind == "clip":
        from trajbench.metrics.clip import clip_arch_of

        return f"clip:{clip_arch_of(path).name}:{digest}"
    return f"{kind}:{digest}"


def identities(features: str, clip_score: str) -> dict[str, str]:
    """``{"features": identity, "clip_judge": identity}``: the judges of a row, as the results table records them."""
    return {"features": identity(features, "features"), "clip_judge": identity(clip_score, "clip_score")}


def _digest_or_explain(kind: str, path: str) -> str:
    from trajbench.metrics.external import file_digest

    if not Path(path).expanduser().is_file():
        from trajbench.metrics.clip import CONVERT_COMMAND as CLIP_COMMAND
        from trajbench.metrics.inception import CONVERT_COMMAND as INCEPTION_COMMAND

        command = CLIP_COMMAND if kind == "clip" else INCEPTION_COMMAND
        raise FileNotFoundError(f"{kind} weights not found at {path}; convert them once with: {command}")
    return file_digest(path)


class InceptionJudge:
    """FID Inception pool3 features in the judge interface (``fid_features``)."""

    def __init__(self, inception):
        self.inception = inception

    def fid_features(self, images) -> np.ndarray:
        return self.inception(images)


def load_judge(choice: str, role: str, loaded: dict | None = None):
    """The network of an external choice, loaded and checked (one-line errors naming the file, the key and the
    fix); ``loaded`` shares one network between roles that name the same file.  None for ``inhouse``."""
    kind, path = parse(choice, role)
    if kind == INHOUSE:
        return None
    loaded = {} if loaded is None else loaded
    if path not in loaded:
        _digest_or_explain(kind, path)
        if kind == "clip":
            from trajbench.metrics.clip import load_clip

            loaded[path] = load_clip(path)
        else:
            from trajbench.metrics.inception import load_inception

            loaded[path] = InceptionJudge(load_inception(path))
    return loaded[path]


def check_choice(choice: str, role: str) -> None:
    """Load (and drop) the weights of a choice, so a bad file stops a grid before any cell runs."""
    load_judge(choice, role)
