"""The invariants a program is held to: the scenarios' own checkers, plus the model's comparisons.

Everything the protocol says about a history is judged by the pure checkers
the scenarios use (``checkers.one_terminal_per_request``, ``checkers.not_found``,
``checkers.back_to_baseline``, ...), called on the program's history. What is
new here is only what needs the model: which requests an INTERRUPT had to
claim when a short reply may or may not have ended first, when BUSY and
DUPLICATE_REQUEST are due, who had to receive each EVENT, whether an
interrupted final frame was claimed by an INTERRUPT at all, and whether
``/stats`` counts at least what the program holds open.

A finding is a ``fail``. ``unknown`` (no data: nothing was interrupted, the
connection died before the answer) is kept for the record and never a finding.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from harness import checkers
from harness.core.history import History
from harness.core.timing import scaled
from harness.core.verdict import Verdict, fail, passed, unknown
from harness.explore.program import ExploreConfig
from harness.explore.record import ProgramRun
from harness.target.spec import Target

__all__ = ["IDLE_KEYS", "failures", "judge"]

#: Figures that return to the baseline once every session is gone (PROTOCOL.md "Introspection").
IDLE_KEYS = ("connections", "sessions", "active_requests", "subscriptions", "per_session_state",
             "tasks", "threads", "agent_threads")


def _frames(history: History) -> list[tuple[str, dict[str, Any]]]:
    return [(o.source, o.data or {}) for o in history.observations("frame")]


def _claims_by_client(history: History) -> dict[str, set[str]]:
    claims: dict[str, set[str]] = defaultdict(set)
    for client, f in _frames(history):
        if f.get("kind") == "ack":
            claims[client].update(str(i) for i in f.get("interrupted_ids") or [])
    return claims


def _ack_claims(run: ProgramRun) -> Iterable[Verdict]:
    """Each INTERRUPT claimed every request it had to, and only ones it could."""
    for rec in run.model.interrupts:
        res = rec.result
        label = f"{rec.client} INTERRUPT {rec.target or 'all'} ({rec.how})"
        if res is None or res.ack is None:
            continue  # no ACK: one_ack_each judges that
        if rec.must_not_find:
            continue  # checkers.not_found judges these
        if rec.sure:
            # A request it had to claim: SUCCESS for sure, and the ids too when nothing else was open.
            yield checkers.ack_status(res.ack, "SUCCESS", None if rec.maybe else sorted(rec.sure)).labelled(label)
        if not rec.maybe:
            continue
        got = set(res.interrupted_ids)
        missing = rec.sure - got
        extra = got - rec.sure - rec.maybe
        status = res.status
        figs = {"claimed": sorted(got), "must": sorted(rec.sure), "may": sorted(rec.maybe), "status": status}
        problems = []
        if missing:
            problems.append(f"did not claim {', '.join(sorted(missing))}, still streaming when it was read")
        if extra:
            problems.append(f"claimed {', '.join(sorted(extra))}, not active in the session")
        if status != ("SUCCESS" if got else "NOT_FOUND"):
            problems.append(f"status {status} with {len(got)} requests claimed")
        if problems:
            yield fail("model.ack_claims", f"{label}: " + "; ".join(problems), **figs)
        else:
            yield passed("model.ack_claims", f"{label}: claimed {sorted(got) or 'nothing'} (must "
                                             f"{sorted(rec.sure) or 'nothing'}, may {sorted(rec.maybe)})", **figs)


def _refusals(run: ProgramRun) -> Iterable[Verdict]:
    """BUSY and DUPLICATE_REQUEST exactly when the model says they are due."""
    for r in run.model.requests:
        op = r.op
        if op is None or r.expect_error == "?" or op.outcome in ("pending", "unknown"):
            continue
        code = op.data.get("error_code") if op.outcome == "fail" else None
        label = f"{r.client} REQUEST {r.request_id}"
        if r.expect_error is not None:
            record = {"kind": "error" if op.outcome == "fail" else "final", "code": code}
            yield checkers.error_code(record, r.expect_error).labelled(label)
        elif code in ("BUSY", "DUPLICATE_REQUEST"):
            live = sum(1 for o in run.model.requests if o.client == r.client and o.index < r.index
                       and o.long and o.expect_error is None)
            yield fail("model.refusals", f"{label}: refused {code}, but the model had it accepted "
                                         f"(at most {live} long requests of the session were active)",
                       code=code)


def _interrupted_claimed(history: History) -> Verdict:
    """Every final frame marked interrupted was claimed by an INTERRUPT_ACK on its connection."""
    name = "model.interrupted_claimed"
    claims = _claims_by_client(history)
    finals = [(c, f) for c, f in _frames(history)
              if f.get("kind") == "final" and f.get("interrupted") is True and f.get("reason") != "shutdown"]
    if not finals:
        return unknown(name, "no request ended interrupted")
    bad = [f"request {f.get('request_id')} of {c}" for c, f in finals if str(f.get("request_id")) not in claims[c]]
    if bad:
        return fail(name, f"{len(bad)} requests ended interrupted that no INTERRUPT of their session claimed: "
                          + "; ".join(bad[:5]), unclaimed=len(bad))
    return passed(name, f"all {len(finals)} interrupted finals were claimed by an ACK of their session")


def _delivery(run: ProgramRun) -> Iterable[Verdict]:
    """Each EVENT reached every session subscribed when it was published, once, and no one else."""
    expected = run.expected_events or run.model.expected_events()
    if not expected:
        return
    got: Counter[tuple[str, str]] = Counter()
    for client, f in _frames(run.history):
        if f.get("kind") == "event" and isinstance(f.get("topic"), str):
            got[(client, f["topic"])] += 1
    pubs = Counter(d.topic for d in run.model.deliveries)
    ok_pubs = Counter(op.data.get("topic") for op in run.history.operations("publish") if op.outcome == "ok")
    by_topic: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    for (client, topic), rng in expected.items():
        by_topic[topic][client] = rng
    for topic, clients in sorted(by_topic.items()):
        n = pubs[topic]
        exact = all(lo == hi and lo in (0, n) for lo, hi in clients.values()) and ok_pubs[topic] == n
        if exact:
            subs = sorted(c for c, (lo, _) in clients.items() if lo == n and n)
            others = sorted(c for c, (lo, _) in clients.items() if lo == 0)
            yield checkers.exactly_once(run.history, topic, subs, others)
            continue
        bad = [f"{c} got {got[(c, topic)]} EVENTs on {topic!r}, expected {lo}" + (f" to {hi}" if hi != lo else "")
               for c, (lo, hi) in sorted(clients.items()) if not lo <= got[(c, topic)] <= hi]
        if bad:
            yield fail("model.delivery", "; ".join(bad), topic=topic, publishes=n)
        else:
            yield passed("model.delivery", f"{n} PUBLISHes on {topic!r}: every session got what its "
                                           "subscriptions allowed", topic=topic, publishes=n)


def _first_chunks(run: ProgramRun, bound_ms: float) -> Iterable[Verdict]:
    """No request's first chunk is held back beyond its own pace (its chunk delay, its agent's
    block): a blocking agent's thread, or another request, must never delay it (rule 3)."""
    first: dict[tuple[str, str], int] = {}
    for o in run.history.observations("frame"):
        d = o.data or {}
        if d.get("kind") == "chunk" and isinstance(d.get("request_id"), str):
            first.setdefault((o.source, d["request_id"]), o.t_ns)
    for r in run.model.requests:
        op = r.op
        if op is None or r.expect_error is not None or r.client in run.slowed:
            continue
        if run.lagged and r.client in run.proxied:
            continue
        t = first.get((r.client, r.request_id))
        if t is None or t < op.started_ns:
            continue  # no chunk (interrupted first, refused, cut off), or one of an earlier use of the id
        opts = op.data.get("options") or {}
        own_ms = float(opts.get("block_ms") or 0) + float(opts.get("chunk_delay_ms") or 0)
        ms = (t - op.started_ns) / 1e6 - own_ms
        yield checkers.not_delayed(max(ms, 0.0), bound_ms, what=f"first chunk of {r.request_id} of {r.client} "
                                                                 f"beyond its own {own_ms:g} ms")


