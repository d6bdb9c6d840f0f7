// The __NAME__ step in C: `greet` fails its first attempt, then answers.
//
// Returning true with *ret set is `ok`; returning false with *err set is `err`
// (the `permanent` case is not retried); abort() traps and is retried. Strings
// handed back are malloc'ed: the canonical ABI frees them after the call.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "step.h"

bool exports___SNAKE___steps_steps_greet(step_string_t *name, step_string_t *ret,
                                         exports___SNAKE___steps_steps_step_error_t *err) {
    stepbox_runtime_step_context_step_status_t status;
    uint32_t attempt = 1;
    if (stepbox_runtime_step_context_status(&status)) {
        attempt = status.attempt;
        stepbox_runtime_step_context_step_status_free(&status);
    }
    char line[64];
    snprintf(line, sizeof line, "greet (c): attempt %u", (unsigned) attempt);
    step_string_t message;
    step_string_set(&message, line);
    stepbox_runtime_log_log(STEPBOX_RUNTIME_LOG_LEVEL_INFO, &message);

    if (attempt == 1) {
        err->tag = EXPORTS___UPPER___STEPS_STEPS_STEP_ERROR_FAILED;
        step_string_dup(&err->val.failed, "the greeting service is warming up");
        step_string_free(name);
        return false;
    }
    char *text = malloc(name->len + 32);
    int length = sprintf(text, "Hello, %.*s (from C)", (int) name->len, (const char *) name->ptr);
    ret->ptr = (uint8_t *) text;
    ret->len = (size_t) length;
    step_string_free(name);
    return true;
}
