//! A many-step workflow for crash recovery: every item is a step call; the
//! workflow draws a random nonce and reads the clock, which stepbox makes
//! deterministic so a replay takes the same path.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

wit_bindgen::generate!({
    world: "example:pipeline/pipeline",
    path: ["../../wit", "wit"],
    generate_all,
});

use example::pipeline::steps as pipeline_steps;
use exports::example::pipeline::steps::{Guest as Steps, StepError};
use stepbox::runtime::log::{Level, log};
use stepbox::runtime::step_context;

struct Pipeline;

impl Steps for Pipeline {
    fn process(item: u32, millis: u32, flaky: bool, _nonce: u64) -> Result<u32, StepError> {
        let attempt = step_context::status().map_or(1, |status| status.attempt);
        log(Level::Info, &format!("process item {item} attempt {attempt} started"));
        std::thread::sleep(Duration::from_millis(u64::from(millis)));
        if flaky && attempt == 1 {
            return Err(StepError::Failed(format!("item {item} is flaky on its first attempt")));
        }
        log(Level::Info, &format!("process item {item} attempt {attempt} done"));
        Ok(item * 2)
    }
}

impl Guest for Pipeline {
    fn run(items: u32, millis: u32) -> u64 {
        let random = RandomState::new().hash_one(items);
        let clock = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
        let nonce = random ^ clock;
        log(Level::Info, &format!("pipeline of {items} items, nonce {nonce}"));
        let mut sum = 0;
        for item in 1..=items {
            match pipeline_steps::process(item, millis, item % 3 == 0, nonce) {
                Ok(value) => sum += u64::from(value),
                Err(error) => log(Level::Error, &format!("item {item} gave up: {error:?}")),
            }
        }
        sum
    }
}

export!(Pipeline);
