"""The defaults of scoring a run, in one place: :func:`trajbench.evaluate.evaluate_run`, a spec's ``[eval]``
(:class:`trajbench.spec.EvalSpec`) and ``trajbench eval`` read them. Plain values, so that the CLI can show them
without importing JAX."""

SETTINGS = ("5x2.0", "25x2.0", "50x2.0")  # sampler settings, STEPSxGUIDANCE[/SOLVER][@PROTOCOL]
WEIGHTS = ("ema", "raw")  # EMA and raw network weights
SAMPLES = 256  # generated images per setting (one per validation prompt)
N_BOOT = 200  # bootstrap replicates per confidence interval
CHECKPOINT = "best"  # the step with the lowest EMA validation loss, as the paper does
SEED = 0  # sampling noise
JUDGE = "inhouse"  # who judges FID / KID features and CLIP score: the evaluator trained per dataset