def _stats_agree(run: ProgramRun) -> Iterable[Verdict]:
    """While the program's sessions are open, /stats counts at least what the model holds."""
    if run.stats_source != "stats" or not run.open_at_sample:
        return
    during = run.during
    if during is None:
        yield unknown("model.stats_agree", "/stats did not answer while the sessions were open")
        return
    low = [f"{k} {during.get(k)} < {v} the program holds" for k, v in run.open_at_sample.items()
           if isinstance(during.get(k), (int, float)) and during[k] < v]
    if low:
        yield fail("model.stats_agree", "/stats undercounts: " + "; ".join(low), during=during,
                   held=run.open_at_sample)
    else:
        yield passed("model.stats_agree", "/stats counts every open session and active request "
                                          f"({run.open_at_sample})")


def _stats_back(run: ProgramRun, config: ExploreConfig) -> Iterable[Verdict]:
    base, after = run.baseline, run.after
    if base is None:
        yield unknown("resources.back_to_baseline", "no /stats and no injected probe: the books cannot be read")
        return
    allow = {"tasks": config.tasks_allowance, "threads": config.threads_allowance}
    for key in IDLE_KEYS:
        if key not in base:
            continue
        yield checkers.back_to_baseline(
            after=(after or {}).get(key), baseline=base.get(key), allowed=allow.get(key, 0), what=key,
        ).labelled(key)


