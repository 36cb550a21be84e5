"""Reply shapes carried in a request's text, for services that call an LLM upstream.

A scenario asks for a long, slow or stalled reply with request options
(``chunks``, ``chunk_delay_ms``, ``block_ms``); a real agent back end never
forwards those, but it does forward the user's message to its LLM. When the
target declares an upstream, the client appends a marker with the options to
the text, and wschaos's fake upstream shapes its stream from the marker: so a
case means the same on a real agent back end as on the reference server.
Sans I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["SHAPE_KEYS", "SHAPE_RE", "parse_shape", "shape_marker"]

#: How a scenario's reply options travel to the fake through a service that only
#: forwards the user's message: a marker at the end of the request text.
SHAPE_RE = re.compile(r"\[\[wschaos ((?:[a-z_]+=[0-9.]+ ?)+)\]\]")
#: The options a marker carries: reply length, pace, and a stall before the first token.
SHAPE_KEYS = ("chunks", "chunk_delay_ms", "block_ms")


def shape_marker(options: Mapping[str, Any]) -> str:
    """The marker carrying ``options`` (only the shaping keys), or "" when none is set."""
    parts = [f"{k}={options[k]}" for k in SHAPE_KEYS if isinstance(options.get(k), (int, float))]
    return f" [[wschaos {' '.join(parts)}]]" if parts else ""


def parse_shape(prompt: Any) -> dict[str, float]:
    """The shaping options in the last marker of a prompt (a string or OpenAI content parts)."""
    if isinstance(prompt, list):
        prompt = " ".join(p.get("text", "") for p in prompt if isinstance(p, dict))
    if not isinstance(prompt, str):
        return {}
    found = SHAPE_RE.findall(prompt)
    if not found:
        return {}
    out: dict[str, float] = {}
    for pair in found[-1].split():
        key, _, value = pair.partition("=")
        if key in SHAPE_KEYS:
            out[key] = float(value)
    return out
