"""The fan-out workflow of the concurrent-call tests, in Python (the same
world as guest-steps/rust/fan-out; see guest-steps/wit/fan-out.wit)."""

import json

from componentize_py_types import Err
from wit_world import WitWorld as World
from wit_world.imports import workflow_context as workflow


def start(step: str, arguments: list) -> int:
    """Starts one call; a refusal here is a bug of this guest."""
    return workflow.start_call(step, json.dumps(arguments))


def oks(results: list) -> int:
    """How many results are `ok`."""
    return sum(1 for result in results if "ok" in json.loads(result))


def failures(seed: int, index: int) -> int:
    """How often call `index` fails before it succeeds: 0, 1 or 2, from `seed`."""
    mask = (1 << 64) - 1
    x = seed ^ (((index + 1) * 0x9E3779B97F4A7C15) & mask)
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & mask
    x ^= x >> 33
    return x % 3


class WitWorld(World):
    def spread(self, count: int, ms: int) -> int:
        calls = [start("nap", [ms]) for _ in range(count)]
        return oks(workflow.await_all(calls))

    def race(self, naps: list, then_ms: int) -> str:
        calls = [start("nap", [ms]) for ms in naps]
        index, result = workflow.await_first(calls)
        workflow.sleep(then_ms)
        return f"{index} {result}"

    def fan(self, dir: str, count: int, seed: int, ms: int) -> int:
        calls = [start("logged-flaky", [dir, f"call-{index}", failures(seed, index), ms]) for index in range(count)]
        return oks(workflow.await_all(calls))

    def try_start(self, step: str, arguments: str) -> str:
        try:
            call = workflow.start_call(step, arguments)
        except Err as error:
            raise Err(error.value)
        return workflow.await_all([call])[0]
