"""The script phase: training scripts read with libcst, never run, torch never imported."""
