"""The auxiliary networks' shared machinery: the harness trains a CLIP-style evaluator, a GenEval detector and a
shape classifier (:mod:`trajbench.metrics`) and a latent autoencoder (:mod:`trajbench.models.autoencoder`) from
generated data, once each, and caches them on disk.  Each of those modules holds only its network and loss.

* :mod:`trajbench.auxnet.fit` -- the config base (the training budget), optimiser, batches, the fit loop and
  load-or-train;
* :mod:`trajbench.auxnet.cache` -- the on-disk cache (folder layout, cache key, checked reads, atomic writes);
* :mod:`trajbench.auxnet.apply` -- applying a frozen network (datasets by name, image checks, batches).
"""
