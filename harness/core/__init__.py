"""Foundations every role shares, with no harness imports: time, the history, verdicts, process trees, socket primitives."""
