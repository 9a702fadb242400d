"""One training run: fit, test on every test set, write predictions and metrics."""
