"""The GPU benchmark (issue 12): run on the GPU machine by
``benchmarks/gpu/run_on_device.sh``; see ``benchmarks/gpu/run.py``."""
