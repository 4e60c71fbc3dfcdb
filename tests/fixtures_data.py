"""Values the tests share that must exist when a test module is imported (parametrize lists, the script a test
runs in a subprocess); the fixtures built on them are in conftest.py. No test module imports another."""

CIFAR_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def tiny_settings(eval_every: int = 10, steps: int | None = None) -> list[str]:
    """``--set`` values of a training run small enough for seconds on a CPU."""
    settings = ["resolution=16", "depth=1", "width=32", "heads=1", "patch_size=4", "batch_size=8",
                "train_examples=256", "val_examples=16", "log_every=5", f"eval_every={eval_every}", "warmup_steps=5"]
    return settings + ([f"steps={steps}"] if steps is not None else [])


TINY = tiny_settings()


def tiny_config(steps=30, formulation="rf/lognorm(0.00, 1.00)", **values):
    """The tiny run's TrainConfig (conftest's ``tiny_run``)."""
    from trajbench.run.config import resolve_config

    return resolve_config("smoke", TINY + [f"steps={steps}"], formulation=formulation, dataset="synth-cc12m", **values)
