"""The nemesis: faults injected into a run, each recorded in the history with its begin and end."""
