//! A TCP proxy in front of PostgreSQL that plays a network partition: on
//! cue it holds every byte in both directions — no reset, no error, nothing
//! delivered — and on healing delivers what it held and goes on. New
//! connections made during the partition wait too.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy to `127.0.0.1:upstream`, listening on its own port.
pub struct Partition {
    pub port: u16,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Partition {
    /// Starts forwarding to the server on `upstream`.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("the proxy listens");
        let port = listener.local_addr().expect("an address").port();
        let (cut, _) = watch::channel(false);
        let cuts = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    if !healed(&mut cut).await {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pipe(client_read, server_write, cut.clone()));
                    pipe(server_read, client_write, cut).await;
                });
            }
        });
        Self { port, cut, task }
    }

    /// From now on, nothing gets through in either direction.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Delivers what was held, and everything after it.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    /// `url` with its port replaced by the proxy's.
    pub fn url(&self, url: &str, port: u16) -> String {
        url.replacen(&format!(":{port}/"), &format!(":{}/", self.port), 1)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.cut.send_replace(false);
        self.task.abort();
    }
}

/// Waits while the network is cut; false once the proxy is gone.
async fn healed(cut: &mut watch::Receiver<bool>) -> bool {
    while *cut.borrow_and_update() {
        if cut.changed().await.is_err() {
            return false;
        }
    }
    true
}

/// Copies `from` to `to`, holding whatever it has read while the network is cut.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut cut: watch::Receiver<bool>) {
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        if !healed(&mut cut).await {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut chunk) => read,
            // Cut while waiting for bytes: wait for the heal before reading on.
            Ok(()) = cut.changed() => continue,
        };
        let read = match read {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if !healed(&mut cut).await || to.write_all(&chunk[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
