"""Layer 2: the base actor, stable addresses and per-actor counters."""
