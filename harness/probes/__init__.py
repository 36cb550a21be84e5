"""Observation: /stats, psutil, the injected Python probe, settling, and hang forensics."""
