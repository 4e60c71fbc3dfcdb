"""Tests of trajbench.data: generated datasets, real-data loaders, errors and previews."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import zlib

import numpy as np
import pytest

from trajbench.data import (
    DATASET_NAMES,
    GENEVAL_CATEGORIES,
    IMAGENET_CLASSES,
    SPLITS,
    Dataset,
    DatasetError,
    get_dataset,
    tokenize,
    write_preview,
)
from trajbench.data.synthetic import (
    BACKGROUND_NAMES,
    CC12M_SHAPES,
    COLOR_NAMES,
    RELATION_PHRASES,
    RELATIONS,
    plural,
)

from fixtures_data import CIFAR_LABELS as LABELS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _digests(images: np.ndarray) -> set[str]:
    return {hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images}


@pytest.fixture(scope="module")
def imagenet():
    return get_dataset("synth-imagenet")


@pytest.fixture(scope="module")
def cc12m():
    return get_dataset("synth-cc12m")


# ---- the interface -------------------------------------------------------------------------------
def test_names_and_defaults():
    assert DATASET_NAMES == ("synth-imagenet", "synth-cc12m")
    for name in DATASET_NAMES:
        ds = get_dataset(name)
        assert isinstance(ds, Dataset)
        assert (ds.name, ds.resolution, ds.channels, ds.seed) == (name, 32, 3, 0)
        assert {s: ds.split_size(s) for s in SPLITS} == {
            "train": 50_000, "val": 1_000, "reference": 2_000, "evaluator": 10_000,
        }
        spec = ds.spec()
        assert json.loads(json.dumps(spec)) == spec
        assert spec["name"] == name and spec["resolution"] == 32 and spec["seed"] == 0
        assert spec["splits"]["train"] == 50_000


def test_spec_identifies_the_data():
    base = get_dataset("synth-cc12m").spec()
    assert get_dataset("synth-cc12m").spec() == base
    assert get_dataset("synth-cc12m", seed=1).spec() != base
    assert get_dataset("synth-cc12m", resolution=16).spec() != base
    assert get_dataset("synth-cc12m", train_size=10).spec() != base
    assert get_dataset("synth-imagenet", num_classes=5).spec()["options"] == {"num_classes": 5}


def test_split_sizes_are_configurable():
    ds = get_dataset("synth-imagenet", sizes={"train": 100, "val": 7}, evaluator_size=3)
    assert [ds.split_size(s) for s in SPLITS] == [100, 7, 2_000, 3]
    ds.images("train", [99])
    with pytest.raises(DatasetError, match="out of range"):
        ds.images("train", [100])
    with pytest.raises(DatasetError, match="non-negative"):
        get_dataset("synth-imagenet", sizes={"val": -1})


@pytest.mark.parametrize("name", DATASET_NAMES)
@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_shape_dtype_range(name, resolution):
    ds = get_dataset(name, resolution=resolution)
    batch = ds.batch("train", np.arange(40))
    images = batch["images"]
    assert images.shape == (40, resolution, resolution, 3)
    assert images.dtype == np.float32
    assert np.isfinite(images).all()
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.min() < -0.5 and images.max() > 0.5  # uses the range, not a constant
    assert len(batch["captions"]) == 40 and all(isinstance(c, str) and c for c in batch["captions"])
    # every image has an object: not flat
    assert (images.reshape(40, -1).std(axis=1) > 0.05).all()


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_resolutions_render_the_same_scene(name):
    """A 64x64 render, 2x2-average-pooled, matches the 32x32 render of the same item."""
    big = get_dataset(name, resolution=64).images("val", np.arange(64))
    small = get_dataset(name, resolution=32).images("val", np.arange(64))
    pooled = big.reshape(64, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    other = get_dataset(name, resolution=32).images("val", np.arange(64, 128))
    assert np.abs(pooled - small).mean() < 0.01
    assert np.abs(other - small).mean() > 0.3


# ---- determinism and disjointness ----------------------------------------------------------------
@pytest.mark.parametrize("name", DATASET_NAMES)
def test_deterministic_independent_of_batch(name):
    ds = get_dataset(name)
    idx = np.arange(300)
    whole = ds.images("train", idx)
    again = get_dataset(name).images("train", idx)  # a fresh instance
    assert np.array_equal(whole, again)
    singles = np.concatenate([ds.images("train", [i]) for i in (0, 7, 123, 299)])
    assert np.array_equal(singles, whole[[0, 7, 123, 299]])
    shuffled = np.random.default_rng(0).permutation(idx)
    assert np.array_equal(ds.images("train", shuffled), whole[shuffled])
    mixed = ds.images("train", [5000, 123, 40_000, 7])  # in a batch with other items
    assert np.array_equal(mixed[[1, 3]], whole[[123, 7]])
    assert ds.captions("train", [123, 7]) == [ds.captions("train", idx)[i] for i in (123, 7)]
    assert ds.attributes("train", [123]) == [ds.attributes("train", idx)[123]]


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_different_seeds_differ(name):
    a = get_dataset(name, seed=0).images("train", np.arange(50))
    b = get_dataset(name, seed=1).images("train", np.arange(50))
    assert not (_digests(a) & _digests(b))
    assert np.abs(a - b).mean() > 0.3


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_splits_are_disjoint(name):
    ds = get_dataset(name)
    idx = np.arange(400)
    digests = {split: _digests(ds.images(split, idx)) for split in SPLITS}
    for split in SPLITS:
        assert len(digests[split]) == len(idx)  # no duplicates inside a split either
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not (digests[a] & digests[b]), (a, b)


# ---- synth-imagenet ----------------------------------------------------------------------------------
def test_imagenet_captions_match_classes(imagenet):
    idx = np.arange(200)
    captions = imagenet.captions("train", idx)
    attrs = imagenet.attributes("train", idx)
    assert len(IMAGENET_CLASSES) >= 10
    for caption, attr in zip(captions, attrs):
        assert caption == f"a photo of a {attr['class_name']}"
        assert attr["class_name"] == IMAGENET_CLASSES[attr["class_id"]]
        assert attr["caption"] == caption
    seen = {a["class_id"] for a in attrs[:50]}
    assert seen == set(range(len(IMAGENET_CLASSES)))  # all classes, balanced by index
    assert np.array_equal(imagenet.labels("train", idx), [a["class_id"] for a in attrs])
    assert json.loads(json.dumps(attrs)) == attrs


def test_imagenet_varies_within_a_class(imagenet):
    idx = np.arange(0, 1000, len(IMAGENET_CLASSES))  # all class 0
    attrs = imagenet.attributes("train", idx)
    assert {a["class_id"] for a in attrs} == {0}
    for key in ("x", "y", "size", "rotation"):
        values = np.array([a[key] for a in attrs])
        assert values.std() > 0.02, key
    colors = np.array([a["color"] for a in attrs])
    assert colors.std(axis=0).min() > 0.1
    assert {a["background"]["kind"] for a in attrs} == {"plain", "stripes", "checker"}
    assert {a["background"]["brightness"] for a in attrs} == {"light", "dark"}


def test_imagenet_object_drawn_where_attributes_say(imagenet):
    """Filled classes: the pixel at the object's centre has the object's colour, the corners do not."""
    res = imagenet.resolution
    idx = [i for i in range(300) if IMAGENET_CLASSES[i % 10] in ("circle", "square", "heart")][:60]
    images = (imagenet.images("train", idx) + 1) / 2
    for image, attr in zip(images, imagenet.attributes("train", idx)):
        cx = min(int(attr["x"] * res), res - 1)
        cy = min(int((attr["y"] - (0.08 if attr["class_name"] == "heart" else 0.0) * attr["size"]) * res), res - 1)
        color = np.array(attr["color"])
        assert np.abs(image[cy, cx] - color).max() < 0.3, attr
        x0, y0, x1, y1 = attr["bbox"]
        inside = (x0 - 0.02) * res <= 0.5 and (y0 - 0.02) * res <= 0.5  # the top-left corner pixel is in the box
        if not inside:
            assert np.abs(image[0, 0] - color).max() > 0.1


def test_imagenet_contrast(imagenet):
    """Object and background differ in luma by at least ~0.3 (the class is visible)."""
    luma = np.array([0.299, 0.587, 0.114])
    for attr in imagenet.attributes("val", np.arange(300)):
        obj = np.array(attr["color"]) @ luma
        bg = np.array(attr["background"]["colors"][0]) @ luma
        assert abs(obj - bg) > 0.25


def test_num_classes_option():
    ds = get_dataset("synth-imagenet", num_classes=4)
    assert {a["class_name"] for a in ds.attributes("train", range(40))} == set(IMAGENET_CLASSES[:4])
    assert ds.vocabulary() == sorted({"a", "photo", "of", *IMAGENET_CLASSES[:4]})
    with pytest.raises(DatasetError, match="num_classes"):
        get_dataset("synth-imagenet", num_classes=1)


# ---- synth-cc12m -------------------------------------------------------------------------------------
_BG = re.compile(r" on an? (\w+) background$")


def _check_caption(caption: str, attr: dict) -> None:
    objects = attr["objects"]
    category = attr["category"]
    assert attr["caption"] == caption
    assert attr["count"] == len(objects)
    text = caption
    bg = _BG.search(text)
    if bg:
        assert bg.group(1) == attr["background"]
        text = text[: bg.start()]
    words = tokenize(text)
    shapes = [o["shape"] for o in objects]
    colors = [o["color"] for o in objects]
    named_shapes = [w for w in words if w in CC12M_SHAPES]
    named_plurals = [w for w in words if w in {plural(s) for s in CC12M_SHAPES}]
    named_colors = [w for w in words if w in COLOR_NAMES]
    if category in ("single_object", "colors"):
        assert len(objects) == 1 and named_shapes == shapes and not named_plurals
        if category == "colors":
            assert named_colors == colors
        else:
            assert not named_colors
        size_words = [w for w in words if w in ("small", "medium", "large")]
        assert size_words in ([], [objects[0]["size_label"]])
    elif category == "counting":
        assert len(objects) in (2, 3) and len(set(shapes)) == 1
        assert named_plurals == [plural(shapes[0])] and not named_shapes
        assert {"two": 2, "three": 3}[next(w for w in words if w in ("two", "three"))] == len(objects)
        if named_colors:
            assert named_colors == [colors[0]] and len(set(colors)) == 1
    else:  # two_object, position, color_attr: object 0 named first, object 1 second
        assert len(objects) == 2 and shapes[0] != shapes[1]
        assert named_shapes == shapes
        if category == "color_attr":
            assert named_colors == colors and colors[0] != colors[1]
        elif named_colors:
            assert category == "position" and named_colors == colors
        if category == "position":
            phrase = RELATION_PHRASES[attr["relation"]["relation"]]
            assert f" {phrase} " in f" {text} "
        else:
            assert not any(f" {p} " in f" {text} " for p in RELATION_PHRASES.values())


def test_cc12m_captions_match_attributes(cc12m):
    idx = np.arange(1500)
    captions = cc12m.captions("train", idx)
    attrs = cc12m.attributes("train", idx)
    for caption, attr in zip(captions, attrs):
        _check_caption(caption, attr)
    assert {a["category"] for a in attrs} == set(GENEVAL_CATEGORIES)
    assert {a["count"] for a in attrs} == {1, 2, 3}
    assert {a["background"] for a in attrs} == set(BACKGROUND_NAMES)
    assert {o["color"] for a in attrs for o in a["objects"]} == set(COLOR_NAMES)
    assert {o["shape"] for a in attrs for o in a["objects"]} == set(CC12M_SHAPES)
    assert len(set(captions)) > 400  # varied captions
    for category in GENEVAL_CATEGORIES:  # several templates per category
        shapes_of = {re.sub(r"\b(" + "|".join(COLOR_NAMES + CC12M_SHAPES) + r")s?\b", "X", c)
                     for c, a in zip(captions, attrs) if a["category"] == category}
        assert len(shapes_of) >= 3, category
    assert json.loads(json.dumps(attrs)) == attrs


def test_cc12m_geometry(cc12m):
    """Relations hold for the object centres; boxes are in the image and objects do not overlap."""
    for attr in cc12m.attributes("val", np.arange(1000)):
        boxes = [o["bbox"] for o in attr["objects"]]
        for o, (x0, y0, x1, y1) in zip(attr["objects"], boxes):
            assert 0.0 < x0 < o["x"] < x1 < 1.0 and 0.0 < y0 < o["y"] < y1 < 1.0
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])
        if attr["count"] == 2:
            o0, o1 = attr["objects"]
            dx, dy = o0["x"] - o1["x"], o0["y"] - o1["y"]
            expected = ("left of" if dx < 0 else "right of") if abs(dx) > abs(dy) else ("above" if dy < 0 else "below")
            assert attr["relation"] == {"subject": 0, "object": 1, "relation": expected}
        else:
            assert attr["relation"] is None


def test_cc12m_colours_are_drawn(cc12m):
    """The pixel at a single object's centre has its named colour (circles and squares are filled there)."""
    res = cc12m.resolution
    from trajbench.data.synthetic import COLORS

    checked = 0
    for i, attr in enumerate(cc12m.attributes("train", np.arange(400))):
        if attr["count"] == 1 and attr["objects"][0]["shape"] in ("circle", "square", "heart"):
            o = attr["objects"][0]
            image = (cc12m.images("train", [i])[0] + 1) / 2
            pixel = image[min(int(o["y"] * res), res - 1), min(int(o["x"] * res), res - 1)]
            assert np.abs(pixel - np.array(COLORS[o["color"]])).max() < 0.2, (attr, pixel)
            checked += 1
    assert checked > 10


