// The guests:flaky steps in C (bindings from wit-bindgen's C generator).
//
// Returning true with *ret set is `ok`; returning false with *err set is
// `err` (so the `permanent` case is not retried); abort() traps, and the host
// retries it like a Rust panic. Strings handed back are malloc'ed: the
// canonical ABI frees them after the call.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flaky.h"

static uint32_t current_attempt(void) {
    stepbox_runtime_step_context_step_status_t status;
    if (!stepbox_runtime_step_context_status(&status)) {
        return 1;
    }
    uint32_t attempt = status.attempt;
    stepbox_runtime_step_context_step_status_free(&status);
    return attempt;
}

static void log_info(const char *text) {
    flaky_string_t message;
    flaky_string_set(&message, text);
    stepbox_runtime_log_log(STEPBOX_RUNTIME_LOG_LEVEL_INFO, &message);
}

static void set_error(exports_guests_flaky_steps_step_error_t *err, uint8_t tag, const char *text, size_t len) {
    err->tag = tag;
    flaky_string_dup_n(tag == EXPORTS_GUESTS_FLAKY_STEPS_STEP_ERROR_PERMANENT ? &err->val.permanent : &err->val.failed,
                       text, len);
}

bool exports_guests_flaky_steps_flaky(uint32_t fail_times, uint32_t *ret, exports_guests_flaky_steps_step_error_t *err) {
    uint32_t attempt = current_attempt();
    char line[96];
    snprintf(line, sizeof line, "flaky (c): attempt %u", (unsigned) attempt);
    log_info(line);
    if (attempt <= fail_times) {
        int len = snprintf(line, sizeof line, "transient failure on attempt %u", (unsigned) attempt);
        set_error(err, EXPORTS_GUESTS_FLAKY_STEPS_STEP_ERROR_FAILED, line, (size_t) len);
        return false;
    }
    *ret = attempt;
    return true;
}

bool exports_guests_flaky_steps_reject(flaky_string_t *reason, uint32_t *ret, exports_guests_flaky_steps_step_error_t *err) {
    (void) ret;
    char line[96];
    snprintf(line, sizeof line, "reject (c): attempt %u", (unsigned) current_attempt());
    log_info(line);
    set_error(err, EXPORTS_GUESTS_FLAKY_STEPS_STEP_ERROR_PERMANENT, (const char *) reason->ptr, reason->len);
    flaky_string_free(reason);
    return false;
}

bool exports_guests_flaky_steps_crash(flaky_string_t *message, uint32_t *ret, exports_guests_flaky_steps_step_error_t *err) {
    (void) ret;
    (void) err;
    char line[96];
    snprintf(line, sizeof line, "crash (c): attempt %u", (unsigned) current_attempt());
    log_info(line);
    fprintf(stderr, "crash: %.*s\n", (int) message->len, (const char *) message->ptr);
    fflush(stderr);
    abort();
}
