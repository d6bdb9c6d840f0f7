//! `host serve`: the dashboard and the JSON API over a journal, until
//! SIGINT or SIGTERM.

use std::net::SocketAddr;

use clap::Args;
use stepbox::journal::Journal;
use stepbox::server::{self, ServeError};
use tokio::signal::unix::{SignalKind, signal};

use crate::{exit, output};

/// Where and how `host serve` listens.
#[derive(Args)]
pub struct ServeArgs {
    /// Where to listen (port 0 picks a free one); anything but loopback needs --token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Required on every request: `Authorization: Bearer TOKEN`, or `/?token=TOKEN` once in a browser.
    #[arg(long, env = "STEPBOX_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `host serve`: prints the address it serves on, then serves until stopped.
pub async fn serve(args: ServeArgs, journal: &str) -> u8 {
    // It takes submissions, so like a worker it creates the journal if there is none yet (and says so: a typo shows).
    let opened = match Journal::open_existing(journal).await {
        Ok(journal) => Ok(journal),
        Err(_) => Journal::open(journal).await.inspect(|created| {
            tracing::warn!(
                source = "host",
                "No journal at {} yet: created an empty one (check --journal if you expected workflows there)",
                created.location()
            );
        }),
    };
    let journal = match opened {
        Ok(journal) => journal,
        Err(error) => {
            output::error(&error.to_string());
            return exit::USAGE;
        }
    };
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        output::error("cannot watch for signals");
        return exit::USAGE;
    };
    let shutdown = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    let location = journal.location().to_string();
    let ready = |address: SocketAddr| {
        tracing::info!(source = "host", "Serving the journal {location} at http://{address}/ (API under /api/v1)");
        output::line(&format!("http://{address}/"));
    };
    match server::serve(journal, args.bind, args.token, shutdown, ready).await {
        Ok(()) => 0,
        Err(error @ (ServeError::Bind(_) | ServeError::Listen { .. })) => {
            output::error(&error.to_string());
            exit::USAGE
        }
        Err(error) => {
            output::error(&error.to_string());
            exit::FAILED
        }
    }
}

/// Serves the dashboard of `journal` on `bind` in the background (`host worker --serve`); says why not.
pub async fn spawn(
    journal: Journal,
    bind: SocketAddr,
    token: Option<String>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    server::check_bind(bind, token.as_deref()).map_err(|error| error.to_string())?;
    let listener =
        tokio::net::TcpListener::bind(bind).await.map_err(|error| format!("cannot listen on {bind}: {error}"))?;
    let location = journal.location().to_string();
    Ok(tokio::spawn(async move {
        let ready = |address: SocketAddr| {
            tracing::info!(source = "host", "Serving the journal {location} at http://{address}/ (API under /api/v1)");
        };
        if let Err(error) = server::serve_on(journal, listener, token, std::future::pending(), ready).await {
            tracing::error!(source = "host", "the dashboard stopped: {error}");
        }
    }))
}
