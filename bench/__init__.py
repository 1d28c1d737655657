"""Benchmarks (``make bench``). Results are printed as Markdown and written under ``bench/results/``."""
