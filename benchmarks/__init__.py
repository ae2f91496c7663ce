"""Benchmarks of iothreads against the baselines it replaces; run ``python -m benchmarks``."""
