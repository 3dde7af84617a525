"""Test doubles and lab plumbing shipped with the code.

A fake Kubernetes API server, the network-namespace lab and an FRR peer, used by the
tests and by `make lab`.
"""
