"""Benchmarks: reconstruction, edit fidelity, cost against KSampler, scaling. Entry point: bench/run.py."""
