"""Processes the harness runs: the supervisor, spawning, output capture, the guard, the pty terminal."""