def test_cc12m_categories_option():
    ds = get_dataset("synth-cc12m", categories=["position"])
    attrs = ds.attributes("train", range(50))
    assert {a["category"] for a in attrs} == {"position"}
    assert all(a["relation"]["relation"] in RELATIONS for a in attrs)
    with pytest.raises(DatasetError, match="GenEval"):
        get_dataset("synth-cc12m", categories=["bogus"])


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_vocabulary_covers_captions(name):
    ds = get_dataset(name)
    vocab = ds.vocabulary()
    assert vocab == sorted(set(vocab))
    used = {w for split in ("train", "val") for c in ds.captions(split, np.arange(1000)) for w in tokenize(c)}
    assert used == set(vocab)  # every caption word is in the vocabulary, and every vocabulary word is used


# ---- errors ----------------------------------------------------------------------------------------
def test_unknown_name_names_the_closest():
    with pytest.raises(DatasetError) as info:
        get_dataset("synth-imagenett")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message and "'synth-imagenet'" in message and "synth-cc12m" in message
    with pytest.raises(DatasetError, match="cc12m"):
        get_dataset("cc12m")
    with pytest.raises(DatasetError, match="folder:/path/to/dir"):
        get_dataset("fodler:/tmp/x")


def test_bad_split_index_option_resolution(imagenet):
    with pytest.raises(DatasetError, match="did you mean 'train'"):
        imagenet.images("trian", [0])
    with pytest.raises(DatasetError, match="out of range"):
        imagenet.captions("val", [1000])
    with pytest.raises(DatasetError, match="out of range"):
        imagenet.images("val", [-1])
    with pytest.raises(DatasetError, match="no option"):
        get_dataset("synth-imagenet", colour=3)
    with pytest.raises(DatasetError, match="resolution"):
        get_dataset("synth-cc12m", resolution=4)


