//! What the CLI prints: text for people or JSON for programs on stdout, one
//! `error:` paragraph on stderr. A closed pipe (`host list | head -1`) ends
//! the printing quietly, never the process with a panic.

use std::io::{self, Write as _};

use serde::Serialize;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and plain values, for people.
    Text,
    /// One JSON document, for programs.
    Json,
}

/// Prints `text` to stdout as it is.
pub fn print(text: &str) {
    let mut stdout = io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Prints `line` and a newline to stdout.
pub fn line(line: &str) {
    print(&format!("{line}\n"));
}

/// Prints `value` as pretty JSON to stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => line(&text),
        Err(error) => self::error(&format!("cannot print JSON: {error}")),
    }
}

/// Prints `error: message` to stderr.
pub fn error(message: &str) {
    let _ = writeln!(io::stderr(), "error: {message}");
}
