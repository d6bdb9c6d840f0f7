// The __NAME__ step in JavaScript: `greet` fails its first attempt, then answers.
//
// Returning a value is `ok`; throwing `{ tag, val }` with a case of the error
// variant is `err` (`{ tag: 'permanent' }` is not retried); throwing an Error
// traps and is retried.
import { log } from 'stepbox:runtime/log@0.1.0';
import { status } from 'stepbox:runtime/step-context@0.1.0';

export const steps = {
  greet(name) {
    const attempt = status()?.attempt ?? 1;
    log('info', `greet (javascript): attempt ${attempt}`);
    if (attempt === 1) {
      throw { tag: 'failed', val: 'the greeting service is warming up' };
    }
    return `Hello, ${name} (from JavaScript)`;
  },
};
