"""The ground layer: config composition, errors, file IO, the dataset-folder format, seeding, secrets, logs,
the environment record and the parallel map. Every other layer may import it; it imports none of them."""
