//! Who may talk to the server: the token (required off loopback), the
//! cross-site checks on every POST, and the headers every response carries
//! so that no other site can frame, script or sniff the dashboard.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::Shared;

/// The cookie a browser keeps the token in after opening `/?token=…` once.
const TOKEN_COOKIE: &str = "stepbox_token";

/// A bind the server refuses.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "refusing to serve on {bind} without a token: anyone who can reach it could read the journal and \
     cancel workflows. Pass --token (or set STEPBOX_TOKEN), or bind to 127.0.0.1"
)]
pub struct BindError {
    bind: SocketAddr,
}

/// Loopback needs nothing; any other address needs a non-empty token.
pub fn check_bind(bind: SocketAddr, token: Option<&str>) -> Result<(), BindError> {
    if bind.ip().is_loopback() || token.is_some_and(|token| !token.is_empty()) {
        Ok(())
    } else {
        Err(BindError { bind })
    }
}

/// A fresh random secret for the dashboard's forms.
pub fn new_secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Compares without stopping at the first difference, so timing does not tell how much of a guess was right.
pub fn same(presented: &str, expected: &str) -> bool {
    presented.len() == expected.len()
        && presented.bytes().zip(expected.bytes()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

/// Checks the token and, on POST, that the request does not come from another site.
pub async fn check(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let mut from_query = false;
    if let Some(expected) = state.token.as_deref() {
        let headers = request.headers();
        let query_token = query_token(request.uri().query());
        from_query = query_token.as_deref().is_some_and(|token| same(token, expected));
        let presented = bearer(headers).is_some_and(|token| same(token, expected))
            || cookie(headers, TOKEN_COOKIE).is_some_and(|token| same(token, expected))
            || from_query;
        if !presented {
            return refuse(
                api,
                StatusCode::UNAUTHORIZED,
                "this server needs its token: send `Authorization: Bearer TOKEN`, or open /?token=TOKEN once in a browser",
            );
        }
    }
    if state.token.is_none() && !loopback_host(request.headers()) {
        // Without a token only this machine may ask: a page of another site that renamed
        // itself to 127.0.0.1 (DNS rebinding) still sends its own name as Host.
        return refuse(
            api,
            StatusCode::MISDIRECTED_REQUEST,
            "without a token this server answers only requests to 127.0.0.1, [::1] or localhost; \
             start it with --token to reach it by another name",
        );
    }
    let upload = request.method() == Method::POST && request.uri().path() == super::UPLOAD_PATH;
    let (limit, limit_text) = if upload { (super::UPLOAD_LIMIT, "256 MiB") } else { (super::BODY_LIMIT, "64 KiB") };
    let declared = request.headers().get(CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        let message = format!("the request body is too large ({limit_text} at most)");
        return refuse(api, StatusCode::PAYLOAD_TOO_LARGE, &message);
    }
    if request.method() == Method::POST {
        if let Some(reason) = cross_site(request.headers()) {
            return refuse(api, StatusCode::FORBIDDEN, reason);
        }
        if upload && !body_is(request.headers(), &["application/wasm", "application/octet-stream"]) {
            return refuse(
                api,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a component is uploaded as its bytes, with `Content-Type: application/wasm`",
            );
        }
        if api && !upload && !body_is(request.headers(), &["application/json"]) {
            return refuse(
                api,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "API requests that change something take `Content-Type: application/json`",
            );
        }
    }
    // A page opened with `?token=`: the token goes into a cookie and out of the address bar (and history).
    if from_query && !api && request.method() == Method::GET {
        let mut response = Redirect::to(&without_token(request.uri())).into_response();
        if let Some(token) = state.token.as_deref() {
            let cookie = format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(SET_COOKIE, value);
            }
        }
        return response;
    }
    next.run(request).await
}

/// `uri` without its `token` query parameter.
fn without_token(uri: &axum::http::Uri) -> String {
    let kept: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("token="))
        .collect();
    if kept.is_empty() { uri.path().to_string() } else { format!("{}?{}", uri.path(), kept.join("&")) }
}

/// The Content-Security-Policy of every response: nothing but the pages'
/// own inline style and script (by hash), requests to this server, forms
/// posted to it, and no framing by anyone.
pub fn content_security_policy(style: &str, script: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = |text: &str| base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes()));
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; img-src data:; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        hash(script),
        hash(style)
    )
}

