"""Audit a synthetic set before trusting it: contamination, label fidelity, distance to real data, artifacts."""
