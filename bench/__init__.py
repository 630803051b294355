"""Benchmarks: each compares the bridge with a baseline in the same run. `make bench` runs them all."""
