// The guests:flaky steps in JavaScript (componentize-js).
//
// Returning a value is `ok`; throwing a plain object `{ tag, val }` of the
// error variant is `err` (so `{ tag: 'permanent' }` is not retried); throwing
// an `Error` traps, and the host retries it like a Rust panic.
import { log } from 'stepbox:runtime/log@0.1.0';
import { status } from 'stepbox:runtime/step-context@0.1.0';

function attempt() {
  const current = status();
  return current === undefined ? 1 : current.attempt;
}

export const steps = {
  flaky(failTimes) {
    const current = attempt();
    log('info', `flaky (javascript): attempt ${current}`);
    if (current <= failTimes) {
      throw { tag: 'failed', val: `transient failure on attempt ${current}` };
    }
    return current;
  },
  reject(reason) {
    log('info', `reject (javascript): attempt ${attempt()}`);
    throw { tag: 'permanent', val: reason };
  },
  crash(message) {
    log('info', `crash (javascript): attempt ${attempt()}`);
    throw new Error(message);
  },
};
