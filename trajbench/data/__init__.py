"""Datasets: two generated, captioned image datasets (the defaults; nothing is ever downloaded) and loaders.

* ``synth-imagenet`` -- an ImageNet analogue: one of ten shape classes per image (circle, square, triangle,
  star, ring, cross, heart, diamond, crescent, arrow) with varied colour, position, size, rotation and
  background, captioned ``"a photo of a <class>"``.
* ``synth-cc12m`` -- a CC12M analogue: scenes of 1-3 coloured shapes with counts and spatial relations,
  described by varied captions, with ground-truth attributes and GenEval categories for every image.
* ``folder:/path/to/dir`` -- images listed in ``captions.jsonl``; ``cifar10:/path/to/cifar-10-batches-py``.

Every dataset has the splits ``train``, ``val``, ``reference`` and ``evaluator`` and returns float32
images ``[N, H, W, 3]`` in ``[-1, 1]``. See :mod:`trajbench.data.synthetic` and :mod:`trajbench.data.real`.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from trajbench.data.base import SPLITS, Dataset, DatasetError, tokenize
from trajbench.data.synthetic import (
    GENERATED,
    GENEVAL_CATEGORIES,
    IMAGENET_CLASSES,
    SynthCC12M,
    SynthImageNet,
)

DATASET_NAMES: tuple[str, ...] = ("synth-imagenet", "synth-cc12m")
LOADER_PREFIXES: dict[str, str] = {"folder": "folder:/path/to/dir", "cifar10": "cifar10:/path/to/cifar-10-batches-py"}


def _unknown(name: str) -> DatasetError:
    text = str(name).strip()
    candidates = list(DATASET_NAMES) + [f"{p}:" for p in LOADER_PREFIXES]
    close = difflib.get_close_matches(text.lower(), candidates, n=2, cutoff=0.4)
    if ":" in text and not close:  # a misspelt loader prefix with a path
        prefix = text.split(":", 1)[0].lower()
        close = [f"{p}:" for p in difflib.get_close_matches(prefix, list(LOADER_PREFIXES), n=1, cutoff=0.4)]
    hint = f"did you mean {' or '.join(repr(LOADER_PREFIXES.get(c[:-1], c)) for c in close)}? " if close else ""
    valid = ", ".join(list(DATASET_NAMES) + list(LOADER_PREFIXES.values()))
    return DatasetError(f"unknown dataset {text!r}; {hint}valid names: {valid}")


def check_dataset_name(name: str) -> None:
    """Raise :class:`DatasetError` unless ``name`` is a generated dataset or a loader prefix with an existing
    folder (checked without reading the data)."""
    if isinstance(name, str) and name in GENERATED:
        return
    prefix, sep, path = name.partition(":") if isinstance(name, str) else ("", "", "")
    if not (sep and prefix in LOADER_PREFIXES and path.strip() and Path(path.strip()).expanduser().is_dir()):
        get_dataset(name)  # raises, saying what is unknown or missing


def get_dataset(name: str, *, resolution: int = 32, seed: int = 0, **options) -> Dataset:
    """The dataset called ``name`` at ``resolution`` x ``resolution``.

    ``name`` is one of :data:`DATASET_NAMES`, ``"folder:/path/to/dir"`` or
    ``"cifar10:/path/to/cifar-10-batches-py"``. ``options`` go to the dataset: split sizes for the generated
    ones (``sizes={"train": 1000}`` or ``train_size=1000``), ``num_classes`` for synth-imagenet,
    ``categories`` for synth-cc12m, ``fractions`` for folders, ``sizes`` for CIFAR-10.
    Raises :class:`DatasetError` (a ``ValueError``) for unknown names or options and missing / malformed data.
    """
    if not isinstance(name, str):
        raise _unknown(repr(name))
    if name in GENERATED:
        cls = GENERATED[name]
        return _construct(cls, name, resolution=resolution, seed=seed, **options)
    prefix, sep, path = name.partition(":")
    if sep and prefix in LOADER_PREFIXES:
        if not path.strip():
            raise DatasetError(f"dataset {name!r} needs a path, e.g. {LOADER_PREFIXES[prefix]}")
        from trajbench.data.real import CIFAR10Dataset, FolderDataset

        cls = FolderDataset if prefix == "folder" else CIFAR10Dataset
        return _construct(cls, name, path.strip(), resolution=resolution, seed=seed, **options)
    raise _unknown(name)


def _construct(cls, name, *args, **kwargs):
    try:
        return cls(*args, **kwargs)
    except TypeError as exc:  # an unknown keyword option
        if "unexpected keyword argument" in str(exc):
            bad = str(exc).rsplit("argument", 1)[-1].strip()
            raise DatasetError(f"dataset {name!r} has no option {bad}; see help(trajbench.data.get_dataset)") from None
        raise


__all__ = [
    "DATASET_NAMES",
    "GENEVAL_CATEGORIES",
    "IMAGENET_CLASSES",
    "SPLITS",
    "Dataset",
    "DatasetError",
    "SynthCC12M",
    "SynthImageNet",
    "check_dataset_name",
    "get_dataset",
    "tokenize",
    "write_preview",
]


def write_preview(dataset, out_path, *, n=16, split="train", columns=4):
    """See :func:`trajbench.data.preview.write_preview` (imported lazily: matplotlib is slow to import)."""
    from trajbench.data.preview import write_preview as _write

    return _write(dataset, out_path, n=n, split=split, columns=columns)
