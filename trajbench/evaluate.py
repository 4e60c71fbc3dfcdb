"""From a trained run to comparable numbers: sample with each sampler setting and weight set, then score.

Protocol (the paper's, at small scale): prompts are the first ``num_samples`` captions of the dataset's
held-out ``val`` split, generated with EVALUATION_SEED whatever the run's training seed; one image per prompt; FID and KID on the in-house evaluator's image features against
the fixed ``reference`` split; CLIP score with the evaluator's towers against each image's own prompt;
GenEval-style accuracy per category on ``synth-cc12m``; 95 % bootstrap intervals over the generated set.
The sampler is the same for every formulation: the shared rectified-flow ODE (``coordinates="rf"``), with
x0-hat clipped to the data range [-1, 1] (``x0_clip``), as ADM samples pixel-space models.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np

from trajbench.train import RunError, load_run

_SETTING = re.compile(r"^(?P<steps>\d+)x(?P<guidance>[0-9.]+)(?:/(?P<solver>[a-z0-9]+))?$")


@dataclass(frozen=True)
class SamplerSetting:
    """One sampler setting: ``STEPSxGUIDANCE[/SOLVER]``, e.g. ``25x2.0`` or ``10x1.5/heun``."""

    steps: int
    guidance: float
    solver: str = "euler"
    coordinates: str = "rf"
    grid: str = "uniform"
    x0_clip: float | None = 1.0

    @classmethod
    def parse(cls, text: str) -> "SamplerSetting":
        from trajbench.samplers import SOLVERS

        match = _SETTING.match(text.strip())
        if match is None or int(match["steps"]) < 1:
            raise RunError(f"sampler setting {text!r} is malformed; write STEPSxGUIDANCE[/SOLVER], e.g. 25x2.0")
        solver = match["solver"] or "euler"
        if solver not in SOLVERS:
            raise RunError(f"unknown solver {solver!r} in {text!r}; solvers are {', '.join(SOLVERS)}")
        return cls(int(match["steps"]), float(match["guidance"]), solver)

    @property
    def label(self) -> str:
        return f"{self.steps}x{self.guidance:g}" + ("" if self.solver == "euler" else f"/{self.solver}")


DEFAULT_SETTINGS = ("5x2.0", "25x2.0", "50x2.0")

EVALUATION_SEED = 0
"""Every run is scored on its dataset generated with this seed, whatever seed it trained with: the same prompts,
reference set and evaluator networks for every variant and every training seed, so their numbers compare."""


def evaluation_dataset(config):
    """The dataset a run is scored on (and its prompts drawn from): ``config.dataset`` at EVALUATION_SEED."""
    from trajbench.data import get_dataset

    return get_dataset(config.dataset, resolution=config.resolution, seed=EVALUATION_SEED)


def generate_images(run, weights: str, setting: SamplerSetting, tokens, pooled, *, seed: int = 0,
                    batch_size: int = 128) -> tuple[np.ndarray, dict]:
    """Images for the conditions (tokens, pooled) in batches; noise from fold_in(key(seed), batch index). A latent
    run samples latents (not clipped) and decodes them; images are clipped to [-1, 1]."""
    from trajbench.samplers import for_sampling, jit_generate
    from trajbench.train import data_shape

    network = jax.tree_util.Partial(run.model.apply, run.weights[weights])
    formulation = for_sampling(run.formulation)
    images, info = [], {}
    for index, start in enumerate(range(0, tokens.shape[0], batch_size)):
        batch, info = jit_generate(
            formulation, network, jnp.asarray(tokens[start:start + batch_size]),
            jnp.asarray(pooled[start:start + batch_size]), jax.random.fold_in(jax.random.key(seed), index),
            steps=setting.steps, guidance=setting.guidance, solver=setting.solver, coordinates=setting.coordinates,
            grid=setting.grid, image_shape=data_shape(run.config), x0_clip=setting.x0_clip,
            clip=run.autoencoder is None)
        if run.autoencoder is not None:
            batch = jnp.clip(run.autoencoder.to_image(batch), -1.0, 1.0)
        images.append(np.asarray(batch))
    info = {k: int(v) for k, v in info.items()}
    return np.concatenate(images), info


def score_images(images, captions, attributes, evaluator, reference_features, *, geneval=None,
                 n_boot: int = 200, seed: int = 0) -> dict:
    """FID, KID, CLIP score (each with a bootstrap CI) and, given a classifier, GenEval accuracies."""
    from trajbench.metrics import bootstrap_ci, fid_with_ci, kid, mmd2_unbiased

    features = evaluator.fid_features(images)
    # a resample repeats images, which biases FID and KID upward: their intervals are bias-corrected (the
    # percentile interval, moved by the mean shift of the replicates), so they are centred on the estimate
    fid = fid_with_ci(features, reference_features, n_boot=n_boot, seed=seed, method="bias_corrected")
    size = min(len(features), len(reference_features))
    kid_value = kid(features, reference_features, subsets=20, subset_size=size, seed=seed)
    reference_subset = reference_features[np.random.default_rng(seed).choice(len(reference_features), size, False)]
    kid_ci = bootstrap_ci(lambda g: mmd2_unbiased(g, reference_subset), features, n_boot=max(n_boot // 4, 2),
                          seed=seed, method="bias_corrected")
    clip, per_example = evaluator.clip_score(images, captions, return_per_example=True)
    scores = {
        "fid": fid["fid"], "fid_ci": [max(fid["ci_low"], 0.0), fid["ci_high"]],
        "kid": kid_value, "kid_ci": list(kid_ci),
        "clip_score": float(clip), "clip_score_ci": list(bootstrap_ci(np.mean, per_example, n_boot=n_boot, seed=seed)),
    }
    if geneval is not None:
        from trajbench.metrics.geneval import scores_from_judgements

        accuracies, correct = geneval.scores(images, attributes, return_per_image=True)
        scores["geneval"] = {k: v for k, v in accuracies.items() if k != "n"}
        # each accuracy's interval resamples the images (with their prompts) and recomputes that accuracy
        index = np.arange(len(correct))
        scores["geneval_ci"] = {
            name: list(bootstrap_ci(
                lambda i, name=name: scores_from_judgements(correct[i], [attributes[j] for j in i]).get(name, np.nan),
                index, n_boot=n_boot, seed=seed))
            for name in scores["geneval"]}
    return scores


def evaluate_run(run_dir, settings=DEFAULT_SETTINGS, *, weights=("ema", "raw"), num_samples: int = 256,
                 checkpoint="best", seed: int = 0, n_boot: int = 200, cache_dir=None, evaluator_config=None,
                 geneval_config=None, skip=(), progress=None) -> list[dict]:
    """One result dict per (weights, setting) with fid, kid, clip_score, their CIs, nfe and GenEval accuracy.

    ``evaluator_config`` / ``geneval_config``: overrides of the evaluator networks' configs (dicts of their
    fields; None = the defaults); they are part of the evaluator cache key.  ``skip``: (weights, setting label)
    pairs already scored (a resumed grid cell); ``progress(row)`` is called as each row is finished."""
    from trajbench.metrics.evaluator import load_or_train_evaluator

    settings = [s if isinstance(s, SamplerSetting) else SamplerSetting.parse(s) for s in settings]
    skip = set(skip)
    run = load_run(run_dir, checkpoint)
    config = run.config
    dataset = evaluation_dataset(config)
    evaluator = load_or_train_evaluator(dataset, cache_dir=cache_dir, config=evaluator_config)
    geneval = None
    if dataset.name == "synth-cc12m":
        from trajbench.metrics.geneval import load_or_train_geneval

        geneval = load_or_train_geneval(dataset, cache_dir=cache_dir, config=geneval_config)
    reference = dataset.images("reference", np.arange(dataset.split_size("reference")))
    reference_features = evaluator.fid_features(reference)
    indices = np.arange(min(num_samples, dataset.split_size("val")))
    captions = dataset.captions("val", indices)
    attributes = dataset.attributes("val", indices)
    tokens, pooled = run.text_encoders.encode(captions)
    rows = []
    for which in weights:
        for setting in settings:
            if (which, setting.label) in skip:
                continue
            started = time.time()
            images, info = generate_images(run, which, setting, tokens, pooled, seed=seed)
            sample_seconds = time.time() - started
            row = {"variant": config.formulation, "dataset": config.dataset, "seed": config.seed, "weights": which,
                   "checkpoint_step": run.step, "setting": setting.label, **asdict(setting), **info,
                   "samples": len(images), "sample_seconds": round(sample_seconds, 3)}
            row |= score_images(images, captions, attributes, evaluator, reference_features, geneval=geneval,
                                n_boot=n_boot, seed=seed)
            rows.append(row)
            if progress:
                progress(row)
    return rows
