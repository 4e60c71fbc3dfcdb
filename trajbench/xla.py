"""Options for the XLA compiler, given to ``jax.jit`` by the programs that need them."""

FORWARD_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
"""XLA options of the programs that only run the MMDiT forward (the sampling loop, the validation losses): on the
CPU, XLA's own loops and matrix products instead of YNNPACK fusions, which pull LayerNorm reductions and
elementwise chains into the products and feed them full-size copies of broadcast constants.  Training keeps
XLA's default, which is faster for its forward + backward.  Other backends ignore ``xla_cpu_`` options.  The
measurements behind both choices: benchmarks/README.md."""
