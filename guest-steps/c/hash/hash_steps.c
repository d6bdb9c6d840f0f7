// The digest step of the polyglot example, in C: 64-bit FNV-1a.

#include "hash_step.h"

bool exports_guests_polyglot_hash_digest(hash_step_string_t *data, uint64_t *ret,
                                         exports_guests_polyglot_hash_hash_error_t *err) {
    (void) err;
    uint64_t digest = 14695981039346656037ULL;
    for (size_t i = 0; i < data->len; i++) {
        digest ^= data->ptr[i];
        digest *= 1099511628211ULL;
    }
    hash_step_string_free(data);
    *ret = digest;
    return true;
}
