"""Layer 3: supervisors, strategies, restart types and backoff."""
