#!/usr/bin/env python3
"""DBOS Transact peer for stepbox's benchmark. It runs stepbox's workloads on DBOS Transact
(Python) against PostgreSQL and prints one JSON object on stdout; all progress goes to stderr.
Each run drops and recreates its own system database (`stepbox_dbos_peer`), launches DBOS,
warms up with a few small workflows, then measures: "sequential", one workflow calling a no-op
step in a loop, each call timed inside the workflow; "concurrent", N workflows of 100 no-op
steps each, all started at once and awaited (by default from a pool of starter threads, as
thread-based workflows; `--concurrency async` uses async workflows instead); "exhaustion", a
workflow whose step always raises, has three attempts and no retry interval, and whose
`DBOSMaxStepRetriesExceeded` the workflow catches to return a fallback. Around each workload it
reads PostgreSQL's counts of the transactions committed and the rows written in the peer
database (`pg_stat_database`). Usage:
`python peer.py --postgres postgresql://postgres@127.0.0.1:5432 [--quick] [--workflows 1,10,100,1000]
[--concurrency async] [--only WORKLOAD,...]`.

It also runs the workloads shared with the Restate and Temporal peers (bench/PEERS.md) and puts
them under the top-level key "workloads", with "engine", "version", "store" and
"workloads_notes" beside it (the keys above stay as they are: the Rust bench reads them). Each is
driven as a client would, DBOS.start_workflow then get_result(), and timed from before the start:
"seed", a step that always fails, 3 attempts, interval_seconds=1.0 and backoff_rate=2.0 (1 s then
2 s), whose DBOSMaxStepRetriesExceeded the workflow catches to return a fallback (wall seconds);
"sequential", one workflow of 1,000 no-op steps (median step inside the workflow, and total over
steps); "concurrent", 100 workflows of 100 steps at once (steps/s); "submit_to_start", one
workflow at a time, start to its step's first line (p50/p90 ms over 200); "submit_to_result", a
3-step workflow one at a time, start to result (p50/p99 ms over 200); "burst", 1,000 such
workflows started at once (workflows/s, first start to last result); "fanout", an async workflow
running 100 async no-op steps at once with asyncio.gather (ms and steps/s); "fanout_wide", the same
with 1,000 steps (DBOS only: beside stepbox's 1,000-call fan-out). `--only` runs only
the named shared workloads and skips the others, the keys the Rust bench reads included.
"""

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from typing import Any, Callable

import psycopg
import sqlalchemy as sa
from dbos import DBOS, Queue, error

DB_NAME = "stepbox_dbos_peer"
# DBOS's default system-database pool is 20 connections with no overflow.
POOL_SIZE = 20
# Threads that call DBOS.start_workflow concurrently in the thread-based concurrent run.
STARTER_THREADS = 32
STEPS_PER_WORKFLOW = 100

# Latencies recorded inside workflows (they run in this process, once each).
step_latencies_ns: list[int] = []

# The queue of the "queue" workloads, with DBOS's defaults (polled every second, no limits);
# registered once DBOS is launched (DBOS 3.4 persists queues in its system database).
bench_queue: Queue
# When each queued workflow's first step started (wall clock, ns), by key.
first_step_ns: dict[str, int] = {}
# (start, end) of each queued steps workflow, wall clock in ns.
queued_spans: list[tuple[int, int]] = []


@DBOS.step()
def noop_step(i: int) -> int:
    return i


@DBOS.workflow()
def steps_workflow(steps: int) -> int:
    total = 0
    for i in range(steps):
        start = time.perf_counter_ns()
        total += noop_step(i)
        step_latencies_ns.append(time.perf_counter_ns() - start)
    return total


@DBOS.step()
def marked_step(key: str) -> int:
    first_step_ns.setdefault(key, time.time_ns())
    return 1


@DBOS.workflow()
def marked_workflow(key: str) -> int:
    return marked_step(key)


@DBOS.workflow()
def queued_steps_workflow(steps: int) -> int:
    start = time.time_ns()
    total = 0
    for i in range(steps):
        total += noop_step(i)
    queued_spans.append((start, time.time_ns()))
    return total


