"""Real-data loaders with the :class:`~trajbench.data.base.Dataset` interface (never downloads anything).

``folder:/path/to/dir`` -- :class:`FolderDataset`
    A folder with ``captions.jsonl``: one JSON object per line, ``{"file": "relative/path.png", "caption": "..."}``
    (extra keys are kept as attributes). Images are loaded with Pillow, converted to RGB, center-cropped to
    a square and resized to the resolution. Each file goes to a split by ``zlib.crc32`` of its relative
    path (stable across machines and runs): by default 5% ``val``, 10% ``reference``, 10% ``evaluator``,
    the rest ``train``; inside a split, items keep the order of ``captions.jsonl``.

``cifar10:/path/to/cifar-10-batches-py`` -- :class:`CIFAR10Dataset`
    CIFAR-10's python-pickle archive (``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``),
    captioned ``"a photo of a <label>"``. ``train`` is the data batches in order; ``val``, ``reference`` and
    ``evaluator`` are carved from ``test_batch`` by a fixed hash order (default 10% / 50% / 40% of it).
    Images are resized from 32x32 with Pillow when another resolution is asked for.
"""

from __future__ import annotations

import json
import pickle
import zlib
from pathlib import Path

import numpy as np

from trajbench.data.base import (
    SPLITS,
    Dataset,
    DatasetError,
    check_resolution,
    check_sizes,
    check_split,
    stable_key,
    words_of,
)
from trajbench.data.render import item_uniforms

DEFAULT_FOLDER_FRACTIONS = {"val": 0.05, "reference": 0.10, "evaluator": 0.10}
DEFAULT_CIFAR_FRACTIONS = {"val": 0.10, "reference": 0.50, "evaluator": 0.40}
CAPTION_TEMPLATE = "a photo of a {}"
_CACHE_BYTES = 256 << 20


def _to_float(images_uint8: np.ndarray) -> np.ndarray:
    return images_uint8.astype(np.float32) * (2.0 / 255.0) - 1.0


def _check_fractions(fractions: dict | None, defaults: dict) -> dict:
    out = dict(defaults)
    for split, frac in (fractions or {}).items():
        if check_split(split) == "train":
            raise DatasetError("the train split takes what the other fractions leave; give val/reference/evaluator")
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac <= 1.0:
            raise DatasetError(f"fraction of split {split!r} must be a number in [0, 1], got {frac!r}")
        out[split] = float(frac)
    if sum(out.values()) > 1.0 + 1e-9:
        raise DatasetError(f"split fractions {out} add up to more than 1")
    return out


