"""Synthetic chest radiographs: the attribute grid every generator samples from, and the generators."""
