"""One training run in pieces, from the bottom up: :mod:`~trajbench.run.config` (TrainConfig, presets),
:mod:`~trajbench.run.build` (networks, data, optimiser), :mod:`~trajbench.run.mesh` (devices),
:mod:`~trajbench.run.trainer` (the compiled steps), :mod:`~trajbench.run.folder` (the run's files) and
:mod:`~trajbench.run.load` (a finished run read back). The loop that ties them is :mod:`trajbench.train`."""
