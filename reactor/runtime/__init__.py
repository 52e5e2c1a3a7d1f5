"""Layer 5: topologies, systems, and the consumer, producer and pool actors."""
