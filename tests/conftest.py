"""Test-session settings: a persistent XLA compilation cache shared by the test process and the training
subprocesses it starts, so the same program is compiled once per session rather than once per run."""

import os
import tempfile

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "trajbench-test-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
