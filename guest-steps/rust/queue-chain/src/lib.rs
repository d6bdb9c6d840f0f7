//! Chains `guests:flaky` and `guests:hostile` steps for the queue tests (see
//! wit/queue-chain.wit); any unexpected step result becomes the workflow's
//! error, so a test reading the output knows every call went right.

wit_bindgen::generate!({
    world: "guests:queue-chain/queue-chain",
    path: ["../../../wit", "../../wit/flaky.wit", "../../wit/hostile.wit", "wit"],
    generate_all,
});

use guests::{flaky, hostile};

struct Chain;

impl Guest for Chain {
    fn chain(tag: u32, calls: u32, fail_times: u32, nap_ms: u64) -> Result<u32, String> {
        let mut sum = 0;
        for call in 1..=calls {
            match flaky::steps::flaky(fail_times) {
                Ok(attempt) if attempt == fail_times + 1 => sum += attempt,
                other => return Err(format!("flaky call {call} returned {other:?}")),
            }
            if nap_ms > 0 {
                match hostile::steps::nap(nap_ms) {
                    Ok(ms) if ms == nap_ms => {}
                    other => return Err(format!("nap call {call} returned {other:?}")),
                }
            }
        }
        Ok(tag * 1000 + sum)
    }

    fn sleepy(ms: u64) -> Result<u64, String> {
        hostile::steps::nap(ms).map_err(|error| format!("{error:?}"))
    }

    fn logged(tag: String, dir: String, calls: u32, ms: u64) -> Result<u64, String> {
        let mut total = 0;
        for call in 1..=calls {
            total += hostile::steps::logged_nap(&dir, &format!("{tag}-{call}"), ms)
                .map_err(|error| format!("logged-nap call {call} returned {error:?}"))?;
        }
        Ok(total)
    }
}

export!(Chain);
