"""Benchmarks of kvip-bgp in the namespace lab (issue 7): ``python -m bench.run``."""
