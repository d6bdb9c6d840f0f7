"""The __NAME__ step in Python: `greet` fails its first attempt, then answers.

Returning a value is `ok`; raising `Err(...)` with a case of the error variant
is `err` (`StepError_Permanent` is not retried); any other exception traps and
is retried.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.steps import StepError_Failed
from wit_world.imports import log, step_context


class Steps(exports.Steps):
    def greet(self, name: str) -> str:
        status = step_context.status()
        attempt = status.attempt if status is not None else 1
        log.log(log.Level.INFO, f"greet (python): attempt {attempt}")
        if attempt == 1:
            raise Err(StepError_Failed("the greeting service is warming up"))
        return f"Hello, {name} (from Python)"
