// Figure 2's interrupt storm for k6 (k6/ws): SESSIONS sessions each stream
// three replies at full speed (5 ms chunks, far more chunks than the storm
// lasts); then every session fires PER_SESSION INTERRUPTs at once, at a
// seeded mix of its own streams, null (everything) and unknown ids, as
// bench/storm.py does. The latency of one INTERRUPT is from just before its
// send to its INTERRUPT_ACK's message callback, on k6's sub-millisecond
// instance clock.
//
// Run by bench/k6.py:
//   k6 run --quiet --linger --no-usage-report --log-output stdout --log-format raw bench/k6/storm.js
// (--linger: once over, k6 waits for a SIGINT, then writes its summary and exits 0)
// with WSCHAOS_URL, WSCHAOS_SESSIONS (10), WSCHAOS_PER_SESSION (10),
// WSCHAOS_SEED, WSCHAOS_STORM_AT_MS (when the storm starts, after setup: k6's
// VUs cannot wait on each other, so every session fires at one shared instant,
// by which all of them are streaming; a session that is not yet streaming
// fires once it is and is counted late) and WSCHAOS_SUMMARY. Each session
// prints one line `WSCHAOS_ACKS {json}` with its latencies, so the caller
// pools the raw values of several rounds; the load phase is framed by
// WSCHAOS_LOAD_START / WSCHAOS_LOAD_END lines.

import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';
import ws from 'k6/ws';

const URL = __ENV.WSCHAOS_URL;
const SESSIONS = parseInt(__ENV.WSCHAOS_SESSIONS || '10', 10);
const PER_SESSION = parseInt(__ENV.WSCHAOS_PER_SESSION || '10', 10);
const SEED = parseInt(__ENV.WSCHAOS_SEED || '1', 10);
const STORM_AT_MS = parseInt(__ENV.WSCHAOS_STORM_AT_MS || '1000', 10);
const ACK_TIMEOUT_MS = parseInt(__ENV.WSCHAOS_ACK_TIMEOUT_MS || '5000', 10);
const STREAMING_TIMEOUT_MS = parseInt(__ENV.WSCHAOS_STREAMING_TIMEOUT_MS || '10000', 10);
const STREAM = { chunks: 100000, chunk_delay_ms: 5 };

if (!URL) {
  throw new Error('WSCHAOS_URL is not set');
}

const ackMs = new Trend('wschaos_ack_ms', true);
const acked = new Counter('wschaos_acked');
const unanswered = new Counter('wschaos_unanswered');

export const options = {
  scenarios: {
    storm: { executor: 'per-vu-iterations', vus: SESSIONS, iterations: 1, maxDuration: '60s' },
  },
  summaryTrendStats: ['med', 'p(99)', 'max', 'count'],
};

// mulberry32: a small seeded generator, so each session's mix of targets repeats run to run.
function rng(seed) {
  let a = seed >>> 0;
  return function () {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function now() {
  return exec.instance.currentTestRunDuration;  // milliseconds, sub-millisecond resolution
}

export function setup() {
  const t0 = Date.now();
  console.log('WSCHAOS_LOAD_START');
  return { t0, fireAt: t0 + STORM_AT_MS };
}

export default function (data) {
  const vu = exec.vu.idInTest;
  const random = rng(SEED * 1000 + vu);
  const streams = [0, 1, 2].map((i) => `st${vu}-${i}`);
  const stopId = `stop${vu}`;
  const sentAt = {};
  const latencies = [];
  let sent = 0;
  let errors = 0;
  let late = false;
  let problem = '';
  ws.connect(URL, null, (socket) => {
    let ready = false;
    let armed = false;
    let fired = false;
    let finished = false;

    function finish() {
      if (finished) {
        return;
      }
      finished = true;
      // Leave nothing streaming, then close once that is acknowledged (or soon after).
      socket.send(JSON.stringify({
        msg_type: 'INTERRUPT', request_id: stopId, payload: { target_request_id: null, reason: 'done' },
      }));
      socket.setTimeout(() => socket.close(), 2000);
    }

    function fire() {
      if (fired) {
        return;
      }
      fired = true;
      const targets = [];
      for (let j = 0; j < PER_SESSION; j++) {
        const roll = random();
        targets.push(roll < 0.1 ? null
          : roll < 0.2 ? `unknown-${Math.floor(random() * 1000)}`
            : streams[Math.floor(random() * streams.length)]);
      }
      targets.forEach((target, j) => {
        const iid = `i${vu}-${j}`;
        sentAt[iid] = now();
        socket.send(JSON.stringify({
          msg_type: 'INTERRUPT', request_id: iid, payload: { target_request_id: target, reason: 'user' },
        }));
        sent++;
      });
      socket.setTimeout(finish, ACK_TIMEOUT_MS);
    }

    socket.on('message', (raw) => {
      const t = now();
      let msg;
      try {
        msg = JSON.parse(raw);
      } catch (err) {
        return;
      }
      if (!ready) {
        if (msg.msg_type !== 'SESSION_READY') {
          problem = `first frame ${msg.msg_type}, not SESSION_READY`;
          socket.close();
          return;
        }
        ready = true;
        streams.forEach((rid) => socket.send(JSON.stringify({
          msg_type: 'REQUEST', request_id: rid, payload: { text: 'stream', options: STREAM },
        })));
        return;
      }
      if (!armed && msg.msg_type === 'RESPONSE' && msg.request_id === streams[0]) {
        armed = true;  // the first chunk: this session streams; the storm starts at the shared instant
        const wait = data.fireAt - Date.now();
        if (wait > 0) {
          socket.setTimeout(fire, wait);
        } else {
          late = true;
          fire();
        }
        return;
      }
      if (msg.msg_type === 'INTERRUPT_ACK' || msg.msg_type === 'ERROR') {
        const t0 = sentAt[msg.request_id];
        if (t0 !== undefined) {
          delete sentAt[msg.request_id];
          if (msg.msg_type === 'ERROR') {
            errors++;
          } else {
            latencies.push(t - t0);
            ackMs.add(t - t0);
            acked.add(1);
          }
          if (Object.keys(sentAt).length === 0) {
            finish();
          }
        } else if (msg.request_id === stopId) {
          socket.close();
        }
      }
    });
    socket.on('error', (err) => {
      problem = `socket error: ${err.error ? err.error() : err}`;
    });
    socket.setTimeout(() => {
      if (!fired) {
        problem = `not streaming within ${STREAMING_TIMEOUT_MS} ms`;
        socket.close();
      }
    }, STREAMING_TIMEOUT_MS);
  });
  const missing = sent - latencies.length - errors;
  unanswered.add(missing);
  console.log(`WSCHAOS_ACKS ${JSON.stringify({
    vu, sent, not_sent: PER_SESSION - sent, acked: latencies.length, errors, unanswered: missing, late, problem, ms: latencies,
  })}`);
}

export function teardown(data) {
  console.log(`WSCHAOS_LOAD_END ms=${Date.now() - data.t0}`);
}

export function handleSummary(data) {
  const out = {};
  out[__ENV.WSCHAOS_SUMMARY || 'summary.json'] = JSON.stringify(data);
  return out;
}