@DBOS.step()
async def async_noop_step(i: int) -> int:
    return i


@DBOS.workflow()
async def async_steps_workflow(steps: int) -> int:
    total = 0
    for i in range(steps):
        total += await async_noop_step(i)
    return total


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0)
def failing_step() -> int:
    raise RuntimeError("always fails")


@DBOS.workflow()
def exhaustion_workflow() -> int:
    start = time.perf_counter_ns()
    try:
        result = failing_step()
    except error.DBOSMaxStepRetriesExceeded:
        result = -1
    step_latencies_ns.append(time.perf_counter_ns() - start)
    return result


# The shared workloads' steps and workflows (see bench/PEERS.md).
# Wall times (ns) of the seed step's attempts, by key.
seed_attempts_ns: dict[str, list[int]] = {}


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=1.0, backoff_rate=2.0)
def seed_step(key: str) -> int:
    seed_attempts_ns.setdefault(key, []).append(time.time_ns())
    raise RuntimeError("simulated failure")


@DBOS.workflow()
def seed_workflow(key: str) -> str:
    try:
        seed_step(key)
        return "provisioned"
    except error.DBOSMaxStepRetriesExceeded:
        return "fallback"


@DBOS.workflow()
def plain_steps_workflow(steps: int) -> int:
    total = 0
    for i in range(steps):
        total += noop_step(i)
    return total


@DBOS.workflow()
async def fanout_workflow(steps: int) -> int:
    return sum(await asyncio.gather(*(async_noop_step(i) for i in range(steps))))


def log(message: str) -> None:
    print(f"dbos-peer: {message}", file=sys.stderr, flush=True)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


def run_concurrent_threads(
    workflows: int, steps: int = STEPS_PER_WORKFLOW, workflow: Callable[[int], int] = steps_workflow
) -> int:
    """Start `workflows` workflows of `steps` steps from the starter threads; sum the results.
    The shared workloads pass plain_steps_workflow (no per-step timing)."""
    with ThreadPoolExecutor(max_workers=min(workflows, STARTER_THREADS)) as starters:
        handles = list(
            starters.map(
                lambda _: DBOS.start_workflow(workflow, steps),
                range(workflows),
            )
        )
    return sum(handle.get_result() for handle in handles)


def run_concurrent_async(
    workflows: int, steps: int = STEPS_PER_WORKFLOW, workflow: Callable[[int], Any] | None = None
) -> int:
    """The async variant; there is one async steps workflow, so `workflow` is ignored."""
    async def run() -> int:
        handles = await asyncio.gather(
            *(DBOS.start_workflow_async(async_steps_workflow, steps) for _ in range(workflows))
        )
        return sum(await asyncio.gather(*(handle.get_result() for handle in handles)))

    return asyncio.run(run())


# "threads" is the default: on the 2-CPU machine this was written on, async workflows ran
# 5-20% fewer steps a second at N=100, and neither the pool size (10, 20, 40), the executor's
# thread limit (4, 16, none) nor turning pool_pre_ping off changed throughput beyond noise: DBOS
# spends a few milliseconds of Python CPU time per step (SQLAlchemy, psycopg), and that bounds it.
CONCURRENCY = {
    "threads": (
        run_concurrent_threads,
        f"thread-based workflows and steps; the N DBOS.start_workflow calls are made from "
        f"{STARTER_THREADS} starter threads at once (DBOS runs each workflow on its own "
        f"executor thread), then every handle's get_result() is awaited",
    ),
    "async": (
        run_concurrent_async,
        "async workflows and steps; asyncio.gather over N DBOS.start_workflow_async calls, "
        "then over every handle's get_result()",
    ),
}


