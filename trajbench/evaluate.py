"""From a trained run to comparable numbers: sample with each sampler setting and weight set, then score.

Protocol (the paper's, at small scale): prompts are the first ``num_samples`` captions of the dataset's
held-out ``val`` split, generated with EVALUATION_SEED whatever the run's training seed; one image per prompt; FID
and KID on the judge's image features against the fixed ``reference`` split; CLIP score with the judge's towers
against each image's own prompt (the judges: the in-house evaluator, or Inception / CLIP from local weights,
:mod:`trajbench.metrics.judges`); recognisability (``accuracy``: a held-out classifier's class
accuracy on synth-imagenet, GenEval's overall score on synth-cc12m); GenEval-style accuracy per category on
``synth-cc12m``; 95 % bootstrap intervals over the generated set.

Two sampler protocols (a setting's ``@PROTOCOL`` suffix):

* ``paper``: the paper's Eq. 1 sampler by the best reading of its Appendix B.3 -- each formulation's own ODE in its
  own time t on a uniform t grid (for ``edm(Pm, Ps)`` a grid of noise-level quantiles), started where
  b/a = SIGMA_MAX (80) or at t_max, taken with the DDIM-form step z' = a(t') x0-hat + b(t') eps-hat (plain
  Euler for the linear rf path, Euler in sigma for EDM's VE path); no clipping. The grid differs between
  formulations, as in the paper.
* ``shared`` (the default, the control): every formulation sampled as a rectified flow on ONE shared grid in rf
  time (``coordinates="rf"``), with x0-hat clipped to [-1, 1] in pixel space (``x0_clip``, as ADM samples
  pixel-space models; a latent model's x0-hat is not clipped, its decoded image is):
  differences come from training alone.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import jax
import jax.numpy as jnp
import numpy as np

from trajbench import eval_defaults as defaults
from trajbench.run.load import load_run
from trajbench.samplers.setting import SamplerSetting

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
    from trajbench.run.config import data_shape

    network = jax.tree_util.Partial(run.model.apply, run.weights[weights])
    formulation = for_sampling(run.formulation)
    images, info = [], {}
    for index, start in enumerate(range(0, tokens.shape[0], batch_size)):
        batch, info = jit_generate(
            formulation, network, jnp.asarray(tokens[start:start + batch_size]),
            jnp.asarray(pooled[start:start + batch_size]), jax.random.fold_in(jax.random.key(seed), index),
            steps=setting.steps, guidance=setting.guidance, solver=setting.solver, coordinates=setting.coordinates,
            grid=setting.grid, image_shape=data_shape(run.config), x0_clip=setting.x0_clip_for(run),
            clip=run.autoencoder is None)
        if run.autoencoder is not None:
            batch = jnp.clip(run.autoencoder.to_image(batch), -1.0, 1.0)
        images.append(np.asarray(batch))
    info = {k: int(v) for k, v in info.items()}
    return np.concatenate(images), info


class Judges:
    """The held-out networks that score a dataset's images, loaded (or trained and cached) once per dataset: the
    FID / KID features and the CLIP score (the in-house CLIP-style evaluator, or external weights chosen by
    ``features`` / ``clip_score``, see :mod:`trajbench.metrics.judges`), the recognisability classifier of
    class-captioned datasets, and the GenEval detector of synth-cc12m."""

    def __init__(self, dataset, *, cache_dir=None, evaluator_config=None, geneval_config=None,
                 classifier_config=None, features: str = "inhouse", clip_score: str = "inhouse"):
        from trajbench.metrics.judges import identities, load_judge

        self.dataset = dataset
        loaded: dict = {}  # external weights first: a bad file fails before anything is trained
        self.feature_net = load_judge(features, "features", loaded)
        self.clip_net = load_judge(clip_score, "clip_score", loaded)
        self.identity = identities(features, clip_score)
        self.evaluator = None
        if self.feature_net is None or self.clip_net is None:
            from trajbench.metrics.evaluator import load_or_train_evaluator

            self.evaluator = load_or_train_evaluator(dataset, cache_dir=cache_dir, config=evaluator_config)
            self.feature_net = self.feature_net or self.evaluator
            self.clip_net = self.clip_net or self.evaluator
        self.geneval = self.classifier = None
        if dataset.name == "synth-cc12m":
            from trajbench.metrics.geneval import load_or_train_geneval

            self.geneval = load_or_train_geneval(dataset, cache_dir=cache_dir, config=geneval_config)
        elif hasattr(dataset, "labels"):
            from trajbench.metrics.classifier import load_or_train_classifier

            self.classifier = load_or_train_classifier(dataset, cache_dir=cache_dir, config=classifier_config)
        self._reference = None

    @property
    def reference_features(self) -> np.ndarray:
        """The FID features of the whole ``reference`` split (computed once)."""
        if self._reference is None:
            dataset = self.dataset
            self._reference = self.feature_net.fid_features(
                dataset.images("reference", np.arange(dataset.split_size("reference"))))
        return self._reference

    def prompts(self, split: str, count: int) -> dict:
        """The first ``count`` items of a split as prompts: captions, attributes and (if any) class labels."""
        indices = np.arange(min(count, self.dataset.split_size(split)))
        out = {"captions": self.dataset.captions(split, indices), "attributes": self.dataset.attributes(split, indices)}
        if self.classifier is not None:
            out["labels"] = self.dataset.labels(split, indices)
        return out

    def score(self, images, prompts: dict, *, n_boot: int = 200, seed: int = 0) -> dict:
        """:func:`score_images` with these judges, plus their identities (``features``, ``clip_judge``)."""
        scores = score_images(images, prompts["captions"], prompts["attributes"], self.feature_net, self.clip_net,
                              self.reference_features, geneval=self.geneval, classifier=self.classifier,
                              labels=prompts.get("labels"), n_boot=n_boot, seed=seed)
        return scores | self.identity


def score_images(images, captions, attributes, feature_net, clip_net, reference_features, *, geneval=None,
                 classifier=None, labels=None, n_boot: int = 200, seed: int = 0) -> dict:
    """FID and KID on ``feature_net.fid_features``, CLIP score by ``clip_net.clip_score`` (each with a bootstrap
    CI); recognisability ``accuracy`` (the classifier's class accuracy against ``labels``, or GenEval's overall
    score) and, given a GenEval detector, its accuracies."""
    from trajbench.metrics import bootstrap_ci, fid_with_ci, kid, mmd2_unbiased

    features = feature_net.fid_features(images)
    # a resample repeats images, which biases FID and KID upward: their intervals are bias-corrected (the
    # percentile interval, moved by the mean shift of the replicates), so they are centred on the estimate
    fid = fid_with_ci(features, reference_features, n_boot=n_boot, seed=seed, method="bias_corrected")
    size = min(len(features), len(reference_features))
    kid_value = kid(features, reference_features, subsets=20, subset_size=size, seed=seed)
    reference_subset = reference_features[np.random.default_rng(seed).choice(len(reference_features), size, False)]
    kid_ci = bootstrap_ci(lambda g: mmd2_unbiased(g, reference_subset), features, n_boot=n_boot,
                          seed=seed, method="bias_corrected")
    clip, per_example = clip_net.clip_score(images, captions, return_per_example=True)
    scores = {
        "fid": fid["fid"], "fid_ci": [max(fid["ci_low"], 0.0), fid["ci_high"]],
        "kid": kid_value, "kid_ci": list(kid_ci),
        "clip_score": float(clip), "clip_score_ci": list(bootstrap_ci(np.mean, per_example, n_boot=n_boot, seed=seed)),
    }
    if classifier is not None:
        correct = (classifier.predict(images) == np.asarray(labels)).astype(np.float64)
        scores["accuracy"] = float(correct.mean())
        scores["accuracy_ci"] = list(bootstrap_ci(np.mean, correct, n_boot=n_boot, seed=seed))
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
        scores["accuracy"], scores["accuracy_ci"] = scores["geneval"]["overall"], scores["geneval_ci"]["overall"]
    return scores


def evaluate_run(run_dir, settings=defaults.SETTINGS, *, weights=defaults.WEIGHTS, pairs=None,
                 num_samples: int = defaults.SAMPLES, checkpoint=defaults.CHECKPOINT, seed: int = defaults.SEED,
                 n_boot: int = defaults.N_BOOT, cache_dir=None, evaluator_config=None, geneval_config=None,
                 classifier_config=None, skip=(), step_axis_samples: int = 0, features: str = defaults.JUDGE,
                 clip_score: str = defaults.JUDGE, progress=None) -> list[dict]:
    """One result dict per (weights, setting) with fid, kid, clip_score, accuracy, their CIs, nfe and GenEval
    accuracy; with ``step_axis_samples`` K > 0 also ``ref_distance`` and ``straightness`` on K prompts
    (:func:`trajbench.stepaxis.step_axis_metrics`).

    ``pairs``: the (weights, setting) pairs to score (default: every weights x every setting).
    ``evaluator_config`` / ``geneval_config`` / ``classifier_config``: overrides of the judge networks' configs
    (dicts of their fields; None = the defaults); they are part of their cache keys.  ``features`` /
    ``clip_score``: who judges (``inhouse``, ``inception:PATH``, ``clip:PATH``; :mod:`trajbench.metrics.judges`),
    recorded in every row by identity (``features``, ``clip_judge``).  ``skip``: (weights, setting
    label) pairs already scored (a resumed grid cell); ``progress(row)`` is called as each row is finished."""
    parse = lambda s: s if isinstance(s, SamplerSetting) else SamplerSetting.parse(s)  # noqa: E731
    if pairs is None:
        pairs = [(w, s) for w in weights for s in settings]
    pairs = [(w, parse(s)) for w, s in pairs]
    skip = set(skip)
    pairs = [(w, s) for w, s in pairs if (w, s.label) not in skip]
    if not pairs:
        return []
    run = load_run(run_dir, checkpoint)
    config = run.config
    judges = Judges(evaluation_dataset(config), cache_dir=cache_dir, evaluator_config=evaluator_config,
                    geneval_config=geneval_config, classifier_config=classifier_config, features=features,
                    clip_score=clip_score)
    prompts = judges.prompts("val", num_samples)
    tokens, pooled = run.text_encoders.encode(prompts["captions"])
    references: dict = {}
    rows = []
    for which, setting in pairs:
        started = time.time()
        images, info = generate_images(run, which, setting, tokens, pooled, seed=seed)
        sample_seconds = time.time() - started
        row = {"variant": config.formulation, "dataset": config.dataset, "seed": config.seed, "weights": which,
               "checkpoint_step": run.step, "setting": setting.label, "protocol": setting.protocol,
               **asdict(setting), **info, "samples": len(images), "sample_seconds": round(sample_seconds, 3)}
        row |= judges.score(images, prompts, n_boot=n_boot, seed=seed)
        if step_axis_samples:
            from trajbench.stepaxis import step_axis_metrics

            started = time.time()
            row |= step_axis_metrics(run, which, setting, tokens[:step_axis_samples], pooled[:step_axis_samples],
                                     seed=seed, references=references)
            row["step_axis_seconds"] = round(time.time() - started, 3)
        rows.append(row)
        if progress:
            progress(row)
    return rows
