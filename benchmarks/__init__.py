"""Benchmarks: standalone scripts (run them with python benchmarks/NAME.py --help)."""