class CommitMeter:
    """Counts the transactions a workload commits, and the rows it writes, in the peer database.

    A backend publishes its `pg_stat_database` counts at most once a second while busy and
    within ten seconds once idle, but always as it exits. So before each reading the meter
    closes DBOS's pooled connections (`engine.dispose()`) and waits until their backends have
    exited; before the workload it opens the pool again, so that the workload runs on open
    connections. Pool events tell it which backends the pool holds. A new connection commits
    twice (as its backend starts, and DBOS's `SET idle_in_transaction_session_timeout`), which
    the meter subtracts.
    DBOS's background threads commit about ten transactions a second even when idle, and a
    connection they hold during dispose() reports later; that noise (a few percent) stays in.
    """

    def __init__(self, admin: psycopg.Connection, engine: sa.Engine) -> None:
        self.admin = admin
        self.engine = engine
        self.connections_opened = 0
        self.pool_generation = 0
        # Backend process IDs by connection record: in the pool, and being closed.
        self.pooled_pids: dict[int, int] = {}
        self.closing_pids: dict[int, int] = {}
        sa.event.listen(engine, "connect", self._on_connect)
        sa.event.listen(engine, "checkin", self._on_checkin)
        sa.event.listen(engine, "checkout", self._on_checkout)
        # Start from a pool whose every connection the meter has seen opened. One that a
        # background thread holds meanwhile stays open in the old pool with what it did at launch
        # (DBOS's migrations write thousands of catalog rows): an idle backend reports within
        # ten seconds, so measurements start later than that.
        self._close_pool()
        self.first_reading_at = time.monotonic() + 11

    def _on_connect(self, connection: Any, record: Any) -> None:
        self.connections_opened += 1
        record.info["generation"] = self.pool_generation

    def _on_checkin(self, connection: Any, record: Any) -> None:
        if connection is not None and record.info.get("generation") == self.pool_generation:
            self.pooled_pids[id(record)] = connection.info.backend_pid

    def _on_checkout(self, connection: Any, record: Any, proxy: Any) -> None:
        self.pooled_pids.pop(id(record), None)
        self.closing_pids.pop(id(record), None)

    def _counters(self) -> tuple[int, int]:
        self.admin.execute("SELECT pg_stat_clear_snapshot()")
        row = self.admin.execute(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted"
            " FROM pg_stat_database WHERE datname = %s",
            (DB_NAME,),
        ).fetchone()
        assert row is not None
        return row[0], row[1]

    def _close_pool(self) -> None:
        """Close the pooled connections and wait until their backends have exited."""
        self.closing_pids, self.pooled_pids = self.pooled_pids, {}
        self.pool_generation += 1
        self.engine.dispose()
        # A connection checked in while dispose() runs lands in the old pool, where nothing
        # will use it again: after a grace period its backend is ended, which flushes its counts.
        terminate_at = time.monotonic() + 1
        while True:
            pids = list(self.closing_pids.values())
            row = self.admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
            ).fetchone()
            if row is None or row[0] == 0:
                return
            if time.monotonic() > terminate_at + 10:
                raise RuntimeError(f"backends {pids} did not exit")
            if time.monotonic() > terminate_at:
                self.admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)",
                    (pids,),
                )
            time.sleep(0.01)

    def _open_pool(self) -> None:
        # One fewer than the pool holds: DBOS's background-jobs thread keeps one checked out.
        connections = [self.engine.connect() for _ in range(self.engine.pool.size() - 1)]
        for connection in connections:
            connection.close()

    def measure(self, workload: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
        """Run `workload()`; return its result and what it did in the database."""
        time.sleep(max(0.0, self.first_reading_at - time.monotonic()))
        self._close_pool()
        commits_before, rows_before = self._counters()
        opened_before = self.connections_opened
        self._open_pool()
        result = workload()
        self._close_pool()
        commits_after, rows_after = self._counters()
        connection_commits = 2 * (self.connections_opened - opened_before)
        return result, {
            "commits": commits_after - commits_before - connection_commits,
            "rows_written": rows_after - rows_before,
        }


def per(counts: dict[str, int], total: int, unit: str) -> dict[str, float]:
    return {f"{name}_per_{unit}": count / total for name, count in counts.items()}


def recreate_database(postgres_url: str) -> psycopg.Connection:
    """Connect to the `postgres` database and recreate the peer's system database."""
    admin_url = sa.make_url(postgres_url).set(database="postgres")
    try:
        admin = psycopg.connect(
            admin_url.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
        )
    except psycopg.OperationalError as e:
        log(f"cannot reach PostgreSQL at {admin_url.render_as_string()}: {e}")
        sys.exit(2)
    admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {DB_NAME}")
    return admin


def timed(call: Callable[[], None]) -> tuple[float, float]:
    """Wall seconds of `call()`, and this process's CPU seconds meanwhile (all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def expect(actual: Any, expected: Any) -> None:
    if actual != expected:
        raise RuntimeError(f"workload returned {actual}, expected {expected}")


def sequential(meter: CommitMeter, steps: int) -> dict[str, Any]:
    step_latencies_ns.clear()
    (seconds, cpu), counts = meter.measure(
        lambda: timed(lambda: expect(steps_workflow(steps), steps * (steps - 1) // 2))
    )
    latencies_us = [ns / 1000 for ns in step_latencies_ns]
    return {
        "steps": steps,
        "seconds": seconds,
        "steps_per_second": steps / seconds,
        "step_median_us": statistics.median(latencies_us),
        "step_p99_us": p99(latencies_us),
        **per(counts, steps, "step"),
        "client_cpu_us_per_step": cpu * 1e6 / steps,
        "method": f"one workflow, called directly, looping over {steps} calls of a sync no-op "
        "@DBOS.step; seconds is the workflow call's wall time (start, steps and completion); "
        "each step call is timed inside the workflow with time.perf_counter_ns",
    }


def concurrent(meter: CommitMeter, workflows: int, run: Callable[[int], int]) -> dict[str, Any]:
    steps = workflows * STEPS_PER_WORKFLOW
    expected = workflows * (STEPS_PER_WORKFLOW * (STEPS_PER_WORKFLOW - 1) // 2)
    (seconds, cpu), counts = meter.measure(
        lambda: timed(lambda: expect(run(workflows), expected))
    )
    return {
        "workflows": workflows,
        "steps_per_workflow": STEPS_PER_WORKFLOW,
        "seconds": seconds,
        "steps_per_second": steps / seconds,
        **per(counts, steps, "step"),
        "client_cpu_us_per_step": cpu * 1e6 / steps,
    }


def exhaustion(meter: CommitMeter, runs: int) -> dict[str, Any]:
    step_latencies_ns.clear()

    def workload() -> list[float]:
        workflow_ms = []
        for _ in range(runs):
            start = time.perf_counter_ns()
            expect(exhaustion_workflow(), -1)
            workflow_ms.append((time.perf_counter_ns() - start) / 1e6)
        return workflow_ms

    workflow_ms, counts = meter.measure(workload)
    step_ms = [ns / 1e6 for ns in step_latencies_ns]
    return {
        "runs": runs,
        "workflow_median_ms": statistics.median(workflow_ms),
        "workflow_p99_ms": p99(workflow_ms),
        "step_median_ms": statistics.median(step_ms),
        "step_p99_ms": p99(step_ms),
        **per(counts, runs, "workflow"),
        "method": f"{runs} workflows called directly one after another, each calling a sync "
        "step with retries_allowed=True, max_attempts=3, interval_seconds=0 that always "
        "raises, and catching DBOSMaxStepRetriesExceeded to return a fallback; workflow_* "
        "times each workflow call, step_* the step call inside the workflow "
        "(time.perf_counter_ns)",
    }


def queue_latency(samples: int) -> dict[str, Any]:
    """Enqueue one workflow of one step at a time; ms from the enqueue call to the step's start."""
    latencies_ms = []
    for n in range(samples + samples // 10):
        key = f"latency-{n}"
        enqueued = time.time_ns()
        expect(bench_queue.enqueue(marked_workflow, key).get_result(), 1)
        if n >= samples // 10:
            latencies_ms.append((first_step_ns[key] - enqueued) / 1e6)
        # Arrivals spread over the poll period, as stepbox's poll-only measurement does.
        time.sleep(0.137)
    return {
        "samples": samples,
        "median_ms": statistics.median(latencies_ms),
        "p99_ms": p99(latencies_ms),
        "method": "Queue.enqueue of a workflow calling one step, then get_result(), one at a "
        "time 137 ms apart; latency is from before enqueue() to the step's first line (wall "
        "clock); the queue has DBOS's default polling_interval_sec of 1.0",
    }


def queue_throughput(workflows: int, steps: int) -> dict[str, Any]:
    """Enqueue `workflows` workflows of `steps` no-op steps; first start to last end."""
    queued_spans.clear()
    handles = [bench_queue.enqueue(queued_steps_workflow, steps) for _ in range(workflows)]
    expected = steps * (steps - 1) // 2
    for handle in handles:
        expect(handle.get_result(), expected)
    seconds = (max(end for _, end in queued_spans) - min(start for start, _ in queued_spans)) / 1e9
    return {
        "workflows": workflows,
        "steps_per_workflow": steps,
        "seconds": seconds,
        "steps_per_second": workflows * steps / seconds,
        "method": f"{workflows} Queue.enqueue calls of a workflow of {steps} sync no-op steps, "
        "every result awaited; seconds is from the first workflow's start to the last one's end "
        "(wall clock inside the workflows), as stepbox's figure is from its journal; one DBOS "
        "process, default queue settings",
    }


# The workloads shared with the Restate and Temporal peers (bench/PEERS.md). Each one drives
# DBOS as a client would, DBOS.start_workflow then get_result(), timed from before the start.

SHARED_WORKLOADS = [
    "seed",
    "sequential",
    "concurrent",
    "submit_to_start",
    "submit_to_result",
    "burst",
    "fanout",
    "fanout_wide",
]


def percentile(values: list[float], p: float) -> float:
    """Nearest rank, as p99 above."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def triangle(n: int) -> int:
    return n * (n - 1) // 2


def shared_seed(runs: int) -> dict[str, Any]:
    seconds, gaps = [], []
    for n in range(runs):
        key = f"seed-{n}-{time.time_ns()}"
        start = time.perf_counter()
        expect(DBOS.start_workflow(seed_workflow, key).get_result(), "fallback")
        seconds.append(time.perf_counter() - start)
        attempts = seed_attempts_ns.pop(key)
        expect(len(attempts), 3)
        gaps.append([(attempts[1] - attempts[0]) / 1e9, (attempts[2] - attempts[1]) / 1e9])
    return {
        "seconds": statistics.median(seconds),
        "runs_seconds": seconds,
        "attempt_gaps_seconds": gaps,
        "method": f"{runs} run(s), median: DBOS.start_workflow of a workflow calling a sync step "
        "that always raises, with retries_allowed=True, max_attempts=3, interval_seconds=1.0, "
        "backoff_rate=2.0, and catching DBOSMaxStepRetriesExceeded to return a fallback, then "
        "get_result(); seconds from before the start to the result. The retries sleep in the "
        "workflow's thread (time.sleep), and none follows the last attempt",
    }


def shared_sequential(steps: int) -> dict[str, Any]:
    step_latencies_ns.clear()
    start = time.perf_counter()
    expect(DBOS.start_workflow(steps_workflow, steps).get_result(), triangle(steps))
    total = time.perf_counter() - start
    latencies_us = [ns / 1000 for ns in step_latencies_ns]
    return {
        "steps": steps,
        "seconds": total,
        "step_median_us": statistics.median(latencies_us),
        "step_p99_us": p99(latencies_us),
        "us_per_step": total * 1e6 / steps,
        "steps_per_second": steps / total,
        "method": f"DBOS.start_workflow of one workflow looping over {steps} calls of a sync "
        "no-op @DBOS.step, then get_result(); step_* times each step call inside the workflow "
        "(time.perf_counter_ns), us_per_step is start to result over the steps",
    }


def shared_concurrent(
    run: Callable[..., int], method: str, workflows: int, steps: int
) -> dict[str, Any]:
    start = time.perf_counter()
    expect(run(workflows, steps, plain_steps_workflow), workflows * triangle(steps))
    seconds = time.perf_counter() - start
    return {
        "workflows": workflows,
        "steps_per_workflow": steps,
        "seconds": seconds,
        "steps_per_second": workflows * steps / seconds,
        "method": f"{workflows} workflows of {steps} no-op steps: {method}; seconds from before "
        "the first start to the last result",
    }


def shared_submit_to_start(samples: int) -> dict[str, Any]:
    warmup = math.ceil(samples / 10)
    latencies_ms = []
    for n in range(samples + warmup):
        key = f"start-{n}-{time.time_ns()}"
        submitted = time.time_ns()
        expect(DBOS.start_workflow(marked_workflow, key).get_result(), 1)
        if n >= warmup:
            latencies_ms.append((first_step_ns[key] - submitted) / 1e6)
        first_step_ns.pop(key)
    return {
        "n": samples,
        "p50_ms": percentile(latencies_ms, 0.5),
        "p90_ms": percentile(latencies_ms, 0.9),
        "p99_ms": percentile(latencies_ms, 0.99),
        "method": f"{samples} submissions (after {warmup} discarded), one at a time: "
        "DBOS.start_workflow of a workflow calling one step, then get_result() before the next; "
        "ms from before start_workflow to the step's first line (wall clock, same process)",
    }


def shared_submit_to_result(samples: int) -> dict[str, Any]:
    warmup = math.ceil(samples / 10)
    latencies_ms = []
    for n in range(samples + warmup):
        start = time.perf_counter()
        expect(DBOS.start_workflow(plain_steps_workflow, 3).get_result(), 3)
        if n >= warmup:
            latencies_ms.append((time.perf_counter() - start) * 1000)
    return {
        "n": samples,
        "p50_ms": percentile(latencies_ms, 0.5),
        "p90_ms": percentile(latencies_ms, 0.9),
        "p99_ms": percentile(latencies_ms, 0.99),
        "method": f"{samples} DBOS.start_workflow calls (after {warmup} discarded), one at a "
        "time, of a workflow of 3 sync no-op steps, each followed by get_result(); ms from "
        "before the start to the result",
    }


def shared_burst(run: Callable[..., int], method: str, workflows: int) -> dict[str, Any]:
    start = time.perf_counter()
    expect(run(workflows, 3, plain_steps_workflow), workflows * 3)
    seconds = time.perf_counter() - start
    return {
        "n": workflows,
        "seconds": seconds,
        "workflows_per_second": workflows / seconds,
        "method": f"{workflows} workflows of 3 no-op steps: {method}; seconds from before the "
        "first start to the last result",
    }


def shared_fanout(steps: int, runs: int) -> dict[str, Any]:
    async def one() -> float:
        start = time.perf_counter()
        handle = await DBOS.start_workflow_async(fanout_workflow, steps)
        expect(await handle.get_result(), triangle(steps))
        return (time.perf_counter() - start) * 1000

    async def all_runs() -> list[float]:
        return [await one() for _ in range(runs)]

    runs_ms = asyncio.run(all_runs())
    ms = statistics.median(runs_ms)
    return {
        "steps": steps,
        "runs": runs,
        "ms": ms,
        "runs_ms": runs_ms,
        "steps_per_second": steps / (ms / 1000),
        "method": f"{runs} runs one after another (median): DBOS.start_workflow_async of an async "
        f"workflow that awaits asyncio.gather of {steps} calls of an async no-op @DBOS.step, then "
        "get_result(); ms from before the start to the result",
    }


def run_shared(
    only: list[str], quick: bool, run_concurrent: Callable[..., int], concurrent_method: str
) -> dict[str, Any]:
    counts = (
        dict(seed_runs=1, steps=200, workflows=20, samples=30, burst=100, fanout_runs=3, wide_runs=1)
        if quick
        else dict(seed_runs=3, steps=1000, workflows=100, samples=200, burst=1000, fanout_runs=10, wide_runs=3)
    )
    plan: dict[str, Callable[[], dict[str, Any]]] = {
        "seed": lambda: shared_seed(counts["seed_runs"]),
        "sequential": lambda: shared_sequential(counts["steps"]),
        "concurrent": lambda: shared_concurrent(
            run_concurrent, concurrent_method, counts["workflows"], STEPS_PER_WORKFLOW
        ),
        "submit_to_start": lambda: shared_submit_to_start(counts["samples"]),
        "submit_to_result": lambda: shared_submit_to_result(counts["samples"]),
        "burst": lambda: shared_burst(run_concurrent, concurrent_method, counts["burst"]),
        "fanout": lambda: shared_fanout(100, counts["fanout_runs"]),
        "fanout_wide": lambda: shared_fanout(1000, counts["wide_runs"]),
    }
    results = {}
    for name in SHARED_WORKLOADS:
        if name in only:
            log(f"shared workload: {name}")
            results[name] = plan[name]()
    return results


def server_settings(admin: psycopg.Connection) -> str:
    row = admin.execute(
        "SELECT current_setting('server_version'), current_setting('fsync'),"
        " current_setting('synchronous_commit'), current_setting('wal_sync_method')"
    ).fetchone()
    assert row is not None
    return (
        f"PostgreSQL {row[0]} system database (fsync={row[1]}, synchronous_commit={row[2]}, "
        f"wal_sync_method={row[3]}): every DBOS transaction's commit is flushed to its WAL"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", required=True, help="PostgreSQL server URL (no database)")
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    parser.add_argument("--concurrency", choices=sorted(CONCURRENCY), default="threads")
    parser.add_argument(
        "--workflows",
        default="1,10,100",
        help="comma-separated workflow counts of the concurrent run (1000 takes DBOS 6-8 minutes here)",
    )
    parser.add_argument(
        "--queue",
        default="",
        help="also the queue workloads: WORKFLOWSxSTEPS for throughput, e.g. 1000x10",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated shared workloads to run, of "
        f"{','.join(SHARED_WORKLOADS)}; the others, and the keys the Rust bench reads, are skipped",
    )
    args = parser.parse_args()
    only = [name for name in args.only.split(",") if name]
    for name in only:
        if name not in SHARED_WORKLOADS:
            parser.error(f"unknown workload {name}")
    legacy = not only
    steps = 500 if args.quick else 1000
    workflow_counts = [int(count) for count in args.workflows.split(",")]
    runs = 50 if args.quick else 200
    run_concurrent, concurrent_method = CONCURRENCY[args.concurrency]

    # Only the JSON goes to stdout; anything else printing there would corrupt it.
    stdout, sys.stdout = sys.stdout, sys.stderr
    load_before = os.getloadavg()[0]
    admin = recreate_database(args.postgres)
    system_database_url = sa.make_url(args.postgres).set(database=DB_NAME)
    dbos = DBOS(
        config={
            "name": "stepbox-dbos-peer",
            "system_database_url": system_database_url.render_as_string(hide_password=False),
            "sys_db_pool_size": POOL_SIZE,
            # DBOS would otherwise log a warning with a traceback on every step retry.
            "log_level": "ERROR",
        }
    )
    try:
        DBOS.launch()
        global bench_queue
        bench_queue = DBOS.register_queue("stepbox_bench_queue")
        # DBOS keeps its system-database engine private; the meter needs its pool.
        meter = CommitMeter(admin, dbos._sys_db.engine)
        log("warming up")
        for _ in range(3):
            steps_workflow(10)
            exhaustion_workflow()
        run_concurrent(10)
        DBOS.start_workflow(plain_steps_workflow, 3).get_result()
        DBOS.start_workflow(marked_workflow, "warmup").get_result()
        shared_fanout(10, 1)

        legacy_results: dict[str, Any] = {}
        if legacy:
            log(f"sequential: {steps} steps")
            sequential_result = sequential(meter, steps)
            concurrent_results = []
            for workflows in workflow_counts:
                log(f"concurrent: {workflows} workflows x {STEPS_PER_WORKFLOW} steps")
                concurrent_results.append(concurrent(meter, workflows, run_concurrent))
            log(f"exhaustion: {runs} workflows")
            exhaustion_result = exhaustion(meter, runs)
            legacy_results = {
                "sequential": sequential_result,
                "concurrent": concurrent_results,
                "exhaustion": exhaustion_result,
            }
        store = server_settings(admin)
        shared_results = run_shared(
            only or SHARED_WORKLOADS, args.quick, run_concurrent, concurrent_method
        )
        queue_result = None
        if legacy and args.queue:
            queued, queued_steps = (int(part) for part in args.queue.split("x"))
            log("queue: enqueue to first step")
            latency = queue_latency(10 if args.quick else 30)
            log(f"queue: {queued} workflows x {queued_steps} steps")
            queue_result = {
                "latency": latency,
                "throughput": queue_throughput(queued, queued_steps),
            }
    finally:
        DBOS.destroy()
        admin.close()
    load_after = os.getloadavg()[0]

    result = {
        "dbos_version": version("dbos"),
        "python": platform.python_version(),
        **legacy_results,
        "concurrent_method": f"{concurrent_method}; seconds is the wall time from the first "
        f"start to the last result; DBOS's default system-database pool of {POOL_SIZE} "
        "connections and unbounded executor",
        "queue": queue_result,
        "notes": [
            "interval_seconds=0 means no sleep in DBOS 3.4.0: the retry loop "
            "(dbos/_outcome.py, Immediate._retry) calls time.sleep(min(interval_seconds * "
            "backoff_rate**attempt, 3600)), i.e. time.sleep(0), which only yields the GIL; "
            "the attempts are not recorded one by one: the DBOSMaxStepRetriesExceeded is "
            "recorded once, as the step's outcome",
            "a step is two system-database transactions on two pool checkouts: a read that "
            "looks for a recorded outcome, then a write that inserts it (after checking the "
            "workflow's ownership); SQLAlchemy's pool_pre_ping, on in DBOS's defaults, adds "
            "an autocommitted SELECT 1 to each checkout: about four commits per step, one of "
            "them writing (1.00 transaction IDs consumed per step on an otherwise idle "
            "server); a workflow adds a writing transaction at start (status and inputs "
            "rows) and one at completion (status update), so the exhaustion workflow is "
            "three",
            "commits_* count every transaction committed in the peer database "
            "(pg_stat_database.xact_commit: reads and pool pings included, as are DBOS's "
            "background threads, about ten a second even when idle); rows_written_* count "
            "rows inserted, updated and deleted there",
            "client_cpu_us_per_step is this Python process's CPU time (all threads) per "
            "step; PostgreSQL's is not included",
            "DBOS's background-jobs thread keeps one pool connection checked out, idle in a "
            "transaction that holds an advisory lock, so workflows share the other "
            f"{POOL_SIZE - 1}",
            "log_level is ERROR, or DBOS logs a warning with a traceback on each retry",
            f"1-minute load average {load_before:.2f} before and {load_after:.2f} after the "
            f"run, on {os.cpu_count()} CPUs",
        ],
        # The workloads shared with the Restate and Temporal peers (bench/PEERS.md).
        "engine": "dbos",
        "version": version("dbos"),
        "store": store,
        "quick": args.quick,
        "workloads": shared_results,
        "workloads_notes": [
            "DBOS runs in this process (workflows and steps on its executor threads, or the "
            "asyncio loop for the async fan-out), against the PostgreSQL server on the same "
            "machine; start_workflow returns once the workflow's status and inputs are committed",
            "concurrent and burst use the --concurrency mode's way of starting: "
            f"{concurrent_method}",
            "fanout: DBOS assigns each step of asyncio.gather its function id as it is called, "
            "so the 100 steps run concurrently on the event loop, each recording its outcome in "
            "its own transaction",
            "the seed's retries sleep in the workflow's thread (time.sleep in "
            "dbos/_outcome.py, Immediate._retry): 1.0 s after the first attempt, 2.0 s after the "
            "second, none after the third",
        ],
    }
    json.dump(result, stdout)
    stdout.write("\n")


if __name__ == "__main__":
    main()
