//! Schedules: rows that start a workflow on each tick of a cron expression.
//! Any worker fires a due tick; the tick's workflow row is unique per
//! (schedule, tick), so a tick starts exactly one workflow whatever the
//! number of workers, crashes or retries. Which ticks are due is the
//! caller's (pure) decision; this room writes what it decided.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::deployments::{self, store_deployment};
use super::notify::notify;
use super::waits::begin_write;
use super::{CatchUp, Journal, JournalError, Timestamp, statement, with_conn};

/// The workflow a schedule starts, by value (what a submit would write).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleTemplate {
    pub name: String,
    pub component: String,
    pub component_digest: String,
    pub entry: String,
    /// The arguments, a WAVE tuple.
    pub input: String,
    pub input_json: Json,
    /// What it runs with (components, entry, each step's settings).
    pub options: Json,
}

/// A schedule to set (created, or replaced with its next tick recomputed).
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub catch_up: CatchUp,
    pub queue: String,
    pub priority: i32,
    pub timeout_ms: Option<i64>,
    pub template: ScheduleTemplate,
    /// Its first tick from now.
    pub next_tick_at: Timestamp,
}

/// A schedule row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ScheduleRecord {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub catch_up: CatchUp,
    pub queue: String,
    pub priority: i32,
    pub timeout_ms: Option<i64>,
    /// The workflow component as given.
    pub component: String,
    pub entry: String,
    /// The arguments, a WAVE tuple.
    pub input: String,
    #[serde(skip)]
    pub template: Json,
    pub paused: bool,
    pub next_tick_at: Timestamp,
    pub last_tick_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The ticks a due schedule fires now, and the next one after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    pub ticks: Vec<Timestamp>,
    pub next_tick_at: Timestamp,
}

/// One tick fired: the workflow it started (or found started already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub schedule: String,
    pub tick: Timestamp,
    pub workflow_id: String,
    /// False when another worker had started it already.
    pub started: bool,
}

const COLUMNS: &str = "name, cron, timezone, catch_up, queue, priority, timeout_ms, component, entry, input, \
                       template, paused, next_tick_at, last_tick_at, created_at, updated_at";

/// The id of the workflow a schedule's tick starts: readable, and unique per tick.
pub fn tick_workflow_id(schedule: &str, tick: Timestamp) -> String {
    format!("{schedule}@{}", tick.rfc3339())
}

