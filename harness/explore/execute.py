"""Run one program against a running target; every action lands in the program's history.

:func:`run_program` takes the steps, opens sessions as the steps name them (a
step on a session that is not open connects it first; after a close it is a
new connection, named ``s0.2``, as a user reopening a page), feeds the
:class:`~harness.explore.model.Model` each frame in the order it is sent, and
at the end (:mod:`harness.explore.ending`) closes every session and waits,
bounded, for the target's books to settle back to the baseline sampled before
the program. It returns the :class:`~harness.explore.record.ProgramRun`.

Frames sent "in one write" (a ``burst`` step) go out back to back with
nothing awaited between them, through :func:`~harness.explore.record.cork`.
(Where ``TCP_CORK`` does not exist they are still sent with nothing awaited
between them; the step notes ``coalesced: false``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from harness.client.connection import Client, ClientError, ClientTimeout
from harness.core.history import History, Operation
from harness.core.timing import now_ns, scaled
from harness.core.verdict import unknown
from harness.explore import ending
from harness.explore.model import Model
from harness.explore.record import ProgramRun, ProgramSession, RunEnv, StepTrace, cork
from harness.explore.strategies import BadFrame
from harness.nemesis.faults import FaultError, TcpProxy
from harness.nemesis.nemesis import Nemesis
from harness.probes.observe import Observer
from harness.protocol.adapters import Unsupported

__all__ = ["ProgramRun", "RunEnv", "cork", "run_program"]

#: How many loop turns a burst member may take to hand its frame to the socket.
_TURNS = 50


class _Runner:
    def __init__(self, env: RunEnv, steps: list[dict[str, Any]]) -> None:
        self.env = env
        self.cfg = env.config
        self.steps = steps
        self.history = History()
        self.nemesis = Nemesis(self.history)
        self.probes = Observer(self.history, stats_path=env.target.stats_path,
                               python_probe=env.target.python_probe, stats_keys=env.target.stats_keys)
        self.model = Model(env.target.limits.max_concurrent_requests,
                           replaces_active=env.target.conventions.replaces_active)
        self.run = ProgramRun(self.history, self.model)
        self.sessions: dict[int, ProgramSession] = {}
        self.generation: dict[int, int] = {}
        self.clients: list[Client] = []
        self.proxy: TcpProxy | None = None
        self.lag: contextlib.ExitStack | None = None
        self.answer = scaled(self.cfg.answer_s)
        self.publishes = 0
        self.bad_seen: set[int] = set()
        #: Sessions the server is closing (an oversize frame) though their client cannot see it yet.
        self.retired: list[ProgramSession] = []
        #: Answers awaited only once their session reads again (it had stopped reading).
        self.deferred: list[asyncio.Future[Any]] = []

    # -- sessions ----------------------------------------------------------------
    def _alive(self, i: int) -> ProgramSession | None:
        s = self.sessions.get(i)
        if s is None:
            return None
        if s.client.closed:
            self.model.ended(s.client.name)
            return None
        return s

    async def _proxy(self) -> TcpProxy:
        if self.proxy is None:
            sup = self.env.sup
            proxy = self.nemesis.proxy(sup.host, sup.port, allow_remote=self.env.target.allow_remote)
            await proxy.__aenter__()
            self.proxy = proxy
        return self.proxy

    async def session(self, i: int, trace: StepTrace, via: str = "direct") -> ProgramSession | None:
        s = self._alive(i)
        if s is not None:
            return s
        gen = self.generation.get(i, 0) + 1
        self.generation[i] = gen
        name = f"s{i}" if gen == 1 else f"s{i}.{gen}"
        url = self.env.sup.ws_url
        if via == "proxy":
            url = (await self._proxy()).url(self.env.target.ws_path)
        # Built as Context.client builds a case's clients, but recording into this program's history.
        client = Client(url, adapter=self.env.adapter, history=self.history, name=name,
                        allow_remote=self.env.target.allow_remote, close_timeout=scaled(self.cfg.close_s),
                        shape_upstream=self.env.target.upstream is not None)
        self.clients.append(client)
        try:
            ready = await client.connect(timeout=scaled(2))
        except ClientError as exc:
            trace.notes.append(f"{name} could not connect: {exc}")
            return None
        declared = ready.payload.get("max_concurrent_requests") if isinstance(ready.payload, Mapping) else None
        ok = isinstance(declared, int) and not isinstance(declared, bool) and declared > 0
        self.model.connected(name, declared if ok else None)
        trace.notes.append(f"{name} connected" + (" through the proxy" if via == "proxy" else ""))
        if via == "proxy":
            self.run.proxied.add(name)
        sess = ProgramSession(i, client, via)
        self.sessions[i] = sess
        return sess

    # -- frames: each returns an awaitable to finish (an answer wait) or None ---------
    def _last_op(self, client: Client, kind: str) -> Operation | None:
        for rec in reversed(self.history.records):
            if isinstance(rec, Operation) and rec.client == client.name and rec.kind == kind:
                return rec
        return None

    async def _request(self, s: ProgramSession, st: Mapping[str, Any], trace: StepTrace) -> None:
        c = s.client
        name = c.name
        reused = "reuse" in st and self.model.pick_own(name, int(st["reuse"])) is not None
        if reused:
            prev = self.model.pick_own(name, int(st["reuse"]))
            assert prev is not None
            rid = prev.request_id
        else:
            rid = self.model.new_request_id(name)
        options: dict[str, Any] = {}
        agent = st.get("agent")
        if agent == "upstream" and self.env.upstream is None and self.env.target.upstream is None:
            agent = None  # no fake upstream to stream from: the default agent instead
        if agent is not None:
            options["agent"] = agent
        # Only a fake upstream of our own streams for sure longer than any program.
        long = agent == "upstream" and self.env.upstream is not None
        if not self.env.options:
            options = {}
        elif "chunks" in st and agent != "upstream":
            options["chunks"] = int(st["chunks"])
            options["chunk_delay_ms"] = int(st.get("delay_ms", 0))
            long = options["chunks"] >= self.env.long_chunks // 10 and options["chunk_delay_ms"] >= 1
        if agent == "blocking" and "block_ms" in st:
            options["block_ms"] = int(st["block_ms"])
        rec = self.model.request(name, rid, long=long, agent=agent, reused=reused)
        rec.sent_ns = now_ns()
        # The text is unique across the exploration: the fake upstream records streams by prompt.
        rec.text = f"explore {rid} {uuid.uuid4().hex[:12]}"
        await c.request(rec.text, request_id=rid, **options)
        rec.op = self._last_op(c, "request")
        trace.notes.append(f"{name} REQUEST {rid}" + (f" (expects {rec.expect_error})" if rec.expect_error else ""))

    def _interrupt_target(self, name: str, st: Mapping[str, Any]) -> tuple[str, str | None]:
        how = str(st.get("target"))
        if how == "again":
            last = self.model.last_target(name)
            return ("again", last[1]) if last is not None else ("again", None)
        if how == "all":
            return how, None
        if how == "own":
            rec = self.model.pick_own(name, int(st.get("pick", 0)))
            return (how, rec.request_id) if rec is not None else ("own", self.model.unknown_id(name))
        if how == "foreign":
            rid = self.model.pick_foreign(name, int(st.get("pick", 0)))
            return how, rid if rid is not None else f"s{63}-r1"
        return "unknown", self.model.unknown_id(name)

    def _interrupt(self, s: ProgramSession, st: Mapping[str, Any], trace: StepTrace) -> Awaitable[Any]:
        c = s.client
        how, target = self._interrupt_target(c.name, st)
        rec = self.model.interrupt(c.name, how, target)
        rec.sent_ns = now_ns()
        trace.notes.append(f"{c.name} INTERRUPT {target or 'all'}")

        bound = self._bound(s)

        async def go() -> None:
            res = await c.interrupt(target, reason="explore", timeout=bound)
            rec.result = res
            rec.interrupt_id = res.interrupt_id
            if res.ack is None and not c.closed:
                s.silent = True
            self._note_upstream(c, rec)

        return go()

    def _note_upstream(self, c: Client, rec: Any) -> None:
        if self.env.upstream is None or rec.result is None:
            return
        for rid in rec.result.interrupted_ids:
            model_req = next((r for r in self.model.requests if r.client == c.name and r.request_id == rid), None)
            if model_req is not None and model_req.agent == "upstream":
                self.run.upstream_claims.append((model_req.text, rec.result.sent_ns, None))

    def _bound(self, s: ProgramSession) -> float:
        """How long to wait for an answer on ``s``.

        A session that stopped reading sees it once it reads again (at the latest at the
        end of the program, where closing it ends the wait); one that already left an
        answer unanswered is not waited on again: its late answers still reach the history.
        """
        if s.paused is not None:
            return scaled(60)
        return scaled(0.05) if s.silent else self.answer

    def _heartbeat(self, s: ProgramSession) -> Awaitable[Any]:
        mark = self.model.mark(s.client.name)
        bound = self._bound(s)

        async def go() -> None:
            try:
                await s.client.heartbeat(timeout=bound)
            except ClientTimeout:
                if not s.client.closed:
                    s.silent = True
                return
            except (ClientError, Unsupported):
                return
            self.model.confirm(s.client.name, mark)
        return go()

    async def _answer(self, s: ProgramSession, pending: Awaitable[Any]) -> None:
        """Wait for an answer now, or, while the session is not reading, once it reads again."""
        if s.paused is None:
            await pending
        else:
            self.deferred.append(asyncio.ensure_future(pending))

    async def _confirm(self, s: ProgramSession) -> None:
        """A HEARTBEAT round trip: everything sent before it has been read by the target."""
        if self.env.heartbeat:
            await self._answer(s, self._heartbeat(s))

    async def _pubsub(self, s: ProgramSession, st: Mapping[str, Any], trace: StepTrace) -> None:
        c = s.client
        topic = str(st["topic"])
        do = st["do"]
        times = int(st.get("times", 1))
        if do == "subscribe":
            for _ in range(times):
                await c.subscribe(topic)
                self.model.subscribe(c.name, topic)
        elif do == "unsubscribe":
            for _ in range(times):
                await c.unsubscribe(topic)
                self.model.unsubscribe(c.name, topic)
        else:
            self.publishes += 1
            await c.publish(topic, {"n": self.publishes, "from": c.name})
            # Recorded once sent: no await came between the send and this, so the
            # subscriptions the model reads are those the frame met.
            self.model.publish(c.name, topic)
        trace.notes.append(f"{c.name} {str(do).upper()} {topic}")

    async def _bad(self, s: ProgramSession, frame: BadFrame, trace: StepTrace) -> Awaitable[Any]:
        from harness import checkers

        c = s.client
        since, index = now_ns(), len(c.frames)
        sent = await c.send_raw(frame.raw)
        trace.notes.append(f"{c.name} malformed frame ({frame.label})")
        # The target answers a session's frames in order: each malformed frame takes the
        # first ERROR left after the one its predecessor took (two in one burst included).
        before, mine = s.last_bad, asyncio.get_running_loop().create_future()
        s.last_bad = mine

        async def go() -> None:
            try:
                if before is not None:
                    await asyncio.shield(before)
                if not sent:
                    return
                await s.reading.wait()  # the bound starts once the answer can be read
                answer, short = await match_error()
            finally:
                if not mine.done():
                    mine.set_result(None)
            judge_answer(answer, short)
            if short:
                return  # no fair wait for the proof of a usable connection either
            with contextlib.suppress(ClientError, Unsupported):
                await c.heartbeat(timeout=self._bound(s))
            # An oversize frame the program sent later on this session ends it (1009): from
            # then on a close is that frame's, not the malformed one's.
            until = self.run.oversize_at.get(c.name)
            self.run.verdicts.append(checkers.connection_usable(
                self.history, c.name, since, until if until is not None and until > since else None,
            ).labelled(f"{c.name} after {frame.label}"))

        def match(f: Any) -> bool:
            return (f.kind == "error" and f.request_id == frame.echo and f.t_ns >= since
                    and id(f) not in self.bad_seen and f.code not in ("BUSY", "DUPLICATE_REQUEST"))

        async def match_error() -> tuple[Any, bool]:
            short = s.silent
            answer = await c.wait_frame(match, self._bound(s), since=index)
            if answer is not None:
                self.bad_seen.add(id(answer))
            elif not short and not c.closed:
                s.silent = True
            return answer, short

        def judge_answer(answer: Any, short: bool) -> None:
            label = f"{c.name}: {frame.label}"
            if answer is None and short:
                self.run.verdicts.append(unknown("input.error_code", f"{label}: not waited for: the session "
                                                                     "already left an answer unanswered"))
                return
            verdicts = [checkers.error_code(answer, code) for code in frame.codes]
            best = next((v for v in verdicts if v.status == "pass"), verdicts[0])
            self.run.verdicts.append(best.labelled(label))

        return go()

    async def _frame(self, s: ProgramSession, st: Mapping[str, Any], trace: StepTrace) -> Awaitable[Any] | None:
        do = st["do"]
        if do == "request":
            await self._request(s, st, trace)
            return None
        if do == "interrupt":
            return self._interrupt(s, st, trace)
        if do == "heartbeat":
            return self._heartbeat(s)
        if do in ("subscribe", "unsubscribe", "publish"):
            await self._pubsub(s, st, trace)
            return None
        if do == "bad":
            return await self._bad(s, BadFrame.from_json(st["frame"]), trace)
        raise ValueError(f"not a frame step: {do}")

    # -- steps -------------------------------------------------------------------
    async def step(self, st: dict[str, Any], trace: StepTrace) -> None:
        do = st["do"]
        self.model.refresh()
        if do == "pause":
            # A program step that lets time pass while replies stream; nothing waits on it.
            await asyncio.sleep(int(st.get("ms", 0)) / 1000)
            return
        if do == "lag":
            await self._lag(int(st.get("ms", 0)), trace)
            return
        if do == "cut":
            await self._cut(trace)
            return
        i = int(st["s"])
        if do in ("close", "abort", "vanish", "stop_reading", "resume_reading", "wait") and self._alive(i) is None:
            trace.skipped = f"s{i} is not connected"
            return
        s = await self.session(i, trace, str(st.get("via", "direct")) if do == "connect" else "direct")
        if s is None:
            trace.skipped = f"s{i} could not connect"
            return
        c = s.client
        if do == "connect":
            return
        if do == "burst":
            await self._burst(s, st["frames"], trace)
            return
        if do in ("request", "interrupt", "heartbeat", "subscribe", "unsubscribe", "publish", "bad"):
            pending = await self._frame(s, st, trace)
            if pending is not None:
                await self._answer(s, pending)
            if do in ("subscribe", "unsubscribe", "publish"):
                await self._confirm(s)
            if do == "request" and st.get("until") == "chunk" and s.paused is None and not s.silent:
                await self._first_chunk(s, trace)
            return
        if do == "wait":
            if s.paused is not None:
                trace.skipped = f"{c.name} is not reading"
                return
            rec = self.model.pick_own(c.name, int(st.get("pick", 0)), live_short=True)
            if rec is None:
                trace.skipped = f"{c.name} has no short request still running"
                return
            await c.reply(rec.request_id, timeout=scaled(self.cfg.reply_s))
            return
        if do == "oversize":
            from harness import checkers

            self.run.oversize_at.setdefault(c.name, now_ns())
            await c.send_raw("x" * (self.env.target.limits.max_size + 1024))
            if s.paused is not None:
                # Not reading, it cannot see the close yet: the session is over all the same
                # (later steps of s{i} open a new one), and its close is judged at the end.
                self.retired.append(self.sessions.pop(i))
                self.run.close_1009_later.append(c.name)
                self.model.ended(c.name)
                return
            await c.wait_closed(self.answer * 2)
            self.run.verdicts.append(checkers.closed_with(self.history, c.name, 1009).labelled(f"{c.name} oversize frame"))
            if c.closed:
                self.model.ended(c.name)
            return
        if do == "close":
            await c.close(timeout=scaled(self.cfg.close_s))
        elif do == "abort":
            await self.nemesis.rst(c)
        elif do == "vanish":
            await self.nemesis.fin(c)
        elif do == "stop_reading":
            if s.paused is None:
                stack = contextlib.ExitStack()
                stack.enter_context(self.nemesis.stop_reading(c))
                s.pause(stack)
                self.run.slowed.add(c.name)
            return
        elif do == "resume_reading":
            s.resume()
            return
        self.model.ended(c.name)

    async def _first_chunk(self, s: ProgramSession, trace: StepTrace) -> None:
        """Wait (bounded) until the request just sent streams: its first chunk, or its end."""
        rec = next((r for r in reversed(self.model.requests) if r.client == s.client.name), None)
        if rec is None or rec.expect_error is not None:
            return
        frame = await s.client.wait_frame(
            lambda f: f.request_id == rec.request_id and f.kind in ("chunk", "final", "error"), self.answer)
        trace.notes.append(f"{rec.request_id} streaming" if frame is not None and frame.kind == "chunk"
                           else f"{rec.request_id}: no first chunk within {self.answer:g} s")

    async def _burst(self, s: ProgramSession, frames: list[dict[str, Any]], trace: StepTrace) -> None:
        c = s.client
        waits: list[asyncio.Future[Any]] = []
        with cork(c) as corked:
            for member in frames:
                before = len(self.history.operations(client=c.name))
                pending = await self._frame(s, member, trace)
                if pending is None:
                    continue
                fut = asyncio.ensure_future(pending)
                waits.append(fut)
                # The member's frame is handed to the socket in its task's first step
                # (no await comes between its operation's start and the write).
                for _ in range(_TURNS):
                    if fut.done() or len(self.history.operations(client=c.name)) > before:
                        break
                    await asyncio.sleep(0)
        trace.notes.append(f"{len(frames)} frames in one write" if corked else
                           f"{len(frames)} frames back to back (coalesced: false)")
        if waits:
            if s.paused is None:
                await asyncio.gather(*waits, return_exceptions=True)
            else:
                self.deferred.extend(waits)
        if any(m["do"] in ("subscribe", "unsubscribe", "publish") for m in frames):
            await self._confirm(s)

    async def _lag(self, ms: int, trace: StepTrace) -> None:
        if self.lag is not None:
            self.lag.close()
            self.lag = None
        if ms > 0:
            proxy = await self._proxy()
            stack = contextlib.ExitStack()
            stack.enter_context(self.nemesis.delay(proxy, ms))
            self.lag = stack
            self.run.lagged = True

    async def _cut(self, trace: StepTrace) -> None:
        if self.proxy is None:
            trace.skipped = "no connection goes through the proxy"
            return
        self.nemesis.reset(self.proxy)
        for s in list(self.sessions.values()):
            if s.via == "proxy":
                await s.client.wait_closed(self.answer)
                self.model.ended(s.client.name)


async def run_program(env: RunEnv, steps: list[dict[str, Any]], *,
                      baseline: dict[str, Any] | None = None,
                      on_step: Callable[[int], None] | None = None) -> ProgramRun:
    """Run ``steps`` once against ``env.sup``; never raises for what the target does.

    ``baseline``: the target's idle figures just sampled (sampled here when not given).
    """
    r = _Runner(env, steps)
    run = r.run
    started = time.monotonic()
    run.baseline = baseline if baseline is not None else await r.probes.stats(env.sup)
    run.resources_before = r.probes.resources(env.sup)
    run.stats_source = ("stats" if env.target.stats_path and run.baseline and "connections" in run.baseline
                        else "probe" if run.baseline else "none")
    try:
        for i, st in enumerate(steps, 1):
            trace = StepTrace(i, st)
            run.traces.append(trace)
            t0 = time.monotonic()
            op = r.history.begin("program", "step", index=i, do=st.get("do"), session=st.get("s"))
            try:
                await asyncio.wait_for(r.step(st, trace), scaled(10))
                r.history.end(op, "ok", skipped=trace.skipped)
            except (ClientError, FaultError, Unsupported) as exc:
                # The session died under the step, or the target lacks the message: recorded, not judged.
                trace.error = f"{type(exc).__name__}: {exc}"
                r.history.end(op, "unknown", error=trace.error)
            except asyncio.TimeoutError:
                trace.error = "the step did not finish within its bound"
                r.history.end(op, "unknown", error=trace.error)
            trace.ms = (time.monotonic() - t0) * 1000
            run.steps_run += 1
            if on_step is not None:
                on_step(i)
            if not env.sup.is_running():
                break
        if env.sup.is_running():
            await ending.teardown(r)
    except Exception as exc:  # a bug of the harness: reported as such, never as the target's
        run.harness_error = f"{type(exc).__name__}: {exc}"
        await ending.close_all(r)
    run.target_alive = env.sup.is_running()
    if not run.target_alive:
        await ending.close_all(r)
    run.duration_s = time.monotonic() - started
    return run
