"""``make bench``: throughput, batching, latency and memory of metrica-bridge on this machine.

Run ``python -m benchmarks.run --help``; results are written up in ``docs/benchmarks.md``.
Nothing here is part of the test suite.
"""
