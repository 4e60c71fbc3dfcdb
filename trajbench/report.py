"""Tables and plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trajbench import formulations

DEFAULT_DENSITY_VARIANTS = (
    "rf", "rf/lognorm(0.00, 1.00)", "rf/mode(1.29)", "rf/cosmap", "eps/linear", "v/cos", "edm(-1.20, 1.20)", "edm/rf",
)


def density_curves(name: str, points: int = 801) -> dict:
    """pi(t) on a uniform t grid, and the effective weight w_t against lambda_t on a logit-spaced grid
    (t = sigmoid(x), |x| <= 16) so both tails of log-SNR are covered."""
    import jax
    import jax.numpy as jnp

    f = formulations.get(name)
    t = jnp.linspace(1e-3, 1 - 1e-3, points, dtype=jnp.float32)
    t_logit = jax.nn.sigmoid(jnp.linspace(-16.0, 16.0, points, dtype=jnp.float32))
    pdf, lam, weight = jax.jit(lambda g, a, b: (g.t_pdf(a), g.logsnr(b), g.effective_weight(b)))(f, t, t_logit)
    return {"t": np.asarray(t), "pdf": np.asarray(pdf), "logsnr": np.asarray(lam), "weight": np.asarray(weight)}


def plot_densities(names, out: str | Path) -> Path:
    """Two panels: the training-time density pi(t), and the effective eps-loss weight over log-SNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [formulations.parse(n).name for n in (names or DEFAULT_DENSITY_VARIANTS)]
    fig, (ax_t, ax_w) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in names:
        curves = density_curves(name)
        ax_t.plot(curves["t"], curves["pdf"], label=name)
        ax_w.plot(curves["logsnr"], curves["weight"], label=name)
    ax_t.set(xlabel="t (0 = data, 1 = noise)", ylabel="pi(t)", title="training-time density", ylim=(0, None))
    ax_w.set(xlabel="log-SNR lambda (left: noise, right: data)", ylabel="w_t", yscale="log", xlim=(-15, 15),
             ylim=(1e-4, 1e3), title="effective eps-loss weight w_t (unified form)")
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
