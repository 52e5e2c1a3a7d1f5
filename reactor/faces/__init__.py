"""Layer 6: what people see: the CLI, the dashboard, metrics export."""
