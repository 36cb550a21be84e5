"""wschaos bench: performance figures, measured and reported, never asserted (see run.py)."""
