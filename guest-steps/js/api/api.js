// The pricing API client of the polyglot example, in JavaScript. The pricing
// service is down: every attempt fails, so the workflow's fallback runs.
import { log } from 'stepbox:runtime/log@0.1.0';
import { status } from 'stepbox:runtime/step-context@0.1.0';

export const api = {
  quote(order) {
    const attempt = status()?.attempt ?? 1;
    log('info', `quote (javascript): asking the pricing service about ${order}, attempt ${attempt}`);
    throw { tag: 'failed', val: `pricing service unavailable (attempt ${attempt})` };
  },
};