def _sockets_back(run: ProgramRun, config: ExploreConfig) -> Iterable[Verdict]:
    base, after = run.resources_before, run.resources_after
    if base is None:
        return
    yield checkers.back_to_baseline(after=(after or {}).get("num_fds"), baseline=base.get("num_fds"),
                                    allowed=config.fds_allowance, what="fds").labelled("fds")
    yield checkers.back_to_baseline(after=((after or {}).get("tcp") or {}).get("CLOSE_WAIT", 0) if after else None,
                                    baseline=(base.get("tcp") or {}).get("CLOSE_WAIT", 0), allowed=0,
                                    what="CLOSE_WAIT sockets").labelled("CLOSE_WAIT")


def judge(run: ProgramRun, *, target: Target, config: ExploreConfig) -> list[Verdict]:
    """Every invariant over one program's run, in a fixed order (the first failure names the finding)."""
    h = run.history
    out: list[Verdict] = []
    if run.harness_error:
        out.append(unknown("explore.harness", f"the harness failed, nothing judged: {run.harness_error}"))
        return out
    out.append(checkers.process_alive(run.target_alive))
    if not run.target_alive:
        return out
    out.extend(_stats_back(run, config))
    out.extend(_sockets_back(run, config))
    out.append(checkers.one_terminal_per_request(h))
    out.append(checkers.seq_gap_free(h))
    conv = target.conventions
    if h.operations("interrupt"):
        out.append(checkers.one_ack_each(h))
        out.append(checkers.final_before_ack(h, order=conv.interrupt_order, grace_ms=conv.after_ack_grace_ms))
        # Both key claims by request, so an id reused behind the INTERRUPT that freed it is judged as two.
        out.append(checkers.no_frames_after_ack(h, grace_ms=conv.after_ack_grace_ms, order=conv.interrupt_order))
        out.append(checkers.no_double_claim(h))
    ids = [r.interrupt_id for r in run.model.interrupts
           if r.must_not_find and r.interrupt_id and r.result is not None and r.result.ack is not None]
    if ids:
        out.append(checkers.not_found(h, ids))
    out.extend(_ack_claims(run))
    if not conv.replaces_active:  # a replaced request may end interrupted with no INTERRUPT
        out.append(_interrupted_claimed(h))
    out.extend(_refusals(run))
    out.extend(_delivery(run))
    out.extend(_stats_agree(run))
    # The scenarios' bound for a reply that must not wait behind another: twice the ACK bound.
    out.extend(_first_chunks(run, scaled(target.limits.ack_bound_s) * 1000 * 2))
    bound_ms = scaled(target.limits.upstream_close_s) * 1000
    for _prompt, sent_ns, closed_ns in run.upstream_claims:
        out.append(checkers.upstream_closed_within(sent_ns, closed_ns, bound_ms))
    out.extend(run.verdicts)
    for name in run.close_1009_later:
        label = f"{name} oversize frame, read at the end"
        closes = [o for o in h.observations("closed") if o.source == name]
        if closes and closes[0].data.get("code") is None:
            # A server that gives up on the closing handshake resets the connection, and the
            # reset throws away the close frame the client had not read yet.
            out.append(unknown("input.closed_with", f"{label}: the connection ended with no close frame the "
                                                    "client could still read (it was not reading)").labelled(label))
        else:
            out.append(checkers.closed_with(h, name, 1009).labelled(label))
    return out


def failures(verdicts: Iterable[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.status == "fail"]
