"""Benchmarks that compare implementations side by side in one run and report ratios.

``autoeff bench attention``: every registered attention family against full attention
(see :mod:`autoeff.bench.attention`). Unit tests never check timings; benchmarks do.
"""
