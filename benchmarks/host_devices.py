"""Does splitting a training step over the CPU's cores beat one plain process?  The study cell's train step
(``bench.py --preset study-cell``'s model and batch) timed in fresh processes, alternated:

* ``plain``: one process, one XLA device (the default);
* ``devices``: one process with ``--xla_force_host_platform_device_count=N`` (N = the cores this process may use),
  the batch split over the ``Trainer``'s data mesh;
* ``shards``: N processes side by side, each pinned to one core (``os.sched_setaffinity``), as N grid shard
  workers would run; their step time is divided by N (steps per second of the machine).

Prints JSON: each side's median milliseconds per step (over its processes' medians) and ``speedup_vs_plain``.

    .venv/bin/python benchmarks/host_devices.py [--spec experiments/quick.toml] [--pairs 2] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(spec_path: str, devices: int, rounds: int, core: int | None) -> None:
    """Time ``rounds`` rounds of 5 train steps after compiling; print the median seconds per step."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    if devices > 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={devices}")
    import jax
    import numpy as np

    from study_cell import POOL_SIZE, random_pool, study_cell
    from trajbench.formulations import get as get_formulation
    from trajbench.run.trainer import Trainer

    _, _, config = study_cell(spec_path)
    formulation = get_formulation(config.formulation)
    trainer = Trainer(config)
    pool = jax.device_put(random_pool(config, POOL_SIZE), trainer.replicated)
    state = trainer.init_state(pool)
    state, metrics = trainer.train_step(formulation, state, pool)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(5):
            state, metrics = trainer.train_step(formulation, state, pool)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - start) / 5)
    print(json.dumps({"devices": jax.device_count(), "seconds_per_step": float(np.median(times))}))


def launch(spec_path: str, devices: int, rounds: int, core: int | None = None) -> subprocess.Popen:
    args = [sys.executable, __file__, "--child", "--spec", spec_path, "--devices", str(devices),
            "--rounds", str(rounds)] + (["--core", str(core)] if core is not None else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)


def seconds(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a timing process failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])["seconds_per_step"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "experiments" / "quick.toml"))
    parser.add_argument("--pairs", type=int, default=2, help="alternations of the three sides")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.spec, args.devices, args.rounds, args.core)
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("this process may use one core; nothing to split")
    sides: dict[str, list[float]] = {"plain": [], "devices": [], "shards": []}
    for _ in range(args.pairs):
        sides["plain"].append(seconds(launch(args.spec, 1, args.rounds)))
        sides["devices"].append(seconds(launch(args.spec, len(cores), args.rounds)))
        procs = [launch(args.spec, 1, args.rounds, core) for core in cores]
        sides["shards"].append(max(seconds(p) for p in procs) / len(cores))
    median = {name: statistics.median(values) for name, values in sides.items()}
    print(json.dumps({
        "cores": len(cores), "spec": args.spec,
        "ms_per_step": {name: [round(1e3 * v, 1) for v in values] for name, values in sides.items()},
        "speedup_vs_plain": {name: round(median["plain"] / median[name], 3) for name in ("devices", "shards")},
    }, indent=1))


if __name__ == "__main__":
    main()
