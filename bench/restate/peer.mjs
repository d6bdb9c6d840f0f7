#!/usr/bin/env node
/**
 * Restate peer for stepbox's benchmark. It runs the shared peer workloads (bench/PEERS.md) on
 * Restate and prints one JSON object on stdout; all progress goes to stderr.
 *
 * What runs: the Restate server 1.7.12 (the binary of the npm package
 * @restatedev/restate-server, installed by `bench/restate/install`), one node, default
 * configuration except its addresses: every listener on 127.0.0.1, on ports picked free, a fresh
 * base directory under the system temp dir, telemetry off. Its durable store is the default one:
 * the replicated loglet (Bifrost) on the node's own log-server, a RocksDB whose WAL is fsynced
 * on every write batch (`log-server.rocksdb-disable-wal-fsync = false`), with a replication of 1;
 * the partition processors' state (RocksDB, WAL off) is derived from that log. The services are
 * written with the TypeScript SDK 1.17.2 (plain JavaScript here, no build step) and served by an
 * HTTP/2 endpoint in this process, which registers it with the admin API. The client side calls
 * the ingress over a few HTTP/2 connections from this same process, so the timestamps taken by
 * the steps and by the client share one clock.
 *
 * A "workflow" is one invocation of a Restate service handler (durable: its journal is kept);
 * a "step" is one `ctx.run`, whose promise resolves only once its result is in the log (the SDK
 * proposes it, the runtime appends it and acknowledges it). What is measured:
 *   seed             a step that always fails, 3 attempts, 1 s then 2 s apart (ctx.run's
 *                    maxRetryAttempts 3, initialRetryInterval 1 s, retryIntervalFactor 2); the
 *                    handler catches the TerminalError and returns a fallback: wall seconds.
 *   sequential       one handler of 1,000 sequential no-op ctx.run: µs per step (median of the
 *                    per-step times taken in the handler, and total / steps).
 *   concurrent       100 handlers x 100 no-op steps, all called at once: steps/s.
 *   submit_to_start  /send of a one-step handler, then attach to its result, one at a time:
 *                    ms from before the /send request to the step's first line (p50/p90).
 *   submit_to_result a call of a 3-step handler, one at a time: ms to its result (p50/p99).
 *   burst            1,000 calls of the 3-step handler at once: workflows/s, first call to last
 *                    result.
 *   fanout           one handler running 100 no-op ctx.run at once (RestatePromise.all): ms
 *                    from the call to its result, and steps/s.
 *
 * Usage: node bench/restate/peer.mjs [--quick] [--only seed,sequential,...]
 */

// The SDK 1.17.2 uses Promise.withResolvers (Node >= 22); Node 20 lacks it. This is the
// standard polyfill, installed before the SDK is loaded.
if (!Promise.withResolvers) {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new this((ok, fail) => {
      resolve = ok;
      reject = fail;
    });
    return { promise, resolve, reject };
  };
}

import { spawn } from "node:child_process";
import fs from "node:fs";
import http2 from "node:http2";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";

// Static imports run before any code of this module (they are hoisted), so the SDK is loaded
// with a dynamic import, after the polyfill above.
const restate = await import("@restatedev/restate-sdk");

const require = createRequire(import.meta.url);
const SERVER_PACKAGE = `@restatedev/restate-server-${os.platform()}-${os.arch()}`;
const SDK_VERSION = require("@restatedev/restate-sdk/package.json").version;
const WORKLOADS = [
  "seed",
  "sequential",
  "concurrent",
  "submit_to_start",
  "submit_to_result",
  "burst",
  "fanout",
];
// HTTP/2 connections from the client to the ingress: it allows 200 concurrent streams on each,
// and the burst has 1,000 calls in flight.
const INGRESS_CONNECTIONS = 8;

function log(message) {
  process.stderr.write(`restate-peer: ${message}\n`);
}

