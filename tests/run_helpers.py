"""Reading and comparing training-run folders, and starting ``trajbench train`` in a subprocess: helpers of the
tests of trajbench.train and trajbench.run."""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fixtures_data import TINY


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def strict_rows(run: Path) -> list[dict]:
    """metrics.jsonl read as strict JSON (Infinity and NaN are not JSON)."""
    def refuse(constant):
        raise ValueError(f"{constant} in metrics.jsonl")

    return [json.loads(line, parse_constant=refuse) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_metrics(rows, reference, rel=1e-5):
    """Same logged steps and keys; values equal to float32 round-off. In one process resuming is bit-exact;
    across processes XLA:CPU has been seen to differ by one ulp in a gradient reduction."""
    assert [sorted(r) for r in rows] == [sorted(r) for r in reference]
    for row, ref in zip(rows, reference):
        for key, value in ref.items():
            assert row[key] == pytest.approx(value, rel=rel, abs=1e-7), (row["step"], key)


def assert_same_params(tree, reference, rtol=1e-4, atol=1e-6):
    import jax

    assert jax.tree.structure(tree) == jax.tree.structure(reference)
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(reference)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def best_params(run: Path):
    import orbax.checkpoint as ocp

    step = json.loads((run / "best.json").read_text())["step"]
    with ocp.CheckpointManager((run / "best").absolute()) as manager:
        return manager.restore(step)


def host_devices_env(devices: int, **extra) -> dict:
    """The environment of a subprocess with ``devices`` XLA host devices, and a PjRt thread pool of twice that.

    XLA:CPU sizes the pool that runs the devices' programs as max(cores, devices): on two cores, exactly as many
    threads as one collective has participants, so a thread busy with other work leaves an all-reduce one
    participant short, and XLA aborts after its 40 s rendezvous timeout (seen in `make test` beside a busy
    training run: 3 of 4 participants arrived). ``PJRT_NPROC`` sets the pool's size."""
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                PJRT_NPROC=os.environ.get("PJRT_NPROC", str(2 * devices)), **extra)


@contextlib.contextmanager
def on_every_core():
    """Subprocesses started inside this block run on every core of the machine (a child inherits the affinity
    of the thread that starts it; this thread's own is restored after). For subprocesses with several host
    devices: the test workers are pinned to one core each (conftest.py), and in a one-core process XLA's
    collectives across 4 host devices deadlocked in 2 of 9 runs (one device's thread never reached the
    all-reduce, and XLA aborted after its 40 s rendezvous timeout), in none of 12 on two cores. (A
    ``preexec_fn`` would do the same but makes ``subprocess`` fork a multithreaded process.)"""
    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, range(os.cpu_count()))
    try:
        yield
    finally:
        os.sched_setaffinity(0, pinned)


def cli_train(out: Path, steps: int, env=None, **popen):
    args = [sys.executable, "-m", "trajbench.cli", "train", "--formulation", "v/cos", "--dataset", "synth-cc12m",
            "--no-progress", "--out", str(out)] + [x for s in TINY + [f"steps={steps}"] for x in ("--set", s)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
