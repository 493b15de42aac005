"""stilts.index."""