/** Wall clock in ms with sub-ms resolution (Date.now() has 1 ms). */
const wallMs = () => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------------------------------------
// The services. Everything they record lives in this process, keyed by the caller's run key.

/** Per-step durations (ms) of the sequential handler, by key. */
const stepTimes = new Map();
/** Wall time (ms) at which the marked handler's step first started, by key. */
const firstStepAt = new Map();
/** Attempts of the failing step, by key (wall ms of each). */
const failingAttempts = new Map();

const noop = (i) => i;

const bench = restate.service({
  name: "Bench",
  handlers: {
    /** `steps` sequential no-op steps; each one timed around its await when `key` is given. */
    steps: async (ctx, { steps, key }) => {
      const times = key ? [] : null;
      if (key) stepTimes.set(key, times);
      let total = 0;
      for (let i = 0; i < steps; i++) {
        const start = performance.now();
        total += await ctx.run("noop", () => noop(i));
        times?.push(performance.now() - start);
      }
      return total;
    },
    /** One step, whose first line writes down when it ran. */
    marked: async (ctx, { key }) =>
      ctx.run("marked", () => {
        if (!firstStepAt.has(key)) firstStepAt.set(key, wallMs());
        return 1;
      }),
    /** `steps` no-op steps started at once and awaited together. */
    fanout: async (ctx, { steps }) => {
      const runs = [];
      for (let i = 0; i < steps; i++) runs.push(ctx.run("noop", () => noop(i)));
      const results = await restate.RestatePromise.all(runs);
      return results.reduce((a, b) => a + b, 0);
    },
    /** The seed: a step failing all 3 attempts, 1 s then 2 s apart; the handler falls back. */
    seed: async (ctx, { key }) => {
      try {
        await ctx.run(
          "provision",
          () => {
            if (!failingAttempts.has(key)) failingAttempts.set(key, []);
            failingAttempts.get(key).push(wallMs());
            throw new Error("simulated failure");
          },
          { maxRetryAttempts: 3, initialRetryInterval: 1000, retryIntervalFactor: 2.0 },
        );
        return "provisioned";
      } catch (error) {
        if (!(error instanceof restate.TerminalError)) throw error;
        return "fallback";
      }
    },
  },
});

