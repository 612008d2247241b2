"""Results as data: the per-item schema, statistics across cycles, the session's collection of results."""
