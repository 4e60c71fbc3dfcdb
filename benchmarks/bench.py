"""trajbench speed benchmark: training and sampling throughput against diffusers, MFU, multi-variant training.

    .venv/bin/python benchmarks/bench.py [--preset smoke|quick|both|study-cell] [--quick-check]
    .venv/bin/python benchmarks/bench.py --preset study-cell [--spec experiments/quick.toml] [--set train.depth=4 ...]

Prints ONE JSON object on stdout (progress goes to stderr). Every figure is measured in this process, on this
machine, with the two sides of a comparison timed in alternation (A B A B ...) after their warm-up calls; a
side's time is the median over the repeats. What each figure means: benchmarks/README.md.

Needs the optional extra ``pip install -e '.[bench]'`` (torch, diffusers); the trajbench package itself never
imports them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

from trajbench import estimate
from trajbench.formulations import get as get_formulation
from trajbench.models.mmdit import count_params, forward_flops
from trajbench.samplers import SamplerSetting, for_sampling, jit_generate
from trajbench.run.config import data_shape, model_config, resolve_config
from trajbench.run.trainer import Trainer, stack_formulations

from study_cell import FORMULATION, POOL_SIZE, random_pool, study_cell  # benchmarks/, beside this script

VARIANTS = ("rf/lognorm(0.00, 1.00)", "rf/lognorm(0.50, 0.60)", "rf/lognorm(1.00, 0.60)", "rf/lognorm(-0.50, 1.00)")
DATASET = "synth-imagenet"
SAMPLE_STEPS = 50
GUIDANCE = 2.0
PEAK_SIZES = (512, 1024, 2048)
IN_ROUND_PEAK_SIZE = PEAK_SIZES[-1]  # the matmul timed beside the training steps, for the MFU
STUDY_CELL = "study-cell"
STUDY_SPEC = "experiments/quick.toml"
TARGETS = {"train_ratio_vs_diffusers": 1.5, "mfu": 0.35, "sample_ratio_vs_diffusers": 3.0,
           "multivariant_speedup": 1.5}


@dataclass(frozen=True)
class Budget:
    """How long each measurement runs. Each side gets ``warmup`` untimed calls (the first, timed apart, compiles
    jitted code), then ``repeats`` timed rounds of about ``round_seconds`` each (at least one call)."""

    warmup: int
    repeats: int
    round_seconds: float
    sample_batch: int
    sample_repeats: int
    variant_repeats: int
    variants: int  # runs trained together in the multi-variant figure (the first ``variants`` of VARIANTS)
    peak_seconds: float  # per matmul size


FULL = Budget(warmup=2, repeats=5, round_seconds=2.0, sample_batch=64, sample_repeats=3, variant_repeats=3,
              variants=4, peak_seconds=1.0)
QUICK_CHECK = Budget(warmup=1, repeats=1, round_seconds=0.0, sample_batch=8, sample_repeats=1, variant_repeats=1,
                     variants=2, peak_seconds=0.2)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the shared timing helper ----------------------------------------------------------------------------


@dataclass
class Workload:
    """One side of a comparison: ``run(n)`` does n consecutive calls (steps, or whole samplings) and returns
    when their results exist; each call handles ``images`` images."""

    run: Callable[[int], None]
    images: int
    params: int | None = None


def timed(side: Workload, calls: int) -> float:
    """Seconds per call of ``calls`` consecutive calls."""
    start = time.perf_counter()
    side.run(calls)
    return (time.perf_counter() - start) / calls


def measure(sides: dict[str, Workload], *, warmup: int, repeats: int, round_seconds: float) -> dict[str, dict]:
    """Seconds per call of each side, timed in alternation: used for every figure, JAX and torch alike.

    Per side: a timed first call (it compiles jitted code), ``warmup - 1`` more calls, the last of which sets
    the side's round length (``calls`` = round_seconds / its duration, at least 1). Then ``repeats`` rounds,
    each timing ``calls`` calls of every side in turn (A B A B ...). Returns per side: ``seconds`` (median
    over rounds of seconds per call), ``rounds``, ``calls`` per round, ``first_call_seconds`` and
    ``images_per_s`` (images per call / median seconds).
    """
    first, calls = {}, {}
    for name, side in sides.items():
        first[name] = last = timed(side, 1)
        for _ in range(warmup - 1):
            last = timed(side, 1)
        calls[name] = max(1, round(round_seconds / last))
    rounds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, side in sides.items():
            rounds[name].append(timed(side, calls[name]))
    results = {}
    for name, side in sides.items():
        seconds = statistics.median(rounds[name])
        results[name] = {"seconds": seconds, "images_per_s": side.images / seconds, "calls": calls[name],
                         "rounds": [round(r, 6) for r in rounds[name]], "first_call_seconds": first[name]}
    return results


def repeat(call: Callable[[], object], finish: Callable[[object], None] = lambda _: None) -> Callable[[int], None]:
    """run(n): ``call()`` n times, then ``finish(last result)`` (e.g. block until a JAX result is ready)."""
    def run(n: int) -> None:
        result = None
        for _ in range(n):
            result = call()
        finish(result)

    return run


def torch_threads(side: Workload, calls: int = 2) -> tuple[int, dict]:
    """The faster torch thread count for ``side``, ``os.cpu_count()`` or 1, from a short probe (one warm call,
    then ``calls`` timed calls at each). On a machine shared with other work, OpenMP's barriers make every
    small torch op wait for a descheduled thread, and ``cpu_count`` threads can be many times slower than one;
    the baseline gets whichever is faster now. Returns (threads, seconds per call at each count)."""
    probe = {}
    for threads in sorted({os.cpu_count() or 1, 1}, reverse=True):
        torch.set_num_threads(threads)
        side.run(1)
        probe[threads] = timed(side, calls)
    torch.set_num_threads(os.cpu_count() or 1)
    return min(probe, key=probe.get), {str(k): round(v, 4) for k, v in probe.items()}


def with_threads(side: Workload, threads: int) -> Workload:
    """The same torch workload, run with ``threads`` torch threads."""
    def run(n: int) -> None:
        torch.set_num_threads(threads)
        side.run(n)

    return Workload(run, side.images, side.params)


# ---- configurations and inputs ---------------------------------------------------------------------------


_study: dict = {}  # the study cell's spec and config, set by use_study_cell()


def use_study_cell(spec_path: str, overrides=()) -> None:
    """Make ``study-cell`` the training config of the spec's study cell (:func:`study_cell.study_cell`)."""
    spec, cell, config = study_cell(spec_path, overrides)
    _study.update(spec=spec, cell=cell, config=config)


