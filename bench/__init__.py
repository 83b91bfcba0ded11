"""The benchmark harness (bench/run.py) and its parts."""
