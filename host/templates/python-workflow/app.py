"""The __NAME__ workflow in Python: publishes its stage, sleeps a second
(durably), waits up to 2 s for a greeting message, then calls the `greet`
step of __STEP__:steps and falls back when every attempt of it fails; then
greets a team with three calls at once.

A workflow re-runs from the start when it resumes and gets every journaled
result back, so it must make the same calls in the same order: no threads,
no files or network (steps do that), no iteration over sets of strings
(their order follows a hash seed), and time and randomness only through
`time` and `random` (the host makes them replay the same).
"""

import json

from componentize_py_types import Err
from wit_world import WitWorld as World
from wit_world.imports import log, steps, workflow_context
from wit_world.imports.steps import StepError_RetriesExhausted


class WitWorld(World):
    def run(self, name: str) -> str:
        workflow_context.set_event("stage", json.dumps("sleeping"))
        workflow_context.sleep(1000)
        workflow_context.set_event("stage", json.dumps("waiting for a greeting"))
        message = workflow_context.recv("greeting", 2000)
        salutation = json.loads(message.value) if message is not None else "Hello"
        workflow_context.set_event("stage", json.dumps("greeting"))
        log.log(log.Level.INFO, f"greeting {name} with {salutation!r}")
        try:
            answer = steps.greet(name)
        except Err as error:
            if not isinstance(error.value, StepError_RetriesExhausted):
                raise
            # Every attempt failed: the host hands over each attempt's failure instead of failing the workflow.
            log.log(log.Level.WARN, f"greet failed all {error.value.value.attempts} attempts; falling back")
            answer = f"Hello, {name}"
        greet_the_team()
        return answer.replace("Hello", str(salutation), 1)


def greet_the_team() -> None:
    """A fan-out: greets three people at once (`start_call` starts a call and
    returns; `await_all` waits for them all). Arguments and results are JSON; a
    resume replays the calls that ended."""
    calls = [workflow_context.start_call("greet", json.dumps([friend])) for friend in ["Ada", "Grace", "Linus"]]
    results = [json.loads(result) for result in workflow_context.await_all(calls)]
    answered = sum(1 for result in results if "ok" in result)
    log.log(log.Level.INFO, f"greeted the team at once: {answered} of {len(calls)} answered")
