// The __NAME__ workflow in JavaScript: publishes its stage, sleeps a second
// (durably), waits up to 2 s for a greeting message, then calls the `greet`
// step of __STEP__:steps and falls back when every attempt of it fails; then
// greets a team with three calls at once.
//
// A workflow re-runs from the start when it resumes and gets every journaled
// result back, so it must make the same calls in the same order: no timers
// (setTimeout) or promises racing each other, no network or files (steps do
// that), and time and randomness only through Date and Math.random (the host
// makes them replay the same).
import { log } from 'stepbox:runtime/log@0.1.0';
import { sleep, recv, setEvent, startCall, awaitAll } from 'stepbox:runtime/workflow-context@0.1.0';
import { greet } from '__STEP__:steps/steps';

export function run(name) {
  setEvent('stage', JSON.stringify('sleeping'));
  sleep(1000n);
  setEvent('stage', JSON.stringify('waiting for a greeting'));
  const message = recv('greeting', 2000n);
  const salutation = message !== undefined ? JSON.parse(message.value) : 'Hello';
  setEvent('stage', JSON.stringify('greeting'));
  log('info', `greeting ${name} with ${JSON.stringify(salutation)}`);
  let answer;
  try {
    answer = greet(name);
  } catch (error) {
    // A step's `err` is thrown as { payload: { tag, val } }.
    const failure = error.payload ?? error;
    if (failure.tag !== 'retries-exhausted') {
      throw error;
    }
    // Every attempt failed: the host hands over each attempt's failure instead of failing the workflow.
    log('warn', `greet failed all ${failure.val.attempts} attempts; falling back`);
    answer = `Hello, ${name}`;
  }
  greetTheTeam();
  return answer.replace('Hello', String(salutation));
}

// A fan-out: greets three people at once (startCall starts a call and
// returns; awaitAll waits for them all). Arguments and results are JSON; a
// resume replays the calls that ended.
function greetTheTeam() {
  const calls = ['Ada', 'Grace', 'Linus'].map((friend) => startCall('greet', JSON.stringify([friend])));
  const results = awaitAll(calls).map((result) => JSON.parse(result));
  const answered = results.filter((result) => 'ok' in result).length;
  log('info', `greeted the team at once: ${answered} of ${calls.length} answered`);
}
