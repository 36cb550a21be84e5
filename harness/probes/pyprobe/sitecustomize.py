"""wschaos zero-code probe: imported by ``site`` at interpreter start-up.

The harness prepends this directory to a Python target's ``PYTHONPATH`` and
sets ``WSCHAOS_PROBE_SOCKET``; the probe in ``_wschaos_probe`` then serves
that socket from a daemon thread. Without the variable nothing is started.

Being first on the path, this module shadows any ``sitecustomize`` the target
already had (a distribution's, a virtualenv's, the target's own), so that one
is found further down the path and executed after the probe is installed:
the target starts exactly as it would have, plus the probe.
"""

import os as _os
import sys as _sys


def _install_probe() -> None:
    try:
        import _wschaos_probe

        _wschaos_probe.install()
    except Exception:
        pass  # the probe must never stop or disturb the target's start-up


def _chain_previous() -> None:
    import importlib.machinery
    import importlib.util

    here = _os.path.dirname(_os.path.realpath(__file__))

    def elsewhere(entry: str) -> bool:
        try:
            return _os.path.realpath(entry or _os.getcwd()) != here
        except (OSError, ValueError):
            return True

    spec = importlib.machinery.PathFinder.find_spec(
        "sitecustomize", [p for p in _sys.path if elsewhere(p)]
    )
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    # The chained module runs as "sitecustomize", as it would have without us;
    # its own errors propagate to site.py, which reports them as it always does.
    _sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_install_probe()
_chain_previous()
