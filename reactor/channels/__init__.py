"""Layer 4: channels, their capacity gates and backends."""
