"""Generated programs that find lifecycle races nobody scripted, shrunk to a replayable minimum.

* :mod:`harness.explore.strategies` — Hypothesis strategies: malformed frames, program steps;
* :mod:`harness.explore.program` — programs as data: words, program files, the explorer's settings;
* :mod:`harness.explore.model` — the protocol state a program should produce, and what it requires;
* :mod:`harness.explore.execute` — run one program against a live target (history, model, books);
* :mod:`harness.explore.invariants` — the scenarios' checkers over that history, and the model's comparisons;
* :mod:`harness.explore.host` — one target for the whole exploration, restarted when it dies;
* :mod:`harness.explore.engine` — the Hypothesis-driven search, shrink, confirmation and replay;
* :mod:`harness.explore.command` — ``explore`` and ``replay`` on the command line.
"""

__all__: list[str] = []
