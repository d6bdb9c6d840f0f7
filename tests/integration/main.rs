//! Integration tests: the real `host` binary, guest components built from
//! source by `tests/artifacts`, real SQLite files and a real PostgreSQL server.

mod support;

mod browser;
mod cache;
mod children;
mod concurrency;
mod durability;
mod embed;
mod errors;
mod faults;
mod group_commit;
mod journal;
mod layers;
mod leases;
mod operate;
mod polyglot;
mod postgres;
mod process;
mod readme;
mod retries;
mod sandbox;
mod schedules;
mod seed;
mod serve;
mod telemetry;
mod templates;
mod waits;
mod workers;
