//! Exercises `stepbox:runtime/workflow-context` for the tests (see
//! wit/waiter.wit): each entry returns what it saw, so a test can check
//! sleeps, messages and events from the workflow's side.

wit_bindgen::generate!({
    world: "guests:waiter/waiter",
    path: ["../../../wit", "../../wit/flaky.wit", "wit"],
    generate_all,
});

use std::time::{SystemTime, UNIX_EPOCH};

use guests::flaky::steps as flaky;
use stepbox::runtime::workflow_context as workflow;

struct Waiter;

/// The workflow's wall clock (the host moves it on as its waits end).
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// A JSON string literal.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Guest for Waiter {
    fn nap(ms: u64) -> u64 {
        let before = now_ms();
        workflow::sleep(ms);
        now_ms() - before
    }

    fn approval(topic: String, timeout_ms: u64) -> String {
        match workflow::recv(&topic, timeout_ms) {
            Some(message) => message.value,
            None => "timeout".to_string(),
        }
    }

    fn collect(topic: String, count: u32, timeout_ms: u64) -> Vec<String> {
        (0..count)
            .map(|_| workflow::recv(&topic, timeout_ms).map_or_else(|| "timeout".to_string(), |message| message.value))
            .collect()
    }

    fn progress(steps: u32, ms: u64) -> u32 {
        for done in 1..=steps {
            workflow::sleep(ms);
            let value = format!("{{\"done\": {done}, \"of\": {steps}}}");
            if let Err(error) = workflow::set_event("progress", &value) {
                panic!("set-event refused valid JSON: {error}");
            }
        }
        let _ = workflow::set_event("result", "\"done\"");
        steps
    }

    fn relay(to: String, topic: String, value: String) -> Result<(), String> {
        workflow::send(&to, &topic, &value)
    }

    fn publish(key: String, value: String) -> Result<(), String> {
        workflow::set_event(&key, &value)
    }

    fn whoami() -> String {
        let info = workflow::info();
        let queue = info.queue.as_deref().map_or_else(|| "null".to_string(), quoted);
        let scheduled = info.scheduled.map_or_else(
            || "null".to_string(),
            |tick| format!("{{\"schedule\": {}, \"tick_ms\": {}}}", quoted(&tick.schedule), tick.tick_ms),
        );
        format!(
            "{{\"id\": {}, \"name\": {}, \"queue\": {queue}, \"started_at_ms\": {}, \"scheduled\": {scheduled}, \
             \"clock_ms\": {}}}",
            quoted(&info.id),
            quoted(&info.name),
            info.started_at_ms,
            now_ms()
        )
    }

    fn errand(ms: u64, timeout_ms: u64) -> Result<String, String> {
        workflow::sleep(ms);
        let go = workflow::recv("go", timeout_ms).map_or_else(|| "timeout".to_string(), |message| message.value);
        let attempt = flaky::flaky(1).map_err(|error| format!("flaky: {error:?}"))?;
        Ok(format!("go={go} flaky={attempt}"))
    }
}

export!(Waiter);
