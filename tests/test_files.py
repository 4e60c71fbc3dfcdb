"""Tests of the crash-safe writes (trajbench.files)."""

import numpy as np
import pytest

from trajbench.files import atomic_path, write_json_atomic


def test_atomic_path_replaces_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "stats.npz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith("stats.npz") and not tmp.exists()
        np.savez(tmp, mu=np.arange(3))  # np.savez keeps a name that ends in .npz
    with np.load(target) as data:
        assert data["mu"].tolist() == [0, 1, 2]
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        np.savez(tmp, mu=np.zeros(3))
        raise RuntimeError("killed")
    with np.load(target) as data:  # the old file is untouched
        assert data["mu"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in target.parent.iterdir()) == ["stats.npz"]


def test_atomic_path_writes_a_folder_and_removes_a_failed_one(tmp_path):
    target = tmp_path / "entry"
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("a")
        raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("a")
    assert (target / "a.txt").read_text() == "a"
    write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert (tmp_path / "x.json").read_text() == '{\n "a": 1\n}\n'
