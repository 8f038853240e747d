"""The training setup: the model loaded, its inputs, loss and optimizer, the guards around user code."""
