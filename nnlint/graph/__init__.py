"""The graph phase: one capture of the model, structural rules over its nodes."""

# Ops that move or relabel data without computing anything new. Here rather than in
# `graph.py`, so the graph rules that need only this set do not import that module's
# tables when the registry loads them, which every run does.
TRANSPARENT = frozenset(
    {
        "view",
        "reshape",
        "flatten",
        "permute",
        "transpose",
        "contiguous",
        "squeeze",
        "unsqueeze",
        "cast",
        "identity",
    }
)
