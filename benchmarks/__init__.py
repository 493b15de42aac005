"""stilts.benchmarks."""