impl Journal {
    /// Creates or replaces schedule `schedule.name` (running, unpaused).
    pub async fn set_schedule(&self, schedule: &NewSchedule) -> Result<(), JournalError> {
        let template = serde_json::to_value(&schedule.template).unwrap_or(Json::Null);
        let now = Timestamp::now();
        self.commit("set of a schedule", || {
            with_conn!(&self.backend, |conn| {
                statement::query(
                    "INSERT INTO schedules (name, cron, timezone, catch_up, queue, priority, timeout_ms, component, \
                     entry, input, template, paused, next_tick_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) \
                     ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone, \
                     catch_up = excluded.catch_up, queue = excluded.queue, priority = excluded.priority, \
                     timeout_ms = excluded.timeout_ms, component = excluded.component, entry = excluded.entry, \
                     input = excluded.input, template = excluded.template, paused = excluded.paused, \
                     next_tick_at = excluded.next_tick_at, updated_at = excluded.updated_at",
                )
                .bind(&schedule.name)
                .bind(&schedule.cron)
                .bind(&schedule.timezone)
                .bind(schedule.catch_up)
                .bind(&schedule.queue)
                .bind(schedule.priority)
                .bind(schedule.timeout_ms)
                .bind(&schedule.template.component)
                .bind(&schedule.template.entry)
                .bind(&schedule.template.input)
                .bind(&template)
                .bind(false)
                .bind(schedule.next_tick_at)
                .bind(now)
                .execute(conn)
                .await?;
                Ok(())
            })
        })
        .await?;
        self.announce("schedule:*").await
    }

    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRecord>, JournalError> {
        let sql = format!("SELECT {COLUMNS} FROM schedules ORDER BY name");
        self.run("read of schedules", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(sqlx::AssertSqlSafe(sql.clone())).fetch_all(conn).await
            })
        })
        .await
    }

    /// Schedule `name`, if it exists.
    pub async fn schedule(&self, name: &str) -> Result<Option<ScheduleRecord>, JournalError> {
        let sql = format!("SELECT {COLUMNS} FROM schedules WHERE name = $1");
        self.run("read of a schedule", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(name).fetch_optional(conn).await
            })
        })
        .await
    }

    /// Pauses schedule `name`, or resumes it from `next_tick_at`; false if it does not exist.
    pub async fn pause_schedule(
        &self,
        name: &str,
        paused: bool,
        next_tick_at: Option<Timestamp>,
    ) -> Result<bool, JournalError> {
        let now = Timestamp::now();
        let changed = self
            .commit("pause of a schedule", || {
                with_conn!(&self.backend, |conn| {
                    let result = statement::query(
                        "UPDATE schedules SET paused = $1, next_tick_at = COALESCE($2, next_tick_at), updated_at = $3 \
                         WHERE name = $4",
                    )
                    .bind(paused)
                    .bind(next_tick_at)
                    .bind(now)
                    .bind(name)
                    .execute(conn)
                    .await?;
                    Ok(result.rows_affected() == 1)
                })
            })
            .await?;
        if changed {
            self.announce("schedule:*").await?;
        }
        Ok(changed)
    }

    /// Deletes schedule `name` (the workflows it started stay); false if it did not exist.
    pub async fn delete_schedule(&self, name: &str) -> Result<bool, JournalError> {
        self.commit("delete of a schedule", || {
            with_conn!(&self.backend, |conn| {
                let result = statement::query("DELETE FROM schedules WHERE name = $1").bind(name).execute(conn).await?;
                Ok(result.rows_affected() == 1)
            })
        })
        .await
    }

    /// Fires the schedules due at `now`: for each (locked, so one worker
    /// fires it), the ticks `plan` decides, each starting its workflow unless
    /// a workflow of that tick exists, then the next tick.
    pub async fn fire_schedules(
        &self,
        now: Timestamp,
        plan: impl Fn(&ScheduleRecord) -> Firing,
    ) -> Result<Vec<Fired>, JournalError> {
        let backend = &self.backend;
        let due = format!(
            "SELECT {COLUMNS} FROM schedules WHERE NOT paused AND next_tick_at <= $1 ORDER BY next_tick_at LIMIT 16{}",
            backend.skip_locked()
        );
        self.commit("firing of schedules", || {
            with_conn!(backend, |conn| {
                let mut tx = begin_write!(backend, conn);
                let schedules: Vec<ScheduleRecord> =
                    statement::query_as(sqlx::AssertSqlSafe(due.clone())).bind(now).fetch_all(&mut *tx).await?;
                let mut fired = Vec::new();
                for schedule in &schedules {
                    let firing = plan(schedule);
                    // A template this version cannot read fires nothing (the schedule was set by another version).
                    let template: Option<ScheduleTemplate> = serde_json::from_value(schedule.template.clone()).ok();
                    let ticks = if template.is_some() { firing.ticks.as_slice() } else { &[] };
                    for tick in ticks {
                        let Some(template) = &template else { break };
                        let id = tick_workflow_id(&schedule.name, *tick);
                        let deadline = schedule
                            .timeout_ms
                            .map(|ms| tick.plus(std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))));
                        let stored = deployments::split(&template.options);
                        store_deployment!(tx, stored);
                        let inserted = statement::query(
                            "INSERT INTO workflows (id, name, component, component_digest, entry, input, input_json, \
                             status, options, queue, priority, run_at, deadline_at, schedule, scheduled_at, \
                             created_at, updated_at, deployment) VALUES ($1, $2, $3, $4, $5, $6, $7, 'enqueued', $8, \
                             $9, $10, $11, $12, $13, $14, $11, $11, $15) ON CONFLICT DO NOTHING",
                        )
                        .bind(&id)
                        .bind(&template.name)
                        .bind(&template.component)
                        .bind(&template.component_digest)
                        .bind(&template.entry)
                        .bind(&template.input)
                        .bind(&template.input_json)
                        .bind(&stored.own)
                        .bind(&schedule.queue)
                        .bind(schedule.priority)
                        .bind(now)
                        .bind(deadline)
                        .bind(&schedule.name)
                        .bind(*tick)
                        .bind(stored.digest.as_deref())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        fired.push(Fired {
                            schedule: schedule.name.clone(),
                            tick: *tick,
                            workflow_id: id,
                            started: inserted == 1,
                        });
                    }
                    statement::query(
                        "UPDATE schedules SET next_tick_at = $1, last_tick_at = COALESCE($2, last_tick_at) \
                         WHERE name = $3",
                    )
                    .bind(firing.next_tick_at)
                    .bind(firing.ticks.last().copied())
                    .bind(&schedule.name)
                    .execute(&mut *tx)
                    .await?;
                    if !firing.ticks.is_empty() {
                        notify(&mut *tx, &format!("submit:{}", schedule.queue)).await?;
                    }
                }
                tx.commit().await?;
                Ok(fired)
            })
        })
        .await
    }

    /// When the next unpaused schedule is due, if any.
    pub async fn next_tick(&self) -> Result<Option<Timestamp>, JournalError> {
        self.run("read of the next tick", || {
            with_conn!(&self.backend, |conn| {
                statement::query_scalar("SELECT min(next_tick_at) FROM schedules WHERE NOT paused")
                    .fetch_one(conn)
                    .await
            })
        })
        .await
    }
}
