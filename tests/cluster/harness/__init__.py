"""Test harness: a real Kubernetes control plane built from Go modules, with fake GKE node pools.

Used by the cluster-tier fixtures (``tests/cluster/conftest.py``), ``make cluster`` and ``make demo``.
"""