// ---------------------------------------------------------------------------------------------
// The server: free ports, fresh directory, start and stop by PID.

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class RestateServer {
  constructor(dir) {
    this.dir = dir;
    this.logPath = path.join(dir, "server.log");
    this.child = null;
  }

  async start() {
    const [fabric, admin, ingress] = [await freePort(), await freePort(), await freePort()];
    this.adminUrl = `http://127.0.0.1:${admin}`;
    this.ingressUrl = `http://127.0.0.1:${ingress}`;
    const config = [
      'node-name = "stepbox-peer"',
      'cluster-name = "stepbox-peer"',
      "disable-telemetry = true",
      // TCP only (no unix sockets in the data dir), every listener on loopback.
      'listen-mode = "tcp"',
      'bind-ip = "127.0.0.1"',
      'advertised-host = "127.0.0.1"',
      `bind-address = "127.0.0.1:${fabric}"`,
      `advertised-address = "http://127.0.0.1:${fabric}/"`,
      "[admin]",
      `bind-address = "127.0.0.1:${admin}"`,
      "[ingress]",
      `bind-address = "127.0.0.1:${ingress}"`,
      "",
    ].join("\n");
    const configPath = path.join(this.dir, "restate.toml");
    fs.writeFileSync(configPath, config);
    let binary;
    try {
      binary = require.resolve(`${SERVER_PACKAGE}/bin/restate-server`);
    } catch {
      throw new Error(`${SERVER_PACKAGE} is not installed: run bench/restate/install`);
    }
    const logFd = fs.openSync(this.logPath, "w");
    this.child = spawn(
      binary,
      ["--config-file", configPath, "--base-dir", path.join(this.dir, "data"), "--no-logo"],
      { stdio: ["ignore", logFd, logFd], env: { ...process.env, NO_COLOR: "1" } },
    );
    fs.closeSync(logFd);
    this.exited = new Promise((resolve) => this.child.once("exit", resolve));
    log(`restate-server pid ${this.child.pid}, admin ${this.adminUrl}, ingress ${this.ingressUrl}`);
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`restate-server exited:\n${this.logTail()}`);
      try {
        const [adminOk, ingressOk] = await Promise.all([
          fetch(`${this.adminUrl}/health`).then((r) => r.ok),
          fetch(`${this.ingressUrl}/restate/health`).then((r) => r.ok),
        ]);
        if (adminOk && ingressOk) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`restate-server not ready:\n${this.logTail()}`);
      await sleep(100);
    }
  }

  logTail() {
    try {
      return fs.readFileSync(this.logPath, "utf8").split("\n").slice(-40).join("\n");
    } catch {
      return "";
    }
  }

  /** SIGTERM by PID, then SIGKILL if it has not exited within 20 s. */
  async stop() {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    process.kill(this.child.pid, "SIGTERM");
    const stopped = await Promise.race([this.exited.then(() => true), sleep(20_000).then(() => false)]);
    if (!stopped) {
      log(`restate-server ${this.child.pid} still running after SIGTERM; SIGKILL`);
      process.kill(this.child.pid, "SIGKILL");
      await this.exited;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The client: the ingress over HTTP/2 (h2c), a few connections used in turn.

class Ingress {
  constructor(url, connections) {
    this.sessions = Array.from({ length: connections }, () => {
      const session = http2.connect(url);
      session.on("error", (error) => log(`ingress connection error: ${error.message}`));
      return session;
    });
    this.next = 0;
  }

  request(method, urlPath, body) {
    const session = this.sessions[this.next++ % this.sessions.length];
    return new Promise((resolve, reject) => {
      const headers = { ":method": method, ":path": urlPath };
      if (body !== undefined) headers["content-type"] = "application/json";
      const stream = session.request(headers);
      let status = 0;
      const chunks = [];
      stream.on("response", (h) => (status = h[":status"]));
      stream.on("data", (chunk) => chunks.push(chunk));
      stream.on("error", reject);
      stream.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        if (status < 200 || status >= 300) {
          reject(new Error(`${method} ${urlPath}: HTTP ${status}: ${text}`));
        } else {
          resolve(text.length ? JSON.parse(text) : null);
        }
      });
      stream.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }

  /** Request-response call: durably enqueues the invocation and waits for its result. */
  call(handler, input) {
    return this.request("POST", `/Bench/${handler}`, input);
  }

  /** Submit without waiting; returns the invocation id. */
  async send(handler, input) {
    const accepted = await this.request("POST", `/Bench/${handler}/send`, input);
    return accepted.invocationId;
  }

  attach(invocationId) {
    return this.request("GET", `/restate/invocation/${invocationId}/attach`);
  }

  close() {
    for (const session of this.sessions) session.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics and checks.

/** Nearest-rank percentile, as bench/dbos/peer.py's p99. */
function percentile(values, p) {
  const ordered = [...values].sort((a, b) => a - b);
  return ordered[Math.max(0, Math.ceil(p * ordered.length) - 1)];
}

function median(values) {
  const ordered = [...values].sort((a, b) => a - b);
  const mid = Math.floor(ordered.length / 2);
  return ordered.length % 2 ? ordered[mid] : (ordered[mid - 1] + ordered[mid]) / 2;
}

function expect(actual, expected) {
  if (actual !== expected) throw new Error(`workload returned ${actual}, expected ${expected}`);
}

const sum = (n) => (n * (n - 1)) / 2;
let keys = 0;
const newKey = (prefix) => `${prefix}-${keys++}`;

// ---------------------------------------------------------------------------------------------
// The workloads.

async function seed(ingress, runs) {
  const seconds = [];
  const gaps = [];
  for (let r = 0; r < runs; r++) {
    const key = newKey("seed");
    const start = performance.now();
    expect(await ingress.call("seed", { key }), "fallback");
    seconds.push((performance.now() - start) / 1000);
    const attempts = failingAttempts.get(key);
    expect(attempts.length, 3);
    gaps.push([attempts[1] - attempts[0], attempts[2] - attempts[1]].map((ms) => ms / 1000));
  }
  return {
    seconds: median(seconds),
    runs_seconds: seconds,
    attempt_gaps_seconds: gaps,
    method:
      `${runs} run(s), median: a request-response call of a handler whose ctx.run always throws, ` +
      "with maxRetryAttempts 3, initialRetryInterval 1 s, retryIntervalFactor 2; the handler " +
      "catches the TerminalError and returns a fallback; seconds from before the call to its " +
      "result at the client. Each retry is the runtime re-invoking the handler after the delay " +
      "(a replay up to the step); no delay follows the last attempt",
  };
}

async function sequential(ingress, steps) {
  const key = newKey("sequential");
  const start = performance.now();
  expect(await ingress.call("steps", { steps, key }), sum(steps));
  const totalMs = performance.now() - start;
  const times = stepTimes.get(key);
  stepTimes.delete(key);
  return {
    steps,
    seconds: totalMs / 1000,
    step_median_us: median(times) * 1000,
    step_p99_us: percentile(times, 0.99) * 1000,
    us_per_step: (totalMs * 1000) / steps,
    steps_per_second: steps / (totalMs / 1000),
    method:
      `one request-response call of a handler looping over ${steps} awaited no-op ctx.run; ` +
      "step_* times each `await ctx.run` inside the handler (performance.now); us_per_step is " +
      "the call's wall time at the client (submit, steps, result) over the steps",
  };
}

async function concurrent(ingress, workflows, steps) {
  const start = performance.now();
  const results = await Promise.all(
    Array.from({ length: workflows }, () => ingress.call("steps", { steps })),
  );
  const seconds = (performance.now() - start) / 1000;
  for (const result of results) expect(result, sum(steps));
  return {
    workflows,
    steps_per_workflow: steps,
    seconds,
    steps_per_second: (workflows * steps) / seconds,
    method:
      `${workflows} request-response calls, all made at once, of a handler looping over ` +
      `${steps} awaited no-op ctx.run; seconds from before the first call to the last result`,
  };
}

async function submitToStart(ingress, samples) {
  const warmup = Math.ceil(samples / 10);
  const latencies = [];
  for (let n = 0; n < samples + warmup; n++) {
    const key = newKey("start");
    const submitted = wallMs();
    const id = await ingress.send("marked", { key });
    expect(await ingress.attach(id), 1);
    if (n >= warmup) latencies.push(firstStepAt.get(key) - submitted);
    firstStepAt.delete(key);
  }
  return {
    n: samples,
    p50_ms: percentile(latencies, 0.5),
    p90_ms: percentile(latencies, 0.9),
    p99_ms: percentile(latencies, 0.99),
    method:
      `${samples} submissions (after ${warmup} discarded), one at a time: POST /Bench/marked/send ` +
      "(the invocation is accepted durably, its id returned), then GET attach awaits its result " +
      "before the next; ms from before the send to the first line of the handler's only " +
      "ctx.run (wall clock, same process)",
  };
}

async function submitToResult(ingress, samples) {
  const warmup = Math.ceil(samples / 10);
  const latencies = [];
  for (let n = 0; n < samples + warmup; n++) {
    const start = performance.now();
    expect(await ingress.call("steps", { steps: 3 }), 3);
    if (n >= warmup) latencies.push(performance.now() - start);
  }
  return {
    n: samples,
    p50_ms: percentile(latencies, 0.5),
    p90_ms: percentile(latencies, 0.9),
    p99_ms: percentile(latencies, 0.99),
    method:
      `${samples} request-response calls (after ${warmup} discarded), one at a time, of a ` +
      "handler of 3 sequential no-op ctx.run; ms from before the call to its result at the client",
  };
}

async function burst(ingress, workflows) {
  const start = performance.now();
  const results = await Promise.all(
    Array.from({ length: workflows }, () => ingress.call("steps", { steps: 3 })),
  );
  const seconds = (performance.now() - start) / 1000;
  for (const result of results) expect(result, 3);
  return {
    n: workflows,
    seconds,
    workflows_per_second: workflows / seconds,
    method:
      `${workflows} request-response calls of the 3-step handler made at once (over ` +
      `${INGRESS_CONNECTIONS} HTTP/2 connections); seconds from before the first call to the ` +
      "last result",
  };
}

async function fanout(ingress, steps, runs) {
  const ms = [];
  for (let r = 0; r < runs; r++) {
    const start = performance.now();
    expect(await ingress.call("fanout", { steps }), sum(steps));
    ms.push(performance.now() - start);
  }
  const medianMs = median(ms);
  return {
    steps,
    runs,
    ms: medianMs,
    runs_ms: ms,
    steps_per_second: steps / (medianMs / 1000),
    method:
      `${runs} request-response calls one after another (median) of a handler that starts ` +
      `${steps} no-op ctx.run at once and awaits RestatePromise.all of them; ms from before the ` +
      "call to its result at the client",
  };
}

// ---------------------------------------------------------------------------------------------

function parseArgs(argv) {
  const args = { quick: false, only: WORKLOADS };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--quick") args.quick = true;
    else if (argv[i] === "--only") {
      if (i + 1 >= argv.length) throw new Error("--only needs WORKLOAD,...");
      args.only = argv[++i].split(",").filter(Boolean);
      for (const name of args.only) {
        if (!WORKLOADS.includes(name)) throw new Error(`unknown workload ${name}; known: ${WORKLOADS}`);
      }
    } else if (argv[i] === "--help" || argv[i] === "-h") {
      process.stderr.write("usage: node bench/restate/peer.mjs [--quick] [--only WORKLOAD,...]\n");
      process.exit(0);
    } else throw new Error(`unknown argument ${argv[i]}`);
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const counts = args.quick
    ? { seedRuns: 1, steps: 200, workflows: 20, perWorkflow: 100, samples: 30, burst: 100, fanoutRuns: 3 }
    : { seedRuns: 3, steps: 1000, workflows: 100, perWorkflow: 100, samples: 200, burst: 1000, fanoutRuns: 10 };
  const loadBefore = os.loadavg()[0];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "stepbox-restate-peer-"));
  const server = new RestateServer(dir);
  let endpoint = null;
  let ingress = null;
  // Stop the server whatever happens: an exception below, or a signal to this process.
  const onSignal = (signal) => {
    if (server.child && server.child.exitCode === null) process.kill(server.child.pid, "SIGKILL");
    fs.rmSync(dir, { recursive: true, force: true });
    process.exit(signal === "SIGINT" ? 130 : 143);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const workloads = {};
  let serverVersion = null;
  try {
    await server.start();
    serverVersion = (await (await fetch(`${server.adminUrl}/version`)).json()).version;

    // The service endpoint, in this process, on a free loopback port; its logs silenced
    // (the SDK logs every invocation and every failed attempt with a stack trace).
    endpoint = http2.createServer(restate.endpoint().setLogger(() => {}).bind(bench).http2Handler());
    await new Promise((resolve) => endpoint.listen(0, "127.0.0.1", resolve));
    const endpointUrl = `http://127.0.0.1:${endpoint.address().port}`;
    const registered = await fetch(`${server.adminUrl}/deployments`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ uri: endpointUrl }),
    });
    if (!registered.ok) throw new Error(`registration failed: ${registered.status} ${await registered.text()}`);
    log(`registered the endpoint ${endpointUrl}`);

    ingress = new Ingress(server.ingressUrl, INGRESS_CONNECTIONS);
    // The ingress learns of the new deployment asynchronously: retry the first call a while.
    for (let attempt = 0; ; attempt++) {
      try {
        expect(await ingress.call("steps", { steps: 1 }), 0);
        break;
      } catch (error) {
        if (attempt > 100) throw error;
        await sleep(100);
      }
    }
    log("warming up");
    for (let i = 0; i < 3; i++) await ingress.call("steps", { steps: 10 });
    await Promise.all(Array.from({ length: 10 }, () => ingress.call("steps", { steps: 10 })));
    await ingress.call("fanout", { steps: 10 });
    await ingress.attach(await ingress.send("marked", { key: "warmup" }));

    const plan = {
      seed: () => seed(ingress, counts.seedRuns),
      sequential: () => sequential(ingress, counts.steps),
      concurrent: () => concurrent(ingress, counts.workflows, counts.perWorkflow),
      submit_to_start: () => submitToStart(ingress, counts.samples),
      submit_to_result: () => submitToResult(ingress, counts.samples),
      burst: () => burst(ingress, counts.burst),
      fanout: () => fanout(ingress, 100, counts.fanoutRuns),
    };
    for (const name of WORKLOADS) {
      if (!args.only.includes(name)) continue;
      log(`${name}`);
      workloads[name] = await plan[name]();
    }
  } catch (error) {
    log(`failed: ${error.stack ?? error}`);
    log(`server log tail:\n${server.logTail()}`);
    process.exitCode = 1;
  } finally {
    ingress?.close();
    if (endpoint) {
      endpoint.close();
      // Open streams from the server would keep close() waiting; the server goes next anyway.
    }
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (process.exitCode) process.exit(process.exitCode);
  const loadAfter = os.loadavg()[0];

  const result = {
    engine: "restate",
    version: serverVersion,
    sdk: `@restatedev/restate-sdk ${SDK_VERSION} (TypeScript SDK, used from JavaScript) on Node ${process.versions.node}`,
    store:
      "restate-server single node, default durable store: replicated loglet (Bifrost) on the " +
      "node's own log-server, RocksDB with its WAL fsynced on every write batch, replication 1; " +
      "partition state in RocksDB without WAL, rebuilt from the log",
    quick: args.quick,
    workloads,
    notes: [
      "one restate-server process (default configuration but addresses: 24 partitions, " +
        "invoker limits and retention 1 d as shipped), the service endpoint and the client in " +
        "this Node process, all on the same 2-core machine",
      "a step is `await ctx.run(...)`: the SDK proposes the result and the promise resolves " +
        "when the runtime acknowledges it, after it is appended to the log (the log-server " +
        "fsyncs each RocksDB write batch: log-server.rocksdb-disable-wal-fsync defaults to " +
        "false, and concurrent appends share a batch); measured with strace on this machine, " +
        "about 1.2 fdatasync per sequential step, invocation start and end included",
      "a workflow is a plain service handler invocation (not the `workflow` service type, which " +
        "adds a key and a state store); it has an invocation id and its journal is kept for the " +
        "default journal retention of 1 day, as a DBOS or Temporal workflow keeps its history",
      "a failed ctx.run attempt aborts the invocation attempt: the runtime re-invokes the handler " +
        "after the retry delay, and it replays its journal up to the step",
      "Node 20 lacks Promise.withResolvers, which SDK 1.17.2 uses: the peer installs the usual " +
        "polyfill before loading the SDK",
      "the SDK's logger is silenced (it logs each invocation, and each failed attempt with a stack)",
      `1-minute load average ${loadBefore.toFixed(2)} before and ${loadAfter.toFixed(2)} after ` +
        `the run, on ${os.cpus().length} CPUs`,
    ],
  };
  process.stdout.write(JSON.stringify(result) + "\n");
  // The endpoint's HTTP/2 sessions may keep the event loop alive: leave explicitly.
  process.exit(0);
}

await main();
