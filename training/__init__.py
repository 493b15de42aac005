"""stilts.training."""
