"""Median and min wall time of one jitted MMDiT forward + backward step, per attention implementation.

    .venv/bin/python benchmarks/mmdit_step.py [--depth 3 --width 64 --heads 3 --patch 4 ...]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from trajbench.models.mmdit import MMDiT, MMDiTConfig, count_params, param_count_formula


def benchmark_step(config: MMDiTConfig, batch: int = 64, text_tokens: int = 8, reps: int = 30, seed: int = 0):
    """Median and min wall time (seconds) of one jitted forward+backward pass (MSE loss,
    ``jax.value_and_grad`` w.r.t. the params), after one warm-up/compile call."""
    model = MMDiT(config)
    k = jax.random.split(jax.random.key(seed), 5)
    x = jax.random.normal(k[0], (batch, config.image_size, config.image_size, config.channels))
    c = jax.random.uniform(k[1], (batch,))
    tt = jax.random.normal(k[2], (batch, text_tokens, config.text_dim))
    pl = jax.random.normal(k[3], (batch, config.pooled_dim))
    params = jax.jit(model.init)(k[4], x, c, tt, pl)

    @jax.jit
    def step(params, x, c, tt, pl):
        return jax.value_and_grad(lambda p: jnp.mean(jnp.square(model.apply(p, x, c, tt, pl) - x)))(params)

    jax.block_until_ready(step(params, x, c, tt, pl))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(step(params, x, c, tt, pl))
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], times[0], count_params(params)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Time one jitted forward+backward step of the MMDiT.")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--text-tokens", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--attention", default="einsum,dot_product")
    args = ap.parse_args(argv)
    for attention in args.attention.split(","):
        cfg = MMDiTConfig(depth=args.depth, width=args.width, heads=args.heads, patch_size=args.patch,
                          image_size=args.image_size, max_text_tokens=args.text_tokens, dtype=args.dtype,
                          attention=attention)
        med, best, n = benchmark_step(cfg, args.batch, args.text_tokens, args.reps)
        print(f"{attention:12s} params {n} (formula {param_count_formula(cfg)})  fwd+bwd median {1e3 * med:.1f} ms"
              f"  min {1e3 * best:.1f} ms  [{jax.devices()[0].platform}, batch {args.batch}]")


if __name__ == "__main__":
    main()
