//! Fans out step calls for the tests (see wit/fan-out.wit): many at once,
//! the first of several, and a fan-out with failures and retries.

wit_bindgen::generate!({
    world: "guests:fan-out/fan-out",
    path: ["../../../wit", "../../wit/hostile.wit", "../../wit/fan-out.wit"],
    generate_all,
});

use stepbox::runtime::workflow_context as workflow;

struct FanOut;

/// Starts one call; a refusal here is a bug of this guest.
fn start(step: &str, arguments: String) -> workflow::CallId {
    match workflow::start_call(step, &arguments) {
        Ok(call) => call,
        Err(error) => panic!("start-call {step}{arguments} refused: {error}"),
    }
}

/// How many `await-all` results are `ok`.
fn oks(results: &[String]) -> u32 {
    results.iter().filter(|result| result.starts_with("{\"ok\"")).count() as u32
}

/// A JSON string literal of `text`, which has no quotes or backslashes.
fn quoted(text: &str) -> String {
    format!("\"{text}\"")
}

/// How often call `index` fails before it succeeds: 0, 1 or 2, from `seed`.
fn failures(seed: u64, index: u32) -> u32 {
    let mut x = seed ^ (u64::from(index) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % 3) as u32
}

impl Guest for FanOut {
    fn spread(count: u32, ms: u64) -> u32 {
        let calls: Vec<_> = (0..count).map(|_| start("nap", format!("[{ms}]"))).collect();
        oks(&workflow::await_all(&calls))
    }

    fn race(naps: Vec<u64>, then_ms: u64) -> String {
        let calls: Vec<_> = naps.iter().map(|ms| start("nap", format!("[{ms}]"))).collect();
        let (index, result) = workflow::await_first(&calls);
        workflow::sleep(then_ms);
        format!("{index} {result}")
    }

    fn fan(dir: String, count: u32, seed: u64, ms: u64) -> u32 {
        let calls: Vec<_> = (0..count)
            .map(|index| {
                let tag = format!("call-{index}");
                start("logged-flaky", format!("[{}, {}, {}, {ms}]", quoted(&dir), quoted(&tag), failures(seed, index)))
            })
            .collect();
        oks(&workflow::await_all(&calls))
    }

    fn try_start(step: String, arguments: String) -> Result<String, String> {
        let call = workflow::start_call(&step, &arguments)?;
        Ok(workflow::await_all(&[call]).remove(0))
    }
}

export!(FanOut);
