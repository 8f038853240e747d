"""The dynamic phase: checks that run the model on the real batch, loss and optimizer."""
