"""ODE samplers (see the sampling issue)."""
