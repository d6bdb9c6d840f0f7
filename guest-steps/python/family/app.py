"""The family workflow of the child-workflow tests, in Python (the same
world as guest-steps/rust/family; see guest-steps/wit/family.wit)."""

import json

from componentize_py_types import Err
from wit_world import WitWorld as World
from wit_world.imports import steps
from wit_world.imports import workflow_context as workflow


def failed(failure) -> str:
    """"STATUS: MESSAGE" of a child that did not succeed."""
    return f"{failure.status}: {failure.message}"


class WitWorld(World):
    def child(self, index: int, ms: int) -> int:
        steps.nap(ms)
        return index * 10

    def parent(self, count: int, ms: int) -> int:
        options = workflow.ChildOptions(component=None, id=None, queue=None, detached=False)
        try:
            ids = [workflow.start_child("child", json.dumps([index, ms]), options) for index in range(count)]
        except Err as error:
            raise Err(error.value)
        total = 0
        for child in ids:
            try:
                total += int(workflow.await_child(child))
            except Err as error:
                raise Err(failed(error.value))
        return total

    def try_child(self, entry: str, arguments: str, id: str, detached: bool) -> str:
        options = workflow.ChildOptions(component=None, id=id or None, queue=None, detached=detached)
        try:
            child = workflow.start_child(entry, arguments, options)
        except Err as error:
            raise Err(error.value)
        if detached:
            return child
        try:
            return workflow.await_child(child)
        except Err as error:
            raise Err(failed(error.value))

    def adopt(self, component: str, entry: str, arguments: str) -> str:
        options = workflow.ChildOptions(component=component, id=None, queue=None, detached=False)
        try:
            child = workflow.start_child(entry, arguments, options)
        except Err as error:
            raise Err(error.value)
        try:
            return workflow.await_child(child)
        except Err as error:
            raise Err(failed(error.value))
