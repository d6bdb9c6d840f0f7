//! The service side: workflows handed to queues (`Client::submit`) and run
//! by any number of worker processes on any number of machines, which
//! coordinate only through the journal (PostgreSQL; SQLite on one machine):
//! claims in priority order within each queue's limits, fenced leases, a
//! reaper in every worker, wake-ups through LISTEN/NOTIFY or polling.

mod client;
mod deployments;
mod service;

pub use client::{
    Client, Receipt, ScheduleRequest, SubmitError, SubmitRequest, Submittable, Uploaded, check_schedule_name,
};
pub use service::{
    DEFAULT_CONCURRENCY, DEFAULT_CRASH_LOOP_CAP, DEFAULT_GRACE, DEFAULT_POLL_INTERVAL, Worker, WorkerOptions,
    WorkerReport,
};
