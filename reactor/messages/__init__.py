"""Layer 1 of reactor: immutable events, topics and codecs.

Everything here is a value: frozen, thread-safe and free of actors. Higher
layers import from its modules, never the other way round. Users import the
public names from :mod:`reactor`, the one curated face; this package re-exports
nothing, so no name has two homes.
"""

__all__: list[str] = []