/// Adds the security headers to every response, refusals included.
pub async fn secure(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&state.csp) {
        headers.insert("content-security-policy", policy);
    }
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    // Not `no-referrer`: with it a browser sends `Origin: null` on the pages' own forms, which the cross-site check refuses.
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    response
}

/// Whether the request names this machine's loopback as its host (any port).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(HOST).and_then(|value| value.to_str().ok()) else { return false };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(name, _)| name),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    // Exactly the names the README gives (not every 127/8 address).
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1"
}

/// Why a POST looks cross-site (a browser always says where a request comes from), if it does.
fn cross_site(headers: &HeaderMap) -> Option<&'static str> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(site) = header("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Some("refused: this request came from another site");
    }
    match (headers.get(ORIGIN).and_then(|value| value.to_str().ok()), headers.get(HOST)) {
        (Some(origin), Some(host)) => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            (origin_host.as_bytes() != host.as_bytes()).then_some("refused: this request came from another origin")
        }
        _ => None,
    }
}

/// Whether the body's declared media type is one of `kinds`.
fn body_is(headers: &HeaderMap, kinds: &[&str]) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(';').next().is_some_and(|kind| kinds.contains(&kind.trim())))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

fn query_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes()).find(|(key, _)| key == "token").map(|(_, value)| value.into_owned())
}

/// A refusal: JSON for the API, text for pages.
fn refuse(api: bool, status: StatusCode, message: &str) -> Response {
    if api {
        let failure = crate::operate::Failure { error: message.to_string(), disposition: crate::Disposition::Refused };
        (status, axum::Json(failure)).into_response()
    } else {
        (status, message.to_string()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_serves_without_a_token() {
        assert!(check_bind("127.0.0.1:8080".parse().unwrap(), None).is_ok());
        assert!(check_bind("[::1]:8080".parse().unwrap(), None).is_ok());
        assert!(check_bind("0.0.0.0:8080".parse().unwrap(), None).is_err());
        assert!(check_bind("0.0.0.0:8080".parse().unwrap(), Some("")).is_err());
        assert!(check_bind("0.0.0.0:8080".parse().unwrap(), Some("s3cret")).is_ok());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abd", "abc"));
        assert!(!same("ab", "abc"));
    }

    #[test]
    fn posts_from_other_sites_are_told_apart() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert_eq!(cross_site(&headers), None, "curl sends neither Origin nor Sec-Fetch-Site");
        headers.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert_eq!(cross_site(&headers), None);
        headers.insert(ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(cross_site(&headers).is_some());
        headers.remove(ORIGIN);
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&headers).is_some());
    }

    #[test]
    fn without_a_token_only_loopback_names_are_answered() {
        let host = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(HOST, HeaderValue::from_static(value));
            loopback_host(&headers)
        };
        assert!(host("127.0.0.1:8080") && host("localhost:8080") && host("[::1]:8080") && host("127.0.0.1"));
        assert!(!host("evil.example:8080") && !host("10.0.0.1:8080") && !host("localhost.evil.example"));
        assert!(!host("127.0.0.2:8080"), "only the names the README gives");
        assert!(!loopback_host(&HeaderMap::new()), "no Host header");
    }

    #[test]
    fn a_token_in_the_address_is_dropped_and_the_rest_kept() {
        let uri = |text: &'static str| axum::http::Uri::from_static(text);
        assert_eq!(without_token(&uri("/?token=abc")), "/");
        assert_eq!(without_token(&uri("/?status=running&token=abc&limit=5")), "/?status=running&limit=5");
        assert_eq!(without_token(&uri("/workflows/a%20b?token=abc")), "/workflows/a%20b");
    }

    #[test]
    fn the_policy_allows_the_pages_own_script_and_style_only() {
        let policy = content_security_policy("body {}", "alert(1)");
        assert!(policy.contains("frame-ancestors 'none'") && policy.contains("default-src 'none'"), "{policy}");
        // echo -n 'alert(1)' | openssl dgst -sha256 -binary | base64
        assert!(policy.contains("script-src 'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"), "{policy}");
    }

    #[test]
    fn the_token_is_read_from_a_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; stepbox_token=xyz; b=2"));
        assert_eq!(cookie(&headers, TOKEN_COOKIE), Some("xyz"));
        assert_eq!(query_token(Some("status=running&token=a%20b")), Some("a b".into()));
    }
}
