// Figure 1's churn cycle for k6 (k6/ws): connect, wait for SESSION_READY, one
// REQUEST of one chunk with no delay, read to its final RESPONSE, close.
//
// Run by bench/k6.py:
//   k6 run --quiet --linger --no-usage-report --log-output stdout --log-format raw bench/k6/churn.js
// (--linger: once over, k6 waits for a SIGINT, then writes its summary and exits 0)
// with WSCHAOS_URL (the server's ws:// URL), WSCHAOS_DURATION (a k6 duration,
// "2s"), WSCHAOS_VUS (default 10) and WSCHAOS_SUMMARY (where the summary JSON
// goes). The load phase is framed by two stdout lines, WSCHAOS_LOAD_START
// and WSCHAOS_LOAD_END ms=<k6's own span of it>, so the caller can charge
// k6's CPU to that phase alone and leave its start-up out.

import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import ws from 'k6/ws';

const URL = __ENV.WSCHAOS_URL;
const VUS = parseInt(__ENV.WSCHAOS_VUS || '10', 10);
const DURATION = __ENV.WSCHAOS_DURATION || '2s';
const CYCLE_TIMEOUT_MS = parseInt(__ENV.WSCHAOS_CYCLE_TIMEOUT_MS || '10000', 10);

if (!URL) {
  throw new Error('WSCHAOS_URL is not set');
}

// Completed cycles (a complete, uninterrupted final RESPONSE, then a close) and the rest.
const cycles = new Counter('wschaos_cycles');
const failed = new Counter('wschaos_failed');

export const options = {
  scenarios: {
    churn: {
      // A closed loop of VUS concurrent cycles, like the Python loops.
      executor: 'constant-vus',
      vus: VUS,
      duration: DURATION,
      gracefulStop: '10s',
    },
  },
  summaryTrendStats: ['med', 'p(99)', 'max', 'count'],
};

export function setup() {
  const t0 = Date.now();
  console.log('WSCHAOS_LOAD_START');
  return { t0 };
}

let n = 0;
let reported = 0;

export default function () {
  const rid = `k${exec.vu.idInTest}-${n++}`;
  let complete = false;
  let problem = '';
  const res = ws.connect(URL, null, (socket) => {
    let ready = false;
    socket.on('message', (data) => {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch (err) {
        problem = 'a frame that is not JSON';
        socket.close();
        return;
      }
      if (!ready) {
        if (msg.msg_type !== 'SESSION_READY') {
          problem = `first frame ${msg.msg_type}, not SESSION_READY`;
          socket.close();
          return;
        }
        ready = true;
        socket.send(JSON.stringify({
          msg_type: 'REQUEST',
          request_id: rid,
          payload: { text: 'bench', options: { chunks: 1, chunk_delay_ms: 0 } },
        }));
        return;
      }
      if (msg.msg_type === 'RESPONSE' && msg.request_id === rid && msg.payload && msg.payload.final === true) {
        complete = msg.payload.interrupted !== true;
        socket.close();
      }
    });
    socket.on('error', (err) => {
      problem = `socket error: ${err.error ? err.error() : err}`;
    });
    socket.setTimeout(() => {
      problem = `no final RESPONSE within ${CYCLE_TIMEOUT_MS} ms`;
      socket.close();
    }, CYCLE_TIMEOUT_MS);
  });
  if (complete && res && res.status === 101) {
    cycles.add(1);
  } else {
    failed.add(1);
    if (reported < 3) {  // the first few reasons, per VU, for the caller's notes
      reported++;
      console.log(`WSCHAOS_FAILED ${problem || `connect failed (status ${res ? res.status : 'none'})`}`);
    }
  }
}

export function teardown(data) {
  // The instance clock is not available here; the wall clock's milliseconds suffice for seconds.
  console.log(`WSCHAOS_LOAD_END ms=${Date.now() - data.t0}`);
}

export function handleSummary(data) {
  const out = {};
  out[__ENV.WSCHAOS_SUMMARY || 'summary.json'] = JSON.stringify(data);
  return out;
}
