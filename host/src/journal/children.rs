//! Child workflows: a workflow's `start-child` submits another workflow to a
//! queue with its parent recorded; a child's end wakes a parent waiting for
//! it; cancelling a parent cancels the children it did not detach.

use sqlx::Connection as _;

use super::deployments::{self, store_deployment};
use super::notify::notify;
use super::queue::LIVE;
use super::waits::{begin_write, fenced};
use super::{ChildRecord, Journal, JournalError, Lease, NewSubmission, Timestamp, statement, with_conn};

/// What `start_child` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildStart {
    /// The child is in its queue (or was already, from an earlier try of the same start).
    Started,
    /// The id belongs to a workflow this parent did not start.
    IdTaken,
}

impl Journal {
    /// Submits `child` to its queue as a child of the workflow `lease` holds
    /// (detached: not awaited, not cancelled with it), under that lease.
    pub async fn start_child(
        &self,
        lease: &Lease,
        child: &NewSubmission,
        detached: bool,
    ) -> Result<ChildStart, JournalError> {
        let backend = &self.backend;
        let workflow = &child.workflow;
        let stored = deployments::split(&workflow.options);
        let started: Option<ChildStart> = self
            .commit("start of a child workflow", || {
                with_conn!(backend, |conn| {
                    let mut tx = begin_write!(backend, conn);
                    if !fenced!(backend, tx, lease) {
                        return Ok(None);
                    }
                    store_deployment!(tx, stored);
                    let inserted = statement::query(
                        "INSERT INTO workflows (id, name, component, component_digest, entry, input, input_json, \
                         status, options, queue, priority, run_at, created_at, updated_at, parent_id, \
                         parent_detached, deployment) VALUES ($1, $2, $3, $4, $5, $6, $7, 'enqueued', $8, $9, $10, \
                         $11, $12, $12, $13, $14, $15) ON CONFLICT DO NOTHING",
                    )
                    .bind(&workflow.id)
                    .bind(&workflow.name)
                    .bind(&workflow.component)
                    .bind(&workflow.component_digest)
                    .bind(&workflow.entry)
                    .bind(&workflow.input)
                    .bind(&workflow.input_json)
                    .bind(&stored.own)
                    .bind(&child.queue)
                    .bind(child.priority)
                    .bind(child.run_at)
                    .bind(workflow.created_at)
                    .bind(&lease.workflow_id)
                    .bind(detached)
                    .bind(stored.digest.as_deref())
                    .execute(&mut *tx)
                    .await?;
                    let outcome = if inserted.rows_affected() == 1 {
                        notify(&mut *tx, &format!("submit:{}", child.queue)).await?;
                        ChildStart::Started
                    } else {
                        // The same start again (after a crash or an unknown commit outcome) is no conflict.
                        let parent: Option<Option<String>> =
                            statement::query_scalar("SELECT parent_id FROM workflows WHERE id = $1")
                                .bind(&workflow.id)
                                .fetch_optional(&mut *tx)
                                .await?;
                        match parent {
                            Some(Some(parent)) if parent == lease.workflow_id => ChildStart::Started,
                            _ => ChildStart::IdTaken,
                        }
                    };
                    tx.commit().await?;
                    Ok(Some(outcome))
                })
            })
            .await?;
        started.ok_or_else(|| self.not_owner(lease))
    }

    /// The workflows `parent` started, oldest first.
    pub async fn children(&self, parent: &str) -> Result<Vec<ChildRecord>, JournalError> {
        let sql = "SELECT id, entry, status, parent_detached, created_at, finished_at FROM workflows \
                   WHERE parent_id = $1 ORDER BY created_at, id";
        self.run("read of child workflows", || {
            with_conn!(&self.backend, |conn| statement::query_as(sql).bind(parent).fetch_all(conn).await)
        })
        .await
    }

    /// Wakes the parent of workflow `child`, which has just ended, if it
    /// waits for it: a parked parent is enqueued again (its workers told), a
    /// running one hears of it (NOTIFY `message:PARENT`). A wake lost to a
    /// crash costs only time: a parent waiting for a child looks again now and then.
    async fn wake_parent(&self, child: &str) -> Result<(), JournalError> {
        self.commit("wake-up of a parent workflow", || {
            with_conn!(&self.backend, |conn| {
                let mut tx = conn.begin().await?;
                let parent: Option<(Option<String>, bool)> =
                    statement::query_as("SELECT parent_id, parent_detached FROM workflows WHERE id = $1")
                        .bind(child)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some((Some(parent), false)) = parent {
                    let now = Timestamp::now();
                    let woken: Option<Option<String>> = statement::query_scalar(
                        "UPDATE workflows SET status = 'enqueued', run_at = $1, waiting_for = NULL, \
                         wait_topic = NULL, updated_at = $1 WHERE id = $2 AND status = 'waiting' \
                         AND waiting_for = 'child' AND wait_topic = $3 RETURNING queue",
                    )
                    .bind(now)
                    .bind(&parent)
                    .bind(child)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match woken {
                        Some(Some(queue)) => notify(&mut *tx, &format!("submit:{queue}")).await?,
                        _ => notify(&mut *tx, &format!("message:{parent}")).await?,
                    }
                }
                tx.commit().await?;
                Ok(())
            })
        })
        .await
    }

    /// [`Journal::wake_parent`] after `child` ended; a failure is only said
    /// (the parent looks again by itself).
    pub(super) async fn woke_parent(&self, child: &str) {
        if let Err(error) = self.wake_parent(child).await {
            tracing::warn!(
                source = "host",
                "workflow {child} ended, but its parent could not be told at once: {error}"
            );
        }
    }

    /// The live children of `parent` that go with it (not detached), and
    /// theirs, for a cancel to reach them all.
    pub(super) async fn attached_descendants(&self, parent: &str) -> Result<Vec<String>, JournalError> {
        let sql =
            format!("SELECT id FROM workflows WHERE parent_id = $1 AND NOT parent_detached AND status IN ({LIVE})");
        let mut found = Vec::new();
        let mut parents = vec![parent.to_string()];
        while let Some(parent) = parents.pop() {
            let children: Vec<String> = self
                .run("read of child workflows", || {
                    with_conn!(&self.backend, |conn| {
                        statement::query_scalar(sqlx::AssertSqlSafe(sql.clone())).bind(&parent).fetch_all(conn).await
                    })
                })
                .await?;
            for child in children {
                if !found.contains(&child) {
                    parents.push(child.clone());
                    found.push(child);
                }
            }
        }
        Ok(found)
    }
}
