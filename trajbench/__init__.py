"""trajbench: compare diffusion trajectory formulations (SD3 Section 5.1) in JAX."""
