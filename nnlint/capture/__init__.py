"""Running the training script in a forked child up to its first optimizer step."""