def _resize_square(image, resolution: int) -> np.ndarray:
    """PIL image -> uint8 [res, res, 3]: RGB, center-cropped to a square, resized (Lanczos)."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


class FolderDataset(Dataset):
    """Images listed in ``<folder>/captions.jsonl``; see the module docstring.

    Options: ``fractions={"val": 0.05, "reference": 0.1, "evaluator": 0.1}``.
    """

    def __init__(self, path, *, resolution: int = 32, seed: int = 0, fractions: dict | None = None):
        self.path = Path(path).expanduser()
        self.name = f"folder:{self.path}"
        self.resolution = check_resolution(resolution)
        self.seed = int(seed)
        self.fractions = _check_fractions(fractions, DEFAULT_FOLDER_FRACTIONS)
        listing = self.path / "captions.jsonl"
        if not self.path.is_dir():
            raise DatasetError(
                f"image folder not found: {self.path}; create it with the images and a captions.jsonl "
                'of lines {"file": "relative/path.png", "caption": "..."}'
            )
        if not listing.is_file():
            raise DatasetError(
                f"missing {listing}; write one JSON object per line: "
                '{"file": "relative/path.png", "caption": "..."}'
            )
        raw = listing.read_bytes()
        self._fingerprint = f"{zlib.crc32(raw):08x}"
        entries = []
        for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{listing}:{number}: not valid JSON ({exc.msg}); fix or remove that line")
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("file"), str)
                or not isinstance(entry.get("caption"), str)
            ):
                raise DatasetError(
                    f'{listing}:{number}: expected an object with string "file" and "caption", got {line.strip()[:80]!r}'
                )
            entries.append(entry)
        if not entries:
            raise DatasetError(f"{listing} lists no images; add lines {{\"file\": ..., \"caption\": ...}}")
        # split by crc32 of the relative path into 10,000 buckets
        bounds, edge = {}, 0.0
        for split in ("val", "reference", "evaluator"):
            bounds[split] = (edge, edge + self.fractions[split])
            edge += self.fractions[split]
        self._entries: dict[str, list[dict]] = {split: [] for split in SPLITS}
        for entry in entries:
            bucket = (zlib.crc32(entry["file"].encode("utf-8")) % 10_000) / 10_000
            where = next((s for s, (lo, hi) in bounds.items() if lo <= bucket < hi), "train")
            self._entries[where].append(entry)
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def split_size(self, split: str) -> int:
        return len(self._entries[check_split(split)])

    def _load(self, split: str, i: int) -> np.ndarray:
        key = (split, int(i))
        if key in self._cache:
            return self._cache[key]
        from PIL import Image, UnidentifiedImageError

        file = self.path / self._entries[split][i]["file"]
        try:
            with Image.open(file) as image:
                pixels = _resize_square(image, self.resolution)
        except FileNotFoundError:
            raise DatasetError(f"image listed in captions.jsonl not found: {file}; add it or remove its line")
        except (UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"cannot read image {file} ({exc}); replace it or remove its line from captions.jsonl")
        if len(self._cache) * pixels.nbytes < _CACHE_BYTES:
            self._cache[key] = pixels
        return pixels

    def images(self, split: str, indices) -> np.ndarray:
        idx = self.check_indices(split, indices)
        res = self.resolution
        out = np.empty((idx.size, res, res, 3), dtype=np.uint8)
        for j, i in enumerate(idx):
            out[j] = self._load(split, i)
        return _to_float(out)

    def captions(self, split: str, indices) -> list[str]:
        idx = self.check_indices(split, indices)
        return [self._entries[split][i]["caption"] for i in idx]

    def attributes(self, split: str, indices) -> list[dict]:
        idx = self.check_indices(split, indices)
        return [dict(self._entries[split][i]) for i in idx]

    def vocabulary(self) -> list[str]:
        return words_of(e["caption"] for entries in self._entries.values() for e in entries)

    def spec(self) -> dict:
        return {
            "name": self.name,
            "kind": "folder",
            "path": str(self.path.resolve()),
            "resolution": self.resolution,
            "seed": self.seed,
            "splits": {s: self.split_size(s) for s in SPLITS},
            "options": {"fractions": dict(self.fractions)},
            "fingerprint": self._fingerprint,
        }


class CIFAR10Dataset(Dataset):
    """CIFAR-10 from the python-pickle archive directory; see the module docstring.

    Options: ``sizes={"train": ..., "val": ..., "reference": ..., "evaluator": ...}`` (train: the first
    items of the data batches; the others must fit in ``test_batch`` together).
    """

    BATCHES = tuple(f"data_batch_{k}" for k in range(1, 6))

    def __init__(self, path, *, resolution: int = 32, seed: int = 0, sizes: dict | None = None):
        self.path = Path(path).expanduser()
        self.name = f"cifar10:{self.path}"
        self.resolution = check_resolution(resolution)
        self.seed = int(seed)
        fix = ("extract cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) and pass "
               "cifar10:/path/to/cifar-10-batches-py")
        if not self.path.is_dir():
            raise DatasetError(f"CIFAR-10 directory not found: {self.path}; {fix}")
        missing = [f for f in (*self.BATCHES, "test_batch", "batches.meta") if not (self.path / f).is_file()]
        if missing:
            raise DatasetError(f"CIFAR-10 archive at {self.path} lacks {', '.join(missing)}; {fix}")
        meta = self._unpickle("batches.meta")
        names = meta.get(b"label_names", meta.get("label_names"))
        if not isinstance(names, (list, tuple)) or not names:
            raise DatasetError(f"{self.path / 'batches.meta'} has no label_names list; re-extract the archive ({fix})")
        self.classes = tuple((n.decode() if isinstance(n, bytes) else str(n)).replace("_", " ") for n in names)
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        train_n = self._train_count()
        test_n = self._batch("test_batch")[0].shape[0]
        defaults = {"train": train_n}
        for split, frac in DEFAULT_CIFAR_FRACTIONS.items():
            defaults[split] = int(round(frac * test_n))
        defaults["evaluator"] = test_n - defaults["val"] - defaults["reference"]
        self._sizes = check_sizes(sizes, defaults)
        if self._sizes["train"] > train_n:
            raise DatasetError(f"train size {self._sizes['train']} exceeds the {train_n} CIFAR-10 training images")
        carved = self._sizes["val"] + self._sizes["reference"] + self._sizes["evaluator"]
        if carved > test_n:
            raise DatasetError(f"val + reference + evaluator sizes ({carved}) exceed the {test_n} images of test_batch")
        # fixed carving order of the test batch (independent of the seed: a reference set must stay put)
        order = np.argsort(item_uniforms(stable_key("cifar10-carve"), np.arange(test_n), 1)[:, 0], kind="stable")
        self._test_rows, start = {}, 0
        for split in ("val", "reference", "evaluator"):
            self._test_rows[split] = order[start : start + self._sizes[split]]
            start += self._sizes[split]
        self._fingerprint = f"{zlib.crc32((self.path / 'batches.meta').read_bytes()):08x}-{train_n}-{test_n}"

    def _train_count(self) -> int:
        self._rows("train", np.zeros(0, dtype=np.int64))
        return len(self._arrays["train"][1])

    def _unpickle(self, file: str) -> dict:
        path = self.path / file
        try:
            with open(path, "rb") as f:
                obj = pickle.load(f, encoding="bytes")
        except Exception as exc:  # truncated / not a pickle
            raise DatasetError(f"malformed CIFAR-10 file {path} ({type(exc).__name__}); re-extract the archive")
        if not isinstance(obj, dict):
            raise DatasetError(f"malformed CIFAR-10 file {path}: expected a dict; re-extract the archive")
        return obj

    def _batch(self, file: str) -> tuple[np.ndarray, np.ndarray]:
        if file not in self._arrays:
            obj = self._unpickle(file)
            data = obj.get(b"data", obj.get("data"))
            labels = obj.get(b"labels", obj.get("labels"))
            data = np.asarray(data) if data is not None else None
            if data is None or labels is None or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
                raise DatasetError(
                    f"malformed CIFAR-10 file {self.path / file}: expected b'data' uint8 [N, 3072] and N b'labels'; "
                    "re-extract the archive"
                )
            labels = np.asarray(labels, dtype=np.int64)
            if labels.size and (labels.min() < 0 or labels.max() >= len(self.classes)):
                raise DatasetError(f"malformed CIFAR-10 file {self.path / file}: labels outside 0..{len(self.classes) - 1}")
            images = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            self._arrays[file] = (np.ascontiguousarray(images), labels)
        return self._arrays[file]

    def _rows(self, split: str, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images and labels of the given items."""
        if split == "train":
            if "train" not in self._arrays:  # concatenate once, then drop the per-batch copies
                images = np.concatenate([self._batch(b)[0] for b in self.BATCHES])
                labels = np.concatenate([self._batch(b)[1] for b in self.BATCHES])
                for b in self.BATCHES:
                    del self._arrays[b]
                self._arrays["train"] = (images, labels)
            images, labels = self._arrays["train"]
            return images[idx], labels[idx]
        images, labels = self._batch("test_batch")
        rows = self._test_rows[split][idx]
        return images[rows], labels[rows]

    def split_size(self, split: str) -> int:
        return self._sizes[check_split(split)]

    def labels(self, split: str, indices) -> np.ndarray:
        return self._rows(split, self.check_indices(split, indices))[1]

    def images(self, split: str, indices) -> np.ndarray:
        idx = self.check_indices(split, indices)
        pixels, _ = self._rows(split, idx)
        if self.resolution != 32:
            from PIL import Image

            pixels = np.stack([_resize_square(Image.fromarray(p), self.resolution) for p in pixels]) if len(
                pixels
            ) else np.zeros((0, self.resolution, self.resolution, 3), np.uint8)
        return _to_float(pixels)

    def captions(self, split: str, indices) -> list[str]:
        return [CAPTION_TEMPLATE.format(self.classes[c]) for c in self.labels(split, indices)]

    def attributes(self, split: str, indices) -> list[dict]:
        idx = self.check_indices(split, indices)
        labels = self._rows(split, idx)[1]
        return [
            {"class_id": int(c), "class_name": self.classes[c], "caption": CAPTION_TEMPLATE.format(self.classes[c])}
            for c in labels
        ]

    def vocabulary(self) -> list[str]:
        return words_of(CAPTION_TEMPLATE.format(c) for c in self.classes)

    def spec(self) -> dict:
        return {
            "name": self.name,
            "kind": "cifar10",
            "path": str(self.path.resolve()),
            "resolution": self.resolution,
            "seed": self.seed,
            "splits": dict(self._sizes),
            "options": {},
            "fingerprint": self._fingerprint,
        }
