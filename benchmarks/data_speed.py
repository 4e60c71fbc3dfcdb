"""Rendering throughput of the generated datasets.

    .venv/bin/python benchmarks/data_speed.py [--resolutions 16 32 64] [--n 20000] [--repeats 3]

Prints images per second (best of ``--repeats`` runs, one process; numpy's elementwise kernels use one
core, so pin with ``taskset -c 0`` to be sure).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from trajbench.data import DATASET_NAMES, get_dataset


def images_per_second(name: str, resolution: int, n: int = 20_000, repeats: int = 3) -> float:
    dataset = get_dataset(name, resolution=resolution)
    indices = np.arange(n)
    dataset.images("train", indices[:256])  # warm up (imports, lazy tables)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dataset.images("train", indices)
        best = min(best, time.perf_counter() - start)
    return n / best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    for name in DATASET_NAMES:
        for res in args.resolutions:
            rate = images_per_second(name, res, args.n, args.repeats)
            print(f"{name:15s} {res:3d}x{res:<3d} {rate:9.0f} images/s")


if __name__ == "__main__":
    main()
