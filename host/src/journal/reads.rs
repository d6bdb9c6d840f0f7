//! Reading the journal: a workflow, its calls, attempts and events, lists
//! with filters and keyset pagination, and the workflows nobody runs.

use super::{
    AttemptRecord, EventRecord, Journal, JournalError, StepCallRecord, Timestamp, WorkflowFilter, WorkflowHistory,
    WorkflowRecord, WorkflowStatus, attempt_columns, call_columns, statement, with_conn, workflow_columns_on,
};

impl Journal {
    /// The workflow `id`, if it was ever started.
    pub async fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>, JournalError> {
        let sql = format!("SELECT {} FROM workflows WHERE id = $1", workflow_columns_on(self.backend.kind()));
        self.run("read of a workflow", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(id).fetch_optional(conn).await
            })
        })
        .await
    }

    /// The workflow `id` with its calls, attempts, events, messages and published values.
    pub async fn history(&self, id: &str) -> Result<Option<WorkflowHistory>, JournalError> {
        let Some(workflow) = self.workflow(id).await? else { return Ok(None) };
        let calls = self.step_calls(id).await?;
        let attempts = self.attempts(id).await?;
        let events = self.events(id).await?;
        let messages = self.messages(id).await?;
        let published = self.published_events(id).await?;
        let children = self.children(id).await?;
        let history = WorkflowHistory::new(workflow, calls, attempts, events);
        Ok(Some(WorkflowHistory { messages, published, children, ..history }))
    }

    /// The step calls of a workflow, in call order.
    pub async fn step_calls(&self, workflow_id: &str) -> Result<Vec<StepCallRecord>, JournalError> {
        self.run("read of step calls", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(concat!(
                    "SELECT ",
                    call_columns!(),
                    " FROM step_calls WHERE workflow_id = $1 ORDER BY seq"
                ))
                .bind(workflow_id)
                .fetch_all(conn)
                .await
            })
        })
        .await
    }

    /// Every attempt of a workflow, by call and attempt number.
    pub async fn attempts(&self, workflow_id: &str) -> Result<Vec<AttemptRecord>, JournalError> {
        self.run("read of attempts", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(concat!(
                    "SELECT ",
                    attempt_columns!(),
                    " FROM step_attempts WHERE workflow_id = $1 ORDER BY seq, attempt"
                ))
                .bind(workflow_id)
                .fetch_all(conn)
                .await
            })
        })
        .await
    }

    /// The attempts of step call `seq`, in order.
    pub async fn call_attempts(&self, workflow_id: &str, seq: i64) -> Result<Vec<AttemptRecord>, JournalError> {
        self.run("read of attempts", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(concat!(
                    "SELECT ",
                    attempt_columns!(),
                    " FROM step_attempts WHERE workflow_id = $1 AND seq = $2 ORDER BY attempt"
                ))
                .bind(workflow_id)
                .bind(seq)
                .fetch_all(conn)
                .await
            })
        })
        .await
    }

    /// A workflow's events, oldest first.
    pub async fn events(&self, workflow_id: &str) -> Result<Vec<EventRecord>, JournalError> {
        self.run("read of events", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(
                    "SELECT at, kind, detail, executor FROM workflow_events WHERE workflow_id = $1 ORDER BY id",
                )
                .bind(workflow_id)
                .fetch_all(conn)
                .await
            })
        })
        .await
    }

    /// Workflows matching `filter`, newest first.
    pub async fn list_workflows(&self, filter: &WorkflowFilter) -> Result<Vec<WorkflowRecord>, JournalError> {
        let select = format!("SELECT {} FROM workflows WHERE true", workflow_columns_on(self.backend.kind()));
        self.run("list of workflows", || {
            with_conn!(&self.backend, |conn| {
                let mut query = sqlx::QueryBuilder::new(select.clone());
                if let Some(status) = filter.status {
                    query.push(" AND status = ").push_bind(status);
                }
                if let Some(name) = &filter.name {
                    query.push(" AND name = ").push_bind(name);
                }
                if let Some(queue) = &filter.queue {
                    query.push(" AND queue = ").push_bind(queue);
                }
                if let Some(prefix) = &filter.id_prefix {
                    query.push(" AND substr(id, 1, ").push_bind(i64::try_from(prefix.len()).unwrap_or(0));
                    query.push(") = ").push_bind(prefix);
                }
                if let Some(after) = filter.created_after {
                    query.push(" AND created_at >= ").push_bind(after);
                }
                if let Some(before) = filter.created_before {
                    query.push(" AND created_at < ").push_bind(before);
                }
                if let Some((created_at, id)) = &filter.after {
                    // A row comparison, so the (created_at DESC, id DESC) index serves deep pages too.
                    query.push(" AND (created_at, id) < (").push_bind(*created_at);
                    query.push(", ").push_bind(id);
                    query.push(")");
                }
                query.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(i64::from(filter.limit));
                query.build_query_as().persistent(statement::persistent()).fetch_all(conn).await
            })
        })
        .await
    }

    /// Running workflows nobody holds a live lease on: interrupted, free to resume.
    pub async fn interrupted_workflows(&self) -> Result<Vec<String>, JournalError> {
        let sql = format!(
            "SELECT id FROM workflows WHERE status = 'running' AND queue IS NULL AND {} ORDER BY created_at, id",
            super::leases::lapsed(&self.backend)
        );
        self.run("read of interrupted workflows", || {
            with_conn!(&self.backend, |conn| {
                statement::query_scalar(sqlx::AssertSqlSafe(sql.clone())).fetch_all(conn).await
            })
        })
        .await
    }
}

/// What `/metrics` reads from the journal at a scrape: workflows by status
/// and queue, and the oldest due workflow of each queue. Two grouped reads,
/// whatever the number of workflows (an index serves each).
#[derive(Debug, Clone, Default)]
pub struct JournalCounts {
    /// (status, queue or "", count).
    pub by_status: Vec<(WorkflowStatus, String, i64)>,
    /// (queue, since when its oldest due workflow waits).
    pub oldest_ready: Vec<(String, Timestamp)>,
}

impl Journal {
    /// The counts `/metrics` exports.
    pub async fn counts(&self) -> Result<JournalCounts, JournalError> {
        let now = Timestamp::now();
        self.run("read of counts", || {
            with_conn!(&self.backend, |conn| {
                let by_status: Vec<(WorkflowStatus, String, i64)> = statement::query_as(
                    "SELECT status, COALESCE(queue, ''), count(*) FROM workflows GROUP BY status, queue",
                )
                .fetch_all(&mut *conn)
                .await?;
                let oldest_ready: Vec<(String, Timestamp)> = statement::query_as(
                    "SELECT queue, min(run_at) FROM workflows WHERE queue IS NOT NULL \
                     AND status IN ('enqueued', 'delayed', 'waiting') AND run_at <= $1 GROUP BY queue",
                )
                .bind(now)
                .fetch_all(&mut *conn)
                .await?;
                Ok(JournalCounts { by_status, oldest_ready })
            })
        })
        .await
    }
}
