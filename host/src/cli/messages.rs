//! Talking to running workflows: `host send` (a message a workflow's `recv`
//! takes) and `host event` (a value a workflow published with `set-event`).

use std::time::Duration;

use stepbox::journal::Journal;
use stepbox::operate::{self, Sender};

use crate::exit::{self, fail};
use crate::output::{self, Format};

/// `host send`.
pub async fn send(
    id: &str,
    topic: &str,
    value: &str,
    sender: &str,
    idempotency_key: Option<String>,
    journal: &str,
    format: Format,
) -> u8 {
    let journal = match Journal::open_existing(journal).await {
        Ok(journal) => journal,
        Err(error) => return fail(&error),
    };
    let sender = Sender { name: sender.to_string(), idempotency_key };
    match operate::send(&journal, id, topic, value, &sender).await {
        Ok(receipt) => {
            match format {
                Format::Json => output::json(&receipt),
                Format::Text if receipt.duplicate => output::line(&format!(
                    "message {} was sent to workflow {id} before with this idempotency key; nothing new was sent",
                    receipt.message
                )),
                Format::Text => output::line(&format!("sent message {} to workflow {id} on {topic}", receipt.message)),
            }
            0
        }
        Err(error) => fail(&error),
    }
}

/// `host event`: prints the value (JSON text); exit 3 if it is not published yet.
pub async fn event(id: &str, key: &str, wait: Option<Duration>, journal: &str, format: Format) -> u8 {
    let journal = match Journal::open_existing(journal).await {
        Ok(journal) => journal,
        Err(error) => return fail(&error),
    };
    // `--wait` with no duration waits for as long as it takes.
    let wait = wait.map_or(Duration::ZERO, |wait| if wait.is_zero() { Duration::MAX } else { wait });
    match operate::event(&journal, id, key, wait).await {
        Ok(Some(event)) => {
            match format {
                Format::Json => output::json(&event),
                Format::Text => output::line(&event.value_text),
            }
            0
        }
        Ok(None) => {
            output::error(&format!(
                "workflow {id} has not published {key:?} yet; `host event {id} {key} --wait` waits for it"
            ));
            exit::NOT_FINISHED
        }
        Err(error) => fail(&error),
    }
}
