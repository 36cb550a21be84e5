"""wschaos: a chaos and regression test harness for WebSocket services.

The roles are kept apart (see docs/ARCHITECTURE.md): a *target* describes the
service, the *supervisor* runs it, *clients* act on it and record into a
*history*, *faults* disturb it, *probes* observe it, *checkers* judge the
history and the observations, and *reports* render the verdicts.
"""

__version__ = "0.1.0"
