"""Predictions, metrics and the files a run writes about them."""
