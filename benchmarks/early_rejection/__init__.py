"""The early-rejection benchmark's parts (``benchmarks/bench_early_rejection.py`` runs them and says what they
show): :mod:`replay` (the pools, the policies and the per-request replay), :mod:`measures` (loads, amplitude,
overtaking, plots)."""
