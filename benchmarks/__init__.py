"""framesink's benchmark: plain tifffile writes vs framesink end to end, in one run.

Run it from the repository root: ``python -m benchmarks --help``.
"""
