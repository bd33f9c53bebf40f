"""Small reference servers the benchmark compares against (written for the benchmark)."""
