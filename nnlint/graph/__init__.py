"""The graph phase: one capture of the model, structural rules over its nodes."""
