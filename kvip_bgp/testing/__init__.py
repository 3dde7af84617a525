"""Test doubles and lab plumbing shipped with the code (fake Kubernetes API, namespace lab, FRR peer)."""
