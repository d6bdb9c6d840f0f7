"""The order check of the polyglot example, in Python."""

from wit_world import exports
from wit_world.imports import log


class Check(exports.Check):
    def check(self, order: str) -> bool:
        valid = order.startswith("order-") and order[len("order-"):].isdigit()
        log.log(log.Level.INFO, f"check (python): {order} is {'valid' if valid else 'invalid'}")
        return valid
