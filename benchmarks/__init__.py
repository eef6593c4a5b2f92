"""Benchmarks: featurize against the bare model, the naive way and stock
RunInference. ``python -m benchmarks.run``; see docs/PERFORMANCE.md."""
