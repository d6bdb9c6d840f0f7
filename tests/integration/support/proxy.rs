//! A TCP proxy in front of PostgreSQL that cuts connections at the worst
//! moment: after the server completed a statement (so a write has
//! committed) and before the client hears so. The client sees a lost
//! connection and cannot know whether its write committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// A proxy to `127.0.0.1:upstream`, listening on its own port.
pub struct Proxy {
    pub port: u16,
    rate: Arc<AtomicUsize>,
    cuts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to the server on `upstream`.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("the proxy listens");
        let port = listener.local_addr().expect("an address").port();
        let rate = Arc::new(AtomicUsize::new(0));
        let cuts = Arc::new(AtomicUsize::new(0));
        // A seeded draw: the same cuts for the same statements, run after run.
        let draws = Arc::new(AtomicUsize::new(20_261_129));
        let (rate_task, cuts_task) = (rate.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { continue };
                let (rate, cuts, draws) = (rate_task.clone(), cuts_task.clone(), draws.clone());
                tokio::spawn(relay(client, server, rate, cuts, draws));
            }
        });
        Self { port, rate, cuts, task }
    }

    /// Cuts the connection after `percent` % of the completed statements (0: never).
    pub fn cut_rate(&self, percent: usize) {
        self.rate.store(percent, Ordering::SeqCst);
    }

    /// How many connections it has cut.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies client bytes to the server as they come; parses the server's
/// messages and, when a statement completed (`CommandComplete` then
/// `ReadyForQuery`) and it is time to cut, closes both sides instead of
/// answering.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    rate: Arc<AtomicUsize>,
    cuts: Arc<AtomicUsize>,
    draws: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut statement_done = false;
    'relay: loop {
        let read = match server_read.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        pending.extend_from_slice(&chunk[..read]);
        let mut forward = 0;
        // Whole messages only: a type byte and a big-endian length that counts itself.
        while pending.len() >= forward + 5 {
            let kind = pending[forward];
            let length = u32::from_be_bytes(pending[forward + 1..forward + 5].try_into().unwrap()) as usize;
            if pending.len() < forward + 1 + length {
                break;
            }
            match kind {
                b'C' => statement_done = true,
                b'Z' if statement_done => {
                    statement_done = false;
                    // A linear congruential draw in 0..100.
                    let draw = draws
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |x| {
                            Some(x.wrapping_mul(1_103_515_245).wrapping_add(12_345) % (1 << 31))
                        })
                        .unwrap_or(0);
                    if draw % 100 < rate.load(Ordering::SeqCst) {
                        cuts.fetch_add(1, Ordering::SeqCst);
                        break 'relay;
                    }
                }
                _ => {}
            }
            forward += 1 + length;
        }
        if client_write.write_all(&pending[..forward]).await.is_err() {
            break;
        }
        pending.drain(..forward);
    }
    upstream.abort();
    let _ = client_write.shutdown().await;
}
