"""Benchmarks: `python -m bench` (or `make bench`) runs them all; `python -m bench NAME` runs one.

Each module here with a `main(argv)` function is one benchmark. They print
figures and ratios side by side in one run; speed and memory goals are met
here, not in timed unit tests.
"""
