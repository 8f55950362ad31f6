"""The GPU suite's library: device selection, timers, budgets, reports and the end-to-end runs.

``pytest -m gpu`` (tests/test_gpu_*.py) and ``benchmarks/bench_pipeline.py`` call these
modules; the pytest plugin only wires options and fixtures to them.
"""
