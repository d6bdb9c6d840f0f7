//! Messages sent to workflows and the values workflows publish: a send
//! (from outside, or a workflow's own, journaled with its call), a `recv`
//! that takes the next message of a topic once, and `set-event` values read
//! while a workflow runs and after it ends.

use serde::Serialize;

use super::notify::notify;
use super::waits::{NewOperation, begin_write, fenced, write_ended};
use super::{Journal, JournalError, Lease, Timestamp, WorkflowStatus, statement, with_conn};

/// A message to hand to a workflow.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The recipient.
    pub workflow_id: String,
    pub topic: String,
    /// JSON text (checked by the caller).
    pub value: String,
    /// The sending workflow's id, or what an outside sender called itself.
    pub sender: String,
    /// A repeated key (per recipient) is accepted once.
    pub idempotency_key: Option<String>,
}

/// A workflow's own send: the operation that sends, written (ended) with
/// the message, under the workflow's lease.
#[derive(Debug, Clone, Copy)]
pub struct SendCall<'a> {
    pub lease: &'a Lease,
    pub operation: &'a NewOperation,
}

/// What a send did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "sent", rename_all = "kebab-case")]
pub enum Sent {
    /// Handed over; the workflow receives it with its next `recv` on the topic.
    Delivered { id: i64 },
    /// A message with this idempotency key was sent before: nothing new.
    Duplicate { id: i64 },
    /// No such workflow.
    Unknown,
    /// The workflow has ended: nobody will receive it.
    Ended { status: WorkflowStatus },
    /// The sending call had ended already (a retried write): what it recorded.
    #[serde(skip)]
    Recorded { output_json: Option<serde_json::Value> },
}

/// A message row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MessageRecord {
    pub id: i64,
    pub topic: String,
    /// JSON text as sent.
    pub value: String,
    pub sender: String,
    pub idempotency_key: Option<String>,
    pub sent_at: Timestamp,
    /// The `recv` call that received it; `None` until then.
    pub received_seq: Option<i64>,
    pub received_at: Option<Timestamp>,
}

/// A value a workflow published with `set-event`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PublishedEvent {
    pub key: String,
    /// JSON text.
    pub value: String,
    /// The `set-event` call that set it.
    pub seq: i64,
    pub set_at: Timestamp,
}

/// A `recv` call's result as journaled.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// The call had ended already (a retried write): what it recorded.
    Recorded { output_json: Option<serde_json::Value> },
    /// It took this message (and ended).
    Message(MessageRecord),
    /// No message on the topic yet; the call goes on.
    Nothing,
}

/// A message's recipient as a send finds it: status, what it waits for, on which topic, its queue.
type Recipient = (WorkflowStatus, Option<String>, Option<String>, Option<String>);

const MESSAGE_COLUMNS: &str = "id, topic, value, sender, idempotency_key, sent_at, received_seq, received_at";

