//! Captured guest output: keeps the first bytes up to a limit and counts the
//! rest, so a guest printing gigabytes costs memory only up to the limit and
//! its writes never fail.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Debug, Default)]
struct Buffer {
    kept: Vec<u8>,
    dropped: u64,
}

/// One guest stream (stdout or stderr); clones share the buffer.
#[derive(Debug, Clone)]
pub struct Capture {
    buffer: Arc<Mutex<Buffer>>,
    limit: usize,
}

impl Capture {
    /// A capture keeping at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { buffer: Arc::default(), limit }
    }

    fn push(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let room = self.limit.saturating_sub(buffer.kept.len());
        let kept = bytes.len().min(room);
        buffer.kept.extend_from_slice(&bytes[..kept]);
        buffer.dropped += u64::try_from(bytes.len() - kept).unwrap_or(u64::MAX);
    }

    /// What was kept, lossily decoded and trimmed, with a note of what was dropped.
    pub fn text(&self) -> String {
        let buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = String::from_utf8_lossy(&buffer.kept).trim().to_string();
        if buffer.dropped > 0 {
            text.push_str(&format!("\n[{} more bytes not kept: output limit {} bytes]", buffer.dropped, self.limit));
        }
        text
    }
}

/// The log bytes a guest may emit (`stepbox:runtime/log`): messages within
/// the budget are shown, later ones are counted and noted once.
#[derive(Debug)]
pub struct LogBudget {
    limit: u64,
    emitted: u64,
    dropped: u64,
}

impl LogBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self { limit, emitted: 0, dropped: 0 }
    }

    /// Whether a message of `bytes` may be shown; counts it either way.
    pub fn admit(&mut self, bytes: usize) -> bool {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        if self.dropped == 0 && self.emitted.saturating_add(bytes) <= self.limit {
            self.emitted += bytes;
            true
        } else {
            self.dropped = self.dropped.saturating_add(bytes);
            false
        }
    }

    /// The note of what was not shown, if anything was dropped.
    pub fn note(&self) -> Option<String> {
        (self.dropped > 0).then(|| {
            format!("[{} more bytes of log messages not shown: output limit {} bytes]", self.dropped, self.limit)
        })
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::{Capture, LogBudget};

    #[test]
    fn log_messages_past_the_budget_are_counted_not_shown() {
        let mut budget = LogBudget::new(10);
        assert!(budget.admit(6));
        assert!(!budget.admit(100 << 20));
        assert!(!budget.admit(1), "once over, the rest is dropped so lines never appear out of order");
        assert_eq!(budget.note().unwrap(), "[104857601 more bytes of log messages not shown: output limit 10 bytes]");
        assert_eq!(LogBudget::new(10).note(), None);
    }

    #[test]
    fn keeps_up_to_the_limit_and_counts_the_rest() {
        let capture = Capture::new(5);
        capture.push(b"hello world");
        capture.push(b"!!");
        assert_eq!(capture.text(), "hello\n[8 more bytes not kept: output limit 5 bytes]");
    }
}