def preset_config(preset: str, formulation: str = FORMULATION):
    """The training config of a trajbench preset (``smoke``, ``quick``) or of the study cell."""
    if preset == STUDY_CELL:
        return dataclasses.replace(_study["config"], formulation=formulation)
    return resolve_config(preset, formulation=formulation, dataset=DATASET)


def describe(preset: str) -> dict:
    """The training config of a preset and the size of its model (as both sides build it)."""
    config = preset_config(preset)
    mc = model_config(config)
    model = {name: getattr(mc, name) for name in ("depth", "hidden_size", "num_heads", "head_size", "patch_size",
                                                  "image_size", "num_patches", "text_dim", "pooled_dim",
                                                  "max_text_tokens")}
    return {"train_config": dataclasses.asdict(config), "model": model, "forward_flops_per_image": forward_flops(mc)}


def torch_pool(pool: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The same pool as torch tensors, images NCHW."""
    return {"images": torch.from_numpy(pool["images"].transpose(0, 3, 1, 2).copy()),
            "tokens": torch.from_numpy(pool["tokens"]), "pooled": torch.from_numpy(pool["pooled"])}


def diffusers_model(config) -> SD3Transformer2DModel:
    """diffusers' SD3 MMDiT at the size of trajbench's model for ``config``."""
    mc = model_config(config)
    torch.manual_seed(config.seed)
    return SD3Transformer2DModel(
        sample_size=mc.image_size, patch_size=mc.patch_size, in_channels=mc.channels, out_channels=mc.channels,
        num_layers=mc.depth,
        attention_head_dim=mc.head_size, num_attention_heads=mc.num_heads, joint_attention_dim=mc.text_dim,
        caption_projection_dim=mc.hidden_size, pooled_projection_dim=mc.pooled_dim,
        pos_embed_max_size=mc.image_size // mc.patch_size, qk_norm="rms_norm")


def torch_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- workloads --------------------------------------------------------------------------------------------


def trajbench_train(config, formulations: tuple[str, ...] = ()) -> Workload:
    """trajbench's compiled training step: batch gathered from the pool, text dropout, t from the formulation's
    density, noise, MMDiT forward + backward, global-norm clipping, AdamW, EMA. With several ``formulations``:
    ``Trainer(config, variants=K)`` stepping K stacked runs in one program (``images`` counts all K)."""
    names = formulations or (config.formulation,)
    trainer = Trainer(config, variants=len(names) if len(names) > 1 else 0)
    pool = jax.device_put(random_pool(config, POOL_SIZE), trainer.replicated)
    state = trainer.init_state(pool)
    params = count_params(state["params"])
    if len(names) > 1:
        state, formulation = trainer.stack([state] * len(names)), stack_formulations(names)
    else:
        formulation = get_formulation(config.formulation)
    holder = {"state": state}

    def step():
        holder["state"], metrics = trainer.train_step(formulation, holder["state"], pool)
        return holder["state"], metrics

    return Workload(repeat(step, jax.block_until_ready), config.batch_size * len(names), params)


def diffusers_train(config) -> Workload:
    """diffusers' ``SD3Transformer2DModel`` trained the same way in eager PyTorch: batch gathered from the pool,
    text dropout, t ~ logit-normal(0, 1) (rf/lognorm(0.00, 1.00)), z = (1 - t) x0 + t eps, MSE to the velocity
    eps - x0, backward, ``clip_grad_norm_(1.0)``, ``torch.optim.AdamW``, EMA (``torch._foreach_lerp_``)."""
    model = diffusers_model(config).train()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=(config.adam_b1, config.adam_b2), eps=1e-8,
                                  weight_decay=config.weight_decay)
    ema = [p.detach().clone() for p in params]
    pool = torch_pool(random_pool(config, POOL_SIZE))
    batch = config.batch_size

    def step():
        index = torch.randint(0, POOL_SIZE, (batch,))
        x0, tokens, pooled = pool["images"][index], pool["tokens"][index], pool["pooled"][index]
        keep = (torch.rand(batch, 1, 1) >= config.text_drop_prob).float()
        tokens, pooled = tokens * keep, pooled * keep[:, 0]
        t = torch.sigmoid(torch.randn(batch))
        eps = torch.randn_like(x0)
        z = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * eps
        out = model(hidden_states=z, encoder_hidden_states=tokens, pooled_projections=pooled, timestep=1000 * t,
                    return_dict=False)[0]
        loss = F.mse_loss(out, eps - x0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1.0 - config.ema_decay)
        return loss

    return Workload(repeat(step), batch, torch_params(model))


def sampling_inputs(config, batch: int) -> dict[str, np.ndarray]:
    """Conditions (random text features) for a sampling batch, shared by both sides."""
    pool = random_pool(config, batch, seed=1)
    return {"tokens": pool["tokens"], "pooled": pool["pooled"]}


def trajbench_sample(config, inputs: dict) -> Workload:
    """trajbench's compiled sampler (``jit_generate``, as ``evaluate.generate_images`` calls it): Euler on the
    shared rf ODE, 50 steps, guidance 2.0 with one network call on the [cond; uncond] batch per step. The
    parameters are the initial ones plus N(0, 0.02) noise, so no zero-initialised gate short-cuts a path."""
    trainer = Trainer(config)
    state = trainer.init_state(random_pool(config, 1))
    leaves, tree = jax.tree.flatten(state["params"])
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.02 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    network = jax.tree_util.Partial(trainer.model.apply, params)
    formulation = for_sampling(get_formulation(config.formulation))
    tokens, pooled = jnp.asarray(inputs["tokens"]), jnp.asarray(inputs["pooled"])
    setting = SamplerSetting.parse(f"{SAMPLE_STEPS}x{GUIDANCE}")
    counter = iter(range(1 << 30))

    def sample():
        images, _ = jit_generate(formulation, network, tokens, pooled, jax.random.key(next(counter)),
                                 steps=setting.steps, guidance=setting.guidance, solver=setting.solver,
                                 coordinates=setting.coordinates, grid=setting.grid, image_shape=data_shape(config),
                                 x0_clip=setting.x0_clip_for(trainer), clip=trainer.autoencoder is None)
        return images

    return Workload(repeat(sample, jax.block_until_ready), tokens.shape[0], count_params(params))


def diffusers_sample(config, inputs: dict) -> Workload:
    """A diffusers-pipeline-style loop under ``torch.inference_mode()``: ``FlowMatchEulerDiscreteScheduler``
    with ``set_timesteps(50)``; per step the model on the doubled [cond; uncond] batch (uncond = zero text
    features, like trajbench's), guidance 2.0, ``scheduler.step``."""
    model = diffusers_model(config).eval()
    scheduler = FlowMatchEulerDiscreteScheduler()
    tokens, pooled = torch.from_numpy(inputs["tokens"]), torch.from_numpy(inputs["pooled"])
    both_tokens = torch.cat([tokens, torch.zeros_like(tokens)])
    both_pooled = torch.cat([pooled, torch.zeros_like(pooled)])
    batch, (h, w, channels) = tokens.shape[0], data_shape(config)

    def sample():
        scheduler.set_timesteps(SAMPLE_STEPS)
        with torch.inference_mode():
            latents = torch.randn(batch, channels, h, w)
            for t in scheduler.timesteps:
                out = model(hidden_states=torch.cat([latents, latents]), timestep=t.expand(2 * batch),
                            encoder_hidden_states=both_tokens, pooled_projections=both_pooled, return_dict=False)[0]
                cond, uncond = out.chunk(2)
                latents = scheduler.step(uncond + GUIDANCE * (cond - uncond), t, latents, return_dict=False)[0]
        return latents

    return Workload(repeat(sample), batch, torch_params(model))


# ---- measurements -----------------------------------------------------------------------------------------


def matmul_peak(budget: Budget) -> dict:
    """The machine's fp32 matmul peak: the best of ``trajbench.estimate.matmul_peak_flops`` over several sizes
    (its default is 1024 only). ``__wrapped__`` skips its cache, so each call measures anew."""
    by_size = {size: estimate.matmul_peak_flops.__wrapped__(size, budget.peak_seconds) for size in PEAK_SIZES}
    best = max(by_size.values())
    return {"flops": best, "gflops": best / 1e9, "best_size": max(by_size, key=by_size.get),
            "gflops_by_size": {str(s): f / 1e9 for s, f in by_size.items()}}


def peak_matmul_side() -> Workload:
    """The peak's jitted ``x @ x`` (``IN_ROUND_PEAK_SIZE`` square) as a third side of the training comparison:
    timed in the same rounds as the two training steps, it gives the matmul speed of the machine as it was while
    they ran (a 2-core cloud machine's speed drifts by tens of percent over minutes)."""
    x = jax.random.normal(jax.random.key(0), (IN_ROUND_PEAK_SIZE, IN_ROUND_PEAK_SIZE), jnp.float32)
    product = jax.jit(lambda a: a @ a)
    return Workload(repeat(lambda: product(x), jax.block_until_ready), images=0)


def train_comparison(preset: str, budget: Budget) -> dict:
    """Training images/s of trajbench vs diffusers + torch.optim.AdamW at the preset's configuration, and the
    matmul peak timed in the same rounds (``matmul_peak``, for the MFU)."""
    config = preset_config(preset)
    log(f"train {preset}: building both sides")
    jax_side, torch_side = trajbench_train(config), diffusers_train(config)
    threads, probe = torch_threads(torch_side)
    log(f"train {preset}: torch seconds/step by thread count {probe}: using {threads}")
    sides = {"trajbench": jax_side, "diffusers": with_threads(torch_side, threads), "matmul_peak": peak_matmul_side()}
    timing = measure(sides, warmup=budget.warmup, repeats=budget.repeats, round_seconds=budget.round_seconds)
    peak = timing.pop("matmul_peak")
    peak_flops = 2 * IN_ROUND_PEAK_SIZE**3 / peak["seconds"]
    for name in ("trajbench", "diffusers"):
        timing[name]["params"] = sides[name].params
    ratio = timing["trajbench"]["images_per_s"] / timing["diffusers"]["images_per_s"]
    log(f"train {preset}: trajbench {timing['trajbench']['images_per_s']:.0f} img/s, "
        f"diffusers {timing['diffusers']['images_per_s']:.0f} img/s, ratio {ratio:.2f}")
    return {"ratio": ratio, "torch_threads": threads, "torch_threads_probe_seconds": probe,
            "matmul_peak": {"gflops": peak_flops / 1e9, "size": IN_ROUND_PEAK_SIZE, **peak}, **timing}


def mfu(preset: str, train: dict, peak: dict) -> dict:
    """Model FLOPs utilisation of trajbench's training step: 3 x forward FLOPs x batch per step, per second,
    over the matmul peak timed in the same rounds (``mfu``), and over the best peak of the whole run
    (``mfu_vs_best_peak``, measured first and last at three sizes: lower when the machine was slower during
    the training rounds than at its fastest)."""
    config = preset_config(preset)
    flops_per_step = 3 * forward_flops(model_config(config)) * config.batch_size
    achieved = flops_per_step / train["trajbench"]["seconds"]
    in_rounds = train["matmul_peak"]["gflops"] * 1e9
    return {"mfu": achieved / in_rounds, "mfu_vs_best_peak": achieved / peak["flops"],
            "flops_per_step": flops_per_step, "achieved_gflops": achieved / 1e9,
            "peak_gflops_in_rounds": in_rounds / 1e9, "best_peak_gflops": peak["gflops"]}


def sample_comparison(preset: str, budget: Budget, threads: int) -> dict:
    """Images/s of 50-step Euler sampling with guidance 2.0: trajbench's jit_generate vs a diffusers loop
    (torch with ``threads`` threads, the count the training probe chose)."""
    config = preset_config(preset)
    inputs = sampling_inputs(config, budget.sample_batch)
    log(f"sample {preset}: building both sides (batch {budget.sample_batch}, torch threads {threads})")
    sides = {"trajbench": trajbench_sample(config, inputs),
             "diffusers": with_threads(diffusers_sample(config, inputs), threads)}
    timing = measure(sides, warmup=1, repeats=budget.sample_repeats, round_seconds=0.0)
    ratio = timing["trajbench"]["images_per_s"] / timing["diffusers"]["images_per_s"]
    log(f"sample {preset}: trajbench {timing['trajbench']['images_per_s']:.1f} img/s, "
        f"diffusers {timing['diffusers']['images_per_s']:.1f} img/s, ratio {ratio:.2f}")
    return {"ratio": ratio, "batch": budget.sample_batch, "steps": SAMPLE_STEPS, "guidance": GUIDANCE,
            "torch_threads": threads, **timing}


def multivariant(preset: str, budget: Budget) -> dict:
    """K variants in one compiled program (``Trainer(config, variants=K)``) vs the same K runs one after
    another (K ``Trainer``s, each stepping its own state for the same number of steps; a round of n calls runs
    n steps of each run in turn).

    ``speedup`` (the main figure) is steady state: compilation excluded. Compilation is reported apart
    (``compile_seconds``: first call minus one steady call; K compiles for one_after_another), and
    ``end_to_end_speedup`` is a whole run of the preset's ``steps`` including set-up (Trainer, init) and
    compilation (one compile vs K), computed from the measured parts. Nothing is cached on disk here.
    """
    config = preset_config(preset)
    names = VARIANTS[:budget.variants]
    log(f"multivariant {preset}: building {len(names)} variants together and {len(names)} runs")
    started = time.perf_counter()
    together = trajbench_train(config, names)
    setup = {"together": time.perf_counter() - started}
    started = time.perf_counter()
    runs = [trajbench_train(preset_config(preset, name)) for name in names]
    setup["one_after_another"] = time.perf_counter() - started

    def one_after_another(n: int) -> None:
        for run in runs:
            run.run(n)

    sides = {"together": together, "one_after_another": Workload(one_after_another, config.batch_size * len(runs))}
    log(f"multivariant {preset}: timing (the first calls compile)")
    timing = measure(sides, warmup=budget.warmup, repeats=budget.variant_repeats, round_seconds=budget.round_seconds)
    whole_run = {}
    for name, side in timing.items():
        side["compile_seconds"] = side["first_call_seconds"] - side["seconds"]
        side["setup_seconds"] = setup[name]
        whole_run[name] = setup[name] + side["first_call_seconds"] + (config.steps - 1) * side["seconds"]
    speedup = timing["one_after_another"]["seconds"] / timing["together"]["seconds"]
    end_to_end = whole_run["one_after_another"] / whole_run["together"]
    log(f"multivariant {preset}: steady-state speedup {speedup:.2f}; end to end ({config.steps} steps, "
        f"compiles included) {end_to_end:.2f}")
    return {"speedup": speedup, "end_to_end_speedup": end_to_end, "end_to_end_steps": config.steps,
            "end_to_end_seconds": whole_run, "variants": list(names), **timing}


def cell_cost(train: dict, quick_check: bool) -> dict:
    """Wall time of one whole study cell (train + score) and cells per hour, from measured parts:

    * ``setup``: ``trajbench.train.train`` of the cell for 2 steps in a fresh folder (data, text encoding, the
      autoencoder's latents, compilation, the validation losses, checkpoints), timed as a whole;
    * ``training``: the remaining ``steps - 2`` at the steady step time of the training comparison;
    * ``scoring``: ``evaluate_run`` on that 2-step run with the spec's scored (weights, setting) pairs, samples
      and step axis, as a grid cell calls it, timed as a whole (sampling does not depend on the weights' values).
      Its rows split it into sampling, the step axis (the N-step solves again on K prompts plus the accurate
      Dopri5 reference solve) and judging (FID features, CLIP score, the recognisability classifier,
      bootstrap); the classifier's own pass is timed apart on ``samples`` images per row.

    ``quick_check`` scores 2 pairs on 16 samples and a step axis of 4 prompts: it only checks that this runs."""
    from trajbench.evaluate import Judges, evaluate_run, evaluation_dataset
    from trajbench.train import train as train_run

    spec, config = _study["spec"], _study["config"]
    ev = spec.eval
    pairs = [(w, s) for w, s, _ in ev.scored()]
    options = ev.run_options()
    if quick_check:
        pairs = pairs[:2]
        options |= {"num_samples": 16, "step_axis_samples": min(ev.step_axis_samples, 4)}
    samples, step_axis = options["num_samples"], options["step_axis_samples"]
    with tempfile.TemporaryDirectory() as folder:
        run_dir = os.path.join(folder, "run")
        log(f"cell: training {run_dir} for 2 steps (set-up and compilation)")
        started = time.perf_counter()
        train_run(dataclasses.replace(config, steps=2, eval_every=2), run_dir, progress=False)
        setup = time.perf_counter() - started
        log(f"cell: scoring {len(pairs)} (weights, setting) pairs on {samples} samples, step axis {step_axis}")
        started = time.perf_counter()
        rows = evaluate_run(run_dir, pairs=pairs, **options)
        scoring = time.perf_counter() - started
    judges = Judges(evaluation_dataset(config), **ev.judge_options())
    classifier = None
    if judges.classifier is not None:  # its speed does not depend on the images' content
        r = config.resolution
        images = np.random.default_rng(0).uniform(-1, 1, (samples, r, r, 3)).astype(np.float32)
        judges.classifier.predict(images)  # compiled
        started = time.perf_counter()
        judges.classifier.predict(images)
        classifier = (time.perf_counter() - started) * len(rows)
    sampling = sum(row["sample_seconds"] for row in rows)
    step_axis_seconds = sum(row.get("step_axis_seconds", 0.0) for row in rows)
    training = (config.steps - 2) * train["trajbench"]["seconds"]
    total = setup + training + scoring
    parts = {"setup": setup, "training": training, "scoring": scoring}
    scoring_parts = {"sampling": sampling, "step_axis": step_axis_seconds,
                     "judging": scoring - sampling - step_axis_seconds, "classifier_pass": classifier}
    log(f"cell: {total / 60:.1f} min ({', '.join(f'{k} {v / 60:.1f}' for k, v in parts.items())}), "
        f"{3600 / total:.2f} cells per hour")
    return {"seconds": total, "cells_per_hour": 3600 / total, "parts": parts, "scoring_parts": scoring_parts,
            "share_of_cell": {k: (v or 0.0) / total for k, v in {**parts, **scoring_parts}.items()},
            "steps": config.steps, "batch": config.batch_size, "pairs": len(pairs), "samples": samples,
            "step_axis_samples": step_axis, "spec": spec.source, "cell": _study["cell"].key}


# ---- the report -------------------------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"device": f"{jax.devices()[0].platform}: {cpu}", "cpu_count": os.cpu_count(),
            "jax_devices": jax.device_count(),
            "versions": {name: version(name) for name in ("jax", "jaxlib", "flax", "optax", "torch", "diffusers",
                                                          "numpy", "trajbench")}
            | {"python": platform.python_version()}}


def rounded(value, digits: int = 4):
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def run_all(presets: list[str], budget: Budget, quick_check: bool) -> dict:
    """Every figure, for each preset; the matmul peak is measured first and last (the best counts)."""
    started = time.perf_counter()
    load_start = os.getloadavg()
    report = {"mode": "quick-check" if quick_check else "full", **machine(), "budget": dataclasses.asdict(budget),
              "presets": {p: describe(p) for p in presets}}
    log(f"matmul peak (sizes {PEAK_SIZES})")
    peak_start = matmul_peak(budget)
    train = {p: train_comparison(p, budget) for p in presets}
    sample = {p: sample_comparison(p, budget, train[p]["torch_threads"]) for p in presets}
    variants = {p: multivariant(p, budget) for p in presets}
    log("matmul peak again")
    peak_end = matmul_peak(budget)
    peak = max(peak_start, peak_end, key=lambda p: p["flops"])
    utilisation = {p: mfu(p, train[p], peak) for p in presets}
    cell = cell_cost(train[STUDY_CELL], quick_check) if STUDY_CELL in presets else None
    report |= {
        "train_ratio_vs_diffusers": {p: train[p]["ratio"] for p in presets},
        "mfu": {p: utilisation[p]["mfu"] for p in presets},
        "sample_ratio_vs_diffusers": {p: sample[p]["ratio"] for p in presets},
        "multivariant_speedup": {p: variants[p]["speedup"] for p in presets},
        "multivariant_end_to_end_speedup": {p: variants[p]["end_to_end_speedup"] for p in presets},
        "targets": TARGETS,
    }
    if cell is not None:
        report["cell_seconds"], report["cells_per_hour"] = cell["seconds"], cell["cells_per_hour"]
    report["targets_met"] = {name: all(v >= target for v in report[name].values())
                             for name, target in TARGETS.items()}
    report |= {
        "train": train, "mfu_detail": utilisation, "sample": sample, "multivariant": variants, "cell": cell,
        "matmul_peak": {**peak, "start_gflops": peak_start["gflops"], "end_gflops": peak_end["gflops"]},
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "wall_seconds": time.perf_counter() - started,
    }
    return rounded(report)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("smoke", "quick", "both", STUDY_CELL), default=None,
                        help="presets to measure (default: both = smoke and quick; smoke with --quick-check); "
                             f"{STUDY_CELL}: the rf/lognorm(0.00, 1.00) cell of --spec, plus its whole-cell wall time")
    parser.add_argument("--spec", default=STUDY_SPEC, help=f"the study whose cell {STUDY_CELL} measures "
                        f"(default: {STUDY_SPEC})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a value of --spec for {STUDY_CELL}, as in `trajbench grid run --set`, "
                             "e.g. train.depth=4 (repeatable)")
    parser.add_argument("--quick-check", action="store_true",
                        help="one untimed and one timed call per side, sampling batch 8, 2 variants: checks that "
                             "everything runs (about 2 minutes for smoke); the figures mean nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    preset = args.preset or ("smoke" if args.quick_check else "both")
    presets = ["smoke", "quick"] if preset == "both" else [preset]
    if STUDY_CELL in presets:
        use_study_cell(args.spec, args.overrides)
    report = run_all(presets, QUICK_CHECK if args.quick_check else FULL, args.quick_check)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
