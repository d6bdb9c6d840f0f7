//! Outbound HTTP for steps through `wasi:http`, only to the hosts a step's
//! grants list; any other request fails inside the guest with
//! `HTTP-request-denied`. Workflows are never linked with `wasi:http`.

use std::future::Future;

use http_body_util::BodyExt as _;
use wasmtime_wasi_http::{Error, RequestOptions, Result, WasiBody, WasiHttpHooks, default_send_request};

/// The hosts one attempt may reach: `host` (any port) or `host:port`.
#[derive(Debug, Clone, Default)]
pub struct HttpGrant {
    allowed: Vec<String>,
}

impl HttpGrant {
    /// A grant for exactly `allowed`.
    pub fn new(allowed: Vec<String>) -> Self {
        Self { allowed }
    }

    /// Whether a request to `authority` (`host[:port]`) is allowed.
    pub fn allows(&self, authority: &str) -> bool {
        let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
        self.allowed.iter().any(|entry| entry.eq_ignore_ascii_case(authority) || entry.eq_ignore_ascii_case(host))
    }
}

/// The response future `send_request` returns.
type Sent = Box<
    dyn Future<Output = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>)>> + Send,
>;

impl WasiHttpHooks for HttpGrant {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        drop(fut);
        let authority = request.uri().authority().map(|authority| authority.as_str().to_string()).unwrap_or_default();
        if !self.allows(&authority) {
            tracing::warn!(source = "host", "HTTP request to {authority:?} denied: not in the step's grants");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = default_send_request(request, options).await?;
            Ok((response.map(|body| body.boxed_unsync()), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::HttpGrant;

    #[test]
    fn hosts_match_with_or_without_a_port() {
        let grant = HttpGrant::new(vec!["api.example.com".into(), "127.0.0.1:8080".into()]);
        assert!(grant.allows("api.example.com"));
        assert!(grant.allows("API.example.com:443"));
        assert!(grant.allows("127.0.0.1:8080"));
        assert!(!grant.allows("127.0.0.1:8081"));
        assert!(!grant.allows("evil.example.com"));
        assert!(!HttpGrant::default().allows("api.example.com"));
    }
}