# ---- folder loader -----------------------------------------------------------------------------------
def _write_folder(root, n=40):
    from PIL import Image

    (root / "sub").mkdir(parents=True)
    lines = []
    for i in range(n):
        rel = f"sub/img_{i:03d}.png"
        w, h = (48, 32) if i % 2 else (20, 20)
        array = np.zeros((h, w, 3), dtype=np.uint8)
        array[...] = (i * 5, 255 - i * 5, 100)
        array[:, : (w - h) // 2] = 255  # a white margin that the center crop removes
        Image.fromarray(array).save(root / rel)
        lines.append(json.dumps({"file": rel, "caption": f"Image number {i}, colour {i * 5}!", "label": i}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")


def test_folder_loader(tmp_path):
    _write_folder(tmp_path)
    ds = get_dataset(f"folder:{tmp_path}", resolution=16, fractions={"val": 0.2, "reference": 0.2, "evaluator": 0.2})
    sizes = {s: ds.split_size(s) for s in SPLITS}
    assert sum(sizes.values()) == 40
    files = []
    for split in SPLITS:
        attrs = ds.attributes(split, range(sizes[split]))
        files += [a["file"] for a in attrs]
        for a in attrs:  # the split is a function of crc32 of the file name
            bucket = (zlib.crc32(a["file"].encode()) % 10_000) / 10_000
            expected = "val" if bucket < 0.2 else "reference" if bucket < 0.4 else "evaluator" if bucket < 0.6 else "train"
            assert split == expected
        if sizes[split]:
            batch = ds.batch(split, range(sizes[split]))
            images = batch["images"]
            assert images.shape == (sizes[split], 16, 16, 3) and images.dtype == np.float32
            for image, attr, caption in zip(images, attrs, batch["captions"]):
                i = attr["label"]
                assert caption == f"Image number {i}, colour {i * 5}!"
                expected = np.array([i * 5, 255 - i * 5, 100]) / 127.5 - 1
                assert np.abs(image - expected).max() < 0.02  # center-cropped: the white margin is gone
    assert sorted(files) == sorted(f"sub/img_{i:03d}.png" for i in range(40))
    assert "colour" in ds.vocabulary() and "number" in ds.vocabulary()
    spec = ds.spec()
    assert json.loads(json.dumps(spec)) == spec and spec["resolution"] == 16
    again = get_dataset(f"folder:{tmp_path}", resolution=16, fractions={"val": 0.2, "reference": 0.2, "evaluator": 0.2})
    assert again.spec() == spec and np.array_equal(again.images("train", [0]), ds.images("train", [0]))


def test_folder_errors(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError) as info:
        get_dataset(f"folder:{missing}")
    assert str(missing) in str(info.value) and "captions.jsonl" in str(info.value) and "\n" not in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="captions.jsonl"):
        get_dataset(f"folder:{empty}")
    (empty / "captions.jsonl").write_text('{"file": "a.png", "caption": "x"}\nnot json\n')
    with pytest.raises(DatasetError, match=r"captions.jsonl:2"):
        get_dataset(f"folder:{empty}")
    (empty / "captions.jsonl").write_text('{"file": "a.png", "caption": "x"}\n')
    ds = get_dataset(f"folder:{empty}", fractions={"val": 0, "reference": 0, "evaluator": 0})
    with pytest.raises(DatasetError, match="a.png"):
        ds.images("train", [0])
    with pytest.raises(DatasetError, match="needs a path"):
        get_dataset("folder:")


# ---- CIFAR-10 loader ---------------------------------------------------------------------------------
def test_cifar10_loader(tmp_path, cifar_folder):
    root = tmp_path / "cifar-10-batches-py"
    batches = cifar_folder(root)
    ds = get_dataset(f"cifar10:{root}")
    assert ds.split_size("train") == 30
    assert [ds.split_size(s) for s in ("val", "reference", "evaluator")] == [2, 10, 8]
    # train: data batches in order, channel-first rows turned into HWC images
    data, labels = batches["data_batch_2"]
    image = ds.images("train", [6 + 1])[0]
    expected = data[1].reshape(3, 32, 32).transpose(1, 2, 0) / 127.5 - 1
    assert np.allclose(image, expected, atol=1e-6)
    assert ds.captions("train", [7]) == [f"a photo of a {LABELS[labels[1]]}"]
    assert ds.attributes("train", [7])[0]["class_name"] == LABELS[labels[1]]
    # val / reference / evaluator are a disjoint cover of test_batch
    test_data, test_labels = batches["test_batch"]
    test_digests = _digests(test_data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    seen = set()
    for split in ("val", "reference", "evaluator"):
        images = ds.images(split, range(ds.split_size(split)))
        digests = _digests(np.round((images + 1) * 127.5).astype(np.uint8))  # back to the stored bytes
        assert not (digests & seen)
        seen |= digests
        for caption, attr in zip(ds.captions(split, range(ds.split_size(split))), ds.attributes(split, range(ds.split_size(split)))):
            assert caption == f"a photo of a {attr['class_name']}"
    assert seen == test_digests
    assert np.array_equal(get_dataset(f"cifar10:{root}").images("reference", range(10)), ds.images("reference", range(10)))
    small = get_dataset(f"cifar10:{root}", resolution=16)
    assert small.images("val", [0, 1]).shape == (2, 16, 16, 3)
    assert small.vocabulary() == sorted({"a", "photo", "of", *LABELS})
    assert json.loads(json.dumps(ds.spec())) == ds.spec()
    custom = get_dataset(f"cifar10:{root}", sizes={"train": 12, "val": 5, "reference": 5, "evaluator": 10})
    assert [custom.split_size(s) for s in SPLITS] == [12, 5, 5, 10]
    with pytest.raises(DatasetError, match="exceed"):
        get_dataset(f"cifar10:{root}", sizes={"reference": 30})


def test_cifar10_errors(tmp_path, cifar_folder):
    missing = tmp_path / "nothing"
    with pytest.raises(DatasetError) as info:
        get_dataset(f"cifar10:{missing}")
    assert str(missing) in str(info.value) and "cifar-10-python.tar.gz" in str(info.value)
    root = tmp_path / "cifar"
    cifar_folder(root)
    (root / "test_batch").unlink()
    with pytest.raises(DatasetError, match="test_batch"):
        get_dataset(f"cifar10:{root}")
    cifar_folder(root)
    (root / "data_batch_3").write_bytes(b"this is not a pickle")
    with pytest.raises(DatasetError, match=r"malformed CIFAR-10 file .*data_batch_3"):
        get_dataset(f"cifar10:{root}")
    cifar_folder(root)
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, f)
    with pytest.raises(DatasetError, match="3072"):
        get_dataset(f"cifar10:{root}")


# ---- preview -----------------------------------------------------------------------------------------
def test_preview_writes_png(tmp_path):
    from PIL import Image

    out = write_preview("synth-cc12m", tmp_path / "sub" / "cc.png", n=6, columns=3)
    assert out == tmp_path / "sub" / "cc.png"
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(out) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    assert width > 300 and height > 200
    assert pixels.std() > 10  # not blank
    from trajbench.data.preview import write_preview as direct

    out2 = direct(get_dataset("synth-imagenet", resolution=16), tmp_path / "in.png", n=5, split="val", columns=4)
    assert out2.read_bytes()[:8] == PNG_SIGNATURE