impl Journal {
    /// Sends `message`. From a workflow (`call`), under its lease: the call
    /// ends in the same transaction with `output(outcome)` (a retried write
    /// finds it ended and sends nothing again). A recipient waiting for this
    /// topic is woken; its holder hears of it at once (NOTIFY).
    pub async fn send_message(
        &self,
        message: &NewMessage,
        call: Option<SendCall<'_>>,
        output: impl Fn(&Sent) -> (String, serde_json::Value),
    ) -> Result<Sent, JournalError> {
        let backend = &self.backend;
        let recipient = format!(
            "SELECT status, waiting_for, wait_topic, queue FROM workflows WHERE id = $1{}",
            backend.for_update()
        );
        let sent: Option<Sent> = self
            .commit("send of a message", || {
                with_conn!(backend, |conn| {
                    let mut tx = begin_write!(backend, conn);
                    if let Some(call) = call {
                        if !fenced!(backend, tx, call.lease) {
                            return Ok(None);
                        }
                        let ended: Option<Option<serde_json::Value>> = statement::query_scalar(
                            "SELECT output_json FROM step_calls WHERE workflow_id = $1 AND seq = $2 \
                             AND status <> 'running'",
                        )
                        .bind(&call.lease.workflow_id)
                        .bind(call.operation.seq)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(output_json) = ended {
                            return Ok(Some(Sent::Recorded { output_json }));
                        }
                    }
                    let target: Option<Recipient> = statement::query_as(sqlx::AssertSqlSafe(recipient.clone()))
                        .bind(&message.workflow_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let sent = match &target {
                        None => Sent::Unknown,
                        Some((status, ..)) if status.is_final() => Sent::Ended { status: *status },
                        Some((_, waiting_for, wait_topic, queue)) => {
                            let earlier: Option<i64> = match &message.idempotency_key {
                                Some(key) => {
                                    statement::query_scalar(
                                        "SELECT id FROM messages WHERE workflow_id = $1 AND idempotency_key = $2",
                                    )
                                    .bind(&message.workflow_id)
                                    .bind(key)
                                    .fetch_optional(&mut *tx)
                                    .await?
                                }
                                None => None,
                            };
                            match earlier {
                                Some(id) => Sent::Duplicate { id },
                                None => {
                                    let id: i64 = statement::query_scalar(
                                        "INSERT INTO messages (workflow_id, topic, value, sender, idempotency_key, \
                                         sent_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                                    )
                                    .bind(&message.workflow_id)
                                    .bind(&message.topic)
                                    .bind(&message.value)
                                    .bind(&message.sender)
                                    .bind(&message.idempotency_key)
                                    .bind(Timestamp::now())
                                    .fetch_one(&mut *tx)
                                    .await?;
                                    let waits_for_it = waiting_for.as_deref() == Some("message")
                                        && wait_topic.as_deref() == Some(message.topic.as_str());
                                    if waits_for_it {
                                        statement::query(
                                            "UPDATE workflows SET status = 'enqueued', run_at = $1, \
                                             waiting_for = NULL, wait_topic = NULL, updated_at = $1 \
                                             WHERE id = $2 AND status = 'waiting'",
                                        )
                                        .bind(Timestamp::now())
                                        .bind(&message.workflow_id)
                                        .execute(&mut *tx)
                                        .await?;
                                        if let Some(queue) = queue {
                                            notify(&mut *tx, &format!("submit:{queue}")).await?;
                                        }
                                    } else {
                                        notify(&mut *tx, &format!("message:{}", message.workflow_id)).await?;
                                    }
                                    Sent::Delivered { id }
                                }
                            }
                        }
                    };
                    if let Some(call) = call {
                        let (wave, json) = output(&sent);
                        write_ended!(tx, call.lease, call.operation, &wave, &json);
                    }
                    tx.commit().await?;
                    Ok(Some(sent))
                })
            })
            .await?;
        match (sent, call) {
            (Some(sent), _) => Ok(sent),
            (None, Some(call)) => Err(self.not_owner(call.lease)),
            (None, None) => {
                Err(JournalError::NotOwner { location: self.location.to_string(), id: message.workflow_id.clone() })
            }
        }
    }

    /// Takes the oldest message on `topic` not yet received by workflow
    /// `lease`'s `recv` call `seq`, and ends that call with it (`output`
    /// renders it), in one transaction under the lease. A call that ended
    /// already (a retried write) takes nothing and says so.
    pub async fn receive(
        &self,
        lease: &Lease,
        seq: i64,
        topic: &str,
        output: impl Fn(&MessageRecord) -> (String, serde_json::Value),
    ) -> Result<Received, JournalError> {
        let backend = &self.backend;
        let oldest = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE workflow_id = $1 AND topic = $2 AND received_seq IS NULL \
             ORDER BY id LIMIT 1"
        );
        let received: Option<Received> = self
            .commit("receipt of a message", || {
                with_conn!(backend, |conn| {
                    let mut tx = begin_write!(backend, conn);
                    if !fenced!(backend, tx, lease) {
                        return Ok(None);
                    }
                    let ended: Option<Option<serde_json::Value>> = statement::query_scalar(
                        "SELECT output_json FROM step_calls WHERE workflow_id = $1 AND seq = $2 AND status <> 'running'",
                    )
                    .bind(&lease.workflow_id)
                    .bind(seq)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(output_json) = ended {
                        return Ok(Some(Received::Recorded { output_json }));
                    }
                    let message: Option<MessageRecord> = statement::query_as(sqlx::AssertSqlSafe(oldest.clone()))
                        .bind(&lease.workflow_id)
                        .bind(topic)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some(mut message) = message else {
                        return Ok(Some(Received::Nothing));
                    };
                    let now = Timestamp::now();
                    statement::query("UPDATE messages SET received_seq = $1, received_at = $2 WHERE id = $3")
                        .bind(seq)
                        .bind(now)
                        .bind(message.id)
                        .execute(&mut *tx)
                        .await?;
                    message.received_seq = Some(seq);
                    message.received_at = Some(now);
                    let (wave, json) = output(&message);
                    statement::query(
                        "UPDATE step_calls SET status = 'succeeded', output = $1, output_json = $2, finished_at = $3 \
                         WHERE workflow_id = $4 AND seq = $5",
                    )
                    .bind(wave)
                    .bind(json)
                    .bind(now)
                    .bind(&lease.workflow_id)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(Some(Received::Message(message)))
                })
            })
            .await?;
        received.ok_or_else(|| self.not_owner(lease))
    }

    /// Publishes `value` under `key` for workflow `lease` and writes its
    /// `set-event` call, ended, in one transaction under the lease.
    pub async fn set_event(
        &self,
        lease: &Lease,
        operation: &NewOperation,
        key: &str,
        value: &str,
    ) -> Result<(), JournalError> {
        let backend = &self.backend;
        let done: bool = self
            .commit("publish of an event", || {
                with_conn!(backend, |conn| {
                    let mut tx = begin_write!(backend, conn);
                    if !fenced!(backend, tx, lease) {
                        return Ok(false);
                    }
                    statement::query(
                        "INSERT INTO published_events (workflow_id, key, value, seq, set_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (workflow_id, key) DO UPDATE SET value = excluded.value, seq = excluded.seq, \
                         set_at = excluded.set_at WHERE published_events.seq <= excluded.seq",
                    )
                    .bind(&lease.workflow_id)
                    .bind(key)
                    .bind(value)
                    .bind(operation.seq)
                    .bind(Timestamp::now())
                    .execute(&mut *tx)
                    .await?;
                    write_ended!(tx, lease, operation, "ok", &serde_json::json!({ "ok": null }));
                    notify(&mut *tx, &format!("event:{}", lease.workflow_id)).await?;
                    tx.commit().await?;
                    Ok(true)
                })
            })
            .await?;
        if done { Ok(()) } else { Err(self.not_owner(lease)) }
    }

    /// The value workflow `id` published under `key`, if any.
    pub async fn event(&self, id: &str, key: &str) -> Result<Option<PublishedEvent>, JournalError> {
        self.run("read of an event", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(
                    "SELECT key, value, seq, set_at FROM published_events WHERE workflow_id = $1 AND key = $2",
                )
                .bind(id)
                .bind(key)
                .fetch_optional(conn)
                .await
            })
        })
        .await
    }

    /// Every value workflow `id` published, by key.
    pub async fn published_events(&self, id: &str) -> Result<Vec<PublishedEvent>, JournalError> {
        self.run("read of events", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(
                    "SELECT key, value, seq, set_at FROM published_events WHERE workflow_id = $1 ORDER BY key",
                )
                .bind(id)
                .fetch_all(conn)
                .await
            })
        })
        .await
    }

    /// Every message sent to workflow `id`, in the order sent.
    pub async fn messages(&self, id: &str) -> Result<Vec<MessageRecord>, JournalError> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE workflow_id = $1 ORDER BY id");
        self.run("read of messages", || {
            with_conn!(&self.backend, |conn| {
                statement::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(id).fetch_all(conn).await
            })
        })
        .await
    }
}
