//! The polyglot example: a Rust workflow calling a Python check, a JavaScript
//! API client and a C digest. The API step exhausts its retries and the
//! workflow falls back to a list price instead of failing.

wit_bindgen::generate!({
    world: "example:polyglot/polyglot",
    path: ["../../wit", "../../guest-steps/wit/polyglot.wit", "wit"],
    generate_all,
});

use guests::polyglot::api::{self, ApiError};
use guests::polyglot::{check, hash};
use stepbox::runtime::log::{Level, log};

/// What the order costs when the pricing service cannot say.
const LIST_PRICE_CENTS: u32 = 999;

struct Polyglot;

impl Guest for Polyglot {
    fn run(order: String) -> String {
        let valid = match check::check(&order) {
            Ok(valid) => valid,
            Err(error) => {
                log(Level::Error, &format!("check failed: {error:?}"));
                false
            }
        };
        if !valid {
            return format!("{order}: rejected");
        }
        let price = match api::quote(&order) {
            Ok(cents) => format!("{cents} cents"),
            Err(ApiError::RetriesExhausted(exhausted)) => {
                log(
                    Level::Warn,
                    &format!("pricing gave up after {} attempts; using the list price", exhausted.attempts),
                );
                format!("{LIST_PRICE_CENTS} cents (list price)")
            }
            Err(error) => {
                log(Level::Warn, &format!("pricing failed ({error:?}); using the list price"));
                format!("{LIST_PRICE_CENTS} cents (list price)")
            }
        };
        let digest = hash::digest(&order).map_or_else(|error| format!("{error:?}"), |digest| format!("{digest:016x}"));
        format!("{order}: valid, {price}, digest {digest}")
    }
}

export!(Polyglot);
