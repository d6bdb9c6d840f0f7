"""The guests:flaky steps in Python (componentize-py).

Returning a value is `ok`; raising `componentize_py_types.Err(...)` is `err`
(so `StepError_Permanent` is not retried); any other exception traps, and the
host retries it like a Rust panic.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.steps import StepError_Failed, StepError_Permanent
from wit_world.imports import log, step_context


def attempt() -> int:
    status = step_context.status()
    return status.attempt if status is not None else 1


class Steps(exports.Steps):
    def flaky(self, fail_times: int) -> int:
        current = attempt()
        log.log(log.Level.INFO, f"flaky (python): attempt {current}")
        if current <= fail_times:
            raise Err(StepError_Failed(f"transient failure on attempt {current}"))
        return current

    def reject(self, reason: str) -> int:
        log.log(log.Level.INFO, f"reject (python): attempt {attempt()}")
        raise Err(StepError_Permanent(reason))

    def crash(self, message: str) -> int:
        log.log(log.Level.INFO, f"crash (python): attempt {attempt()}")
        raise RuntimeError(message)
