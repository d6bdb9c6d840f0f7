//! The dashboard in a real browser: Debian's headless Chromium driven
//! through ChromeDriver (WebDriver) with fantoccini. A workflow's page
//! shows its attempts appear and its backoff count down without a reload,
//! cancels it from its button, and shows a hostile message as text.
//! `STEPBOX_UPDATE_SCREENSHOTS=1 cargo test --test integration browser::`
//! rewrites the README's screenshots in docs/.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::serve::{Server, populate};
use crate::support::{Child, Scratch, artifacts, eventually, rows};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// ChromeDriver and a WebDriver session of headless Chromium.
struct Browser {
    driver: std::process::Child,
    client: Client,
}

impl Browser {
    async fn start() -> Self {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: the dashboard's browser tests need Debian's chromium and chromium-driver \
                 packages (tools/install-test-deps installs them)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,860"],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Self { driver, client }
    }

    /// The text of the page's live part, hidden parts (folded traps) included.
    async fn live_text(&self) -> String {
        let text = self.client.execute("return document.getElementById('live').textContent", vec![]).await;
        text.ok().and_then(|value| value.as_str().map(str::to_string)).unwrap_or_default()
    }

    async fn wait_for_text(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.live_text().await.contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Opens `url` and checks it loaded within 5 s: a browser starved of connections takes far longer.
    async fn open_promptly(&self, url: &str, what: &str) {
        let started = Instant::now();
        self.client.goto(url).await.expect("the page opens");
        assert!(started.elapsed() < Duration::from_secs(5), "{what} took {:?}", started.elapsed());
    }

    /// Saves a screenshot under target/, and under docs/ when asked to.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let mut places = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)];
        if std::env::var_os("STEPBOX_UPDATE_SCREENSHOTS").is_some() {
            places.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs").join(name));
        }
        for place in places {
            std::fs::create_dir_all(place.parent().expect("a folder")).expect("the folder is made");
            std::fs::write(&place, &png).expect("the screenshot is written");
        }
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_follows_a_workflow_live_cancels_it_and_escapes_messages() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    populate(&scratch, &journal);
    let server = Server::start(&scratch, &journal, &[]);
    let base = format!("http://{}", server.address);
    // Chromium first: it takes seconds to start, and the backoff below must still be running.
    let browser = Browser::start().await;
    // Item 3 fails its first attempt and waits 30 s before its second (the cancel below ends it sooner).
    let mut run = Child::spawn(
        scratch.path(),
        &["run", artifacts::PIPELINE, "12", "300", "--id", "live-1", "--interval", "30s", "--journal", &journal],
    );
    assert!(eventually(Duration::from_secs(30), || async { !rows(&journal, "live-1").await.calls.is_empty() }).await);

    // The page follows the workflow without a reload.
    browser.client.goto(&format!("{base}/workflows/live-1")).await.expect("the page opens");
    browser.client.execute("window.stepboxMarker = 'same page'; return true", vec![]).await.expect("a script runs");
    assert!(browser.wait_for_text("returned-error", Duration::from_secs(20)).await, "{}", browser.live_text().await);
    let countdown = match browser.client.find(Locator::Css(".countdown")).await {
        Ok(countdown) => countdown,
        Err(error) => panic!("no countdown while it backs off ({error}):\n{}", browser.live_text().await),
    };
    let shown = countdown.text().await.unwrap_or_default();
    assert!(shown.starts_with("in ") && shown.ends_with('s'), "the next attempt counts down: {shown:?}");
    browser.screenshot("dashboard-workflow.png").await;
    let marker = browser.client.execute("return window.stepboxMarker", vec![]).await.expect("a script runs");
    assert_eq!(marker, Value::from("same page"), "the attempts appeared without a reload");

    // Cancel from the page.
    browser.client.find(Locator::Css("button.danger")).await.expect("a Cancel button").click().await.expect("a click");
    assert_eq!(run.wait_for_exit(Duration::from_secs(15)), Some(1), "{}", run.stderr());
    let status = || async {
        let badge = browser.client.execute("return document.querySelector('.fields .status').textContent", vec![]);
        badge.await.ok().and_then(|text| text.as_str().map(str::to_string)).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while status().await != "cancelled" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status().await, "cancelled", "{}", browser.live_text().await);
    assert!(browser.client.find(Locator::Css("button.danger")).await.is_err(), "no Cancel button once it ended");

    // The list.
    browser.client.goto(&format!("{base}/")).await.expect("the list opens");
    let links = browser.client.find_all(Locator::Css("#live tbody a")).await.expect("rows");
    assert_eq!(links.len(), 3, "live-1, pipe-1 and xss-1");
    browser.screenshot("dashboard-list.png").await;

    // A hostile message is text, never markup.
    browser.client.goto(&format!("{base}/workflows/xss-1")).await.expect("the page opens");
    assert!(browser.live_text().await.contains("<script>alert(1)</script>"), "{}", browser.live_text().await);
    let scripts = browser.client.execute("return document.querySelectorAll('#live script').length", vec![]).await;
    assert_eq!(scripts.expect("a script runs"), json!(0));
    assert!(browser.client.get_alert_text().await.is_err(), "no alert opened");
    browser.close().await;
}

/// A page of another origin cannot show the dashboard in a frame (so it
/// cannot make a visitor click its buttons), and the pages run under their
/// own Content-Security-Policy: no script error, the live updates work.
#[tokio::test(flavor = "multi_thread")]
async fn another_site_cannot_frame_the_dashboard() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    populate(&scratch, &journal);
    let server = Server::start(&scratch, &journal, &[]);
    let browser = Browser::start().await;
    let framing = format!(
        "data:text/html,<h1>another site</h1><iframe id=f src='http://{}/workflows/pipe-1' width=800 height=600></iframe>",
        server.address
    );
    browser.client.goto(&framing).await.expect("the framing page opens");
    tokio::time::sleep(Duration::from_secs(2)).await;
    browser.client.enter_frame(0).await.expect("the frame");
    let framed = browser.client.current_url().await.map(|url| url.to_string()).unwrap_or_default();
    let inside = browser.client.execute("return document.body ? document.body.innerText : ''", vec![]).await;
    let inside = inside.ok().and_then(|value| value.as_str().map(str::to_string)).unwrap_or_default();
    assert!(
        !inside.contains("Step calls") && !inside.contains("pipe-1"),
        "the dashboard showed in a frame: {framed}\n{inside}"
    );
    browser.client.enter_parent_frame().await.expect("back to the page");
    // The dashboard itself works under its policy: its script runs (the countdown ticks, the stream opens).
    browser.client.goto(&format!("http://{}/workflows/pipe-1", server.address)).await.expect("the page opens");
    let script_ran = browser
        .client
        .execute("return typeof EventSource !== 'undefined' && !!document.querySelector('main[data-events]')", vec![])
        .await;
    assert_eq!(script_ran.expect("a script runs"), json!(true));
    let favicon = browser
        .client
        .execute("return document.querySelector('link[rel=icon]').href.startsWith('data:image/svg+xml')", vec![])
        .await;
    assert_eq!(favicon.expect("a script runs"), json!(true), "a favicon, inline");
    browser.close().await;
}

/// Workflows with odd ids open from the list by a click, and a page with a
/// 5,000-character word stays as wide as the window.
#[tokio::test(flavor = "multi_thread")]
async fn odd_ids_open_by_a_click_and_long_words_wrap() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let ids = crate::serve::run_odd_ids(&scratch, &journal);
    let long = "w".repeat(5000);
    let mut waiting = Child::spawn(
        scratch.path(),
        &[
            "run",
            artifacts::WAITER,
            "--step",
            artifacts::FLAKY,
            "--invoke",
            "approval",
            "\"go\"",
            "60000",
            "--id",
            "long-1",
            "--journal",
            &journal,
        ],
    );
    assert!(eventually(Duration::from_secs(30), || async { !rows(&journal, "long-1").await.calls.is_empty() }).await);
    let sent = crate::support::host_command(
        scratch.path(),
        &["send", "long-1", "go", &format!("\"{long}\""), "--journal", &journal],
    );
    assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    assert_eq!(waiting.wait_for_exit(Duration::from_secs(30)), Some(0));
    let server = Server::start(&scratch, &journal, &[]);
    let base = format!("http://{}", server.address);
    let browser = Browser::start().await;
    for id in &ids {
        browser.client.goto(&format!("{base}/?limit=100")).await.expect("the list opens");
        let links = browser.client.find_all(Locator::Css("#live tbody a")).await.expect("rows");
        let mut clicked = false;
        for link in links {
            if link.text().await.unwrap_or_default() == *id {
                link.click().await.expect("a click");
                clicked = true;
                break;
            }
        }
        assert!(clicked, "the list shows {id:?}");
        let heading = browser.client.execute("return document.querySelector('h1 .mono').textContent", vec![]).await;
        assert_eq!(heading.expect("a script runs"), json!(id), "the click opened {id:?}");
    }
    browser.client.goto(&format!("{base}/workflows/long-1")).await.expect("the page opens");
    let widths =
        browser.client.execute("return [document.documentElement.scrollWidth, window.innerWidth]", vec![]).await;
    let widths = widths.expect("a script runs");
    let (scroll, inner) = (widths[0].as_i64().unwrap_or(0), widths[1].as_i64().unwrap_or(1));
    assert!(scroll <= inner + 2, "the page is {scroll} px wide in a {inner} px window");
    browser.close().await;
}

/// Thirty navigations in one tab, then ten tabs open: every page still loads
/// at once (hidden pages hold no event stream).
#[tokio::test(flavor = "multi_thread")]
async fn many_navigations_and_tabs_never_starve_the_browser() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    populate(&scratch, &journal);
    let server = Server::start(&scratch, &journal, &[]);
    let base = format!("http://{}", server.address);
    let browser = Browser::start().await;
    let pages = ["/", "/workflows/pipe-1", "/queues", "/workers", "/schedules", "/workflows/xss-1"];
    for n in 0..30 {
        browser.open_promptly(&format!("{base}{}", pages[n % pages.len()]), &format!("navigation {n}")).await;
    }
    for n in 0..10 {
        let tab = browser.client.new_window(true).await.expect("a tab");
        browser.client.switch_to_window(tab.handle).await.expect("the tab");
        browser.open_promptly(&format!("{base}{}", pages[n % pages.len()]), &format!("tab {n}")).await;
    }
    browser.open_promptly(&format!("{base}/workflows/pipe-1"), "the page after ten tabs").await;
    browser.close().await;
}

/// A workflow of 1,000 calls and 10,000 attempts opens in pages of 100 calls;
/// a call of 30 attempts shows its first and last ones and says how many it
/// left out; a retried call's attempts are drawn to scale (the bars' gap over their
/// span is the journal's backoff over the call's time); the copy button
/// copies the id, and every time says how long ago it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_calls_page_their_attempts_draw_to_scale_and_ids_copy() {
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let manifest = scratch.path().join("fast.toml");
    std::fs::write(&manifest, "[retry]\nmax-attempts = 10\ninterval = \"1ms\"\nbackoff-rate = 1.0\n").expect("written");
    let manifest = manifest.to_string_lossy().into_owned();
    let loop_run = |id: &str, calls: &str, extra: &[&str]| {
        let mut args = vec!["run", artifacts::BENCH_LOOP, calls, "--step", artifacts::NOOP, "--invoke", "exhaust"];
        args.extend(["--config", &manifest, "--id", id, "--journal", &journal]);
        args.extend(extra);
        let run = crate::support::host_command(scratch.path(), &args);
        assert_eq!(run.code, Some(0), "{id}: {}", run.stderr);
    };
    loop_run("big-1", "1000", &[]);
    loop_run("long-tail", "1", &["--max-attempts", "30"]);
    // Item 3 of the pipeline fails once: 200 ms, a 600 ms backoff, 200 ms.
    crate::support::host_command(
        scratch.path(),
        &["run", artifacts::PIPELINE, "3", "200", "--id", "gap-1", "--interval", "600ms", "--journal", &journal],
    )
    .success();
    let server = Server::start(&scratch, &journal, &[]);
    let base = format!("http://{}", server.address);

    // The HTML of one page of the big workflow stays small enough to render at once.
    let started = Instant::now();
    let (status, page) = server.get_page("/workflows/big-1");
    assert_eq!(status, 200);
    assert!(page.len() < 3_000_000, "one page of calls is {} bytes", page.len());
    assert!(started.elapsed() < Duration::from_secs(20), "the page took {:?}", started.elapsed());

    let browser = Browser::start().await;
    let count = |selector: &'static str| {
        let client = browser.client.clone();
        async move {
            let found = client.execute(&format!("return document.querySelectorAll('{selector}').length"), vec![]).await;
            found.expect("a script runs").as_u64().unwrap_or(0)
        }
    };
    browser.client.goto(&format!("{base}/workflows/big-1")).await.expect("the page opens");
    assert_eq!(count("section.call").await, 100, "a page holds 100 calls");
    assert_eq!(count("section.call tbody tr").await, 1000, "each with its 10 attempts");
    assert!(browser.live_text().await.contains("1–100 of 1000"), "{}", browser.live_text().await);
    browser.client.find(Locator::LinkText("later calls →")).await.expect("a next page").click().await.expect("a click");
    assert!(browser.wait_for_text("101–200 of 1000", Duration::from_secs(20)).await);
    browser.client.goto(&format!("{base}/workflows/big-1?calls=900")).await.expect("the last page opens");
    assert!(browser.live_text().await.contains("#1000 "), "the last call is on the last page");
    assert!(browser.client.find(Locator::LinkText("later calls →")).await.is_err(), "no page after the last");

    browser.client.goto(&format!("{base}/workflows/long-tail")).await.expect("the page opens");
    assert_eq!(count("section.call tbody tr:not(.elided)").await, 25, "the first 5 and the last 20 attempts");
    assert!(browser.live_text().await.contains("5 attempts not shown"), "{}", browser.live_text().await);

    // To scale: the gap between the two bars of call 3, over the bars' whole span, in pixels,
    // is the journal's gap over the call's span, in milliseconds.
    let attempts: Vec<_> = rows(&journal, "gap-1").await.attempts.into_iter().filter(|a| a.seq == 3).collect();
    assert_eq!(attempts.len(), 2, "call 3 was retried once");
    let (first, second) = (&attempts[0], &attempts[1]);
    let first_end = first.finished_at.expect("it ended");
    let span_ms = (second.finished_at.expect("it ended") - first.started_at) as f64;
    let gap_ms = (second.started_at - first_end) as f64;
    browser.client.goto(&format!("{base}/workflows/gap-1")).await.expect("the page opens");
    let bars = browser
        .client
        .execute(
            "const timelines = document.querySelectorAll('svg.timeline');
             if (timelines.length !== 1) { return timelines.length; }
             timelines[0].scrollIntoView({ block: 'center' });
             const svg = timelines[0].getBoundingClientRect();
             return [...timelines[0].querySelectorAll('rect')]
                 .map(r => { const b = r.getBoundingClientRect(); return [b.left - svg.left, b.width, svg.width]; });",
            vec![],
        )
        .await
        .expect("a script runs");
    assert!(bars.is_array(), "only call 3, the retried one, has a timeline: {bars} found");
    browser.screenshot("dashboard-timeline.png").await;
    let bar = |index: usize, field: usize| bars[index][field].as_f64().expect("a number");
    let drawn_gap = bar(1, 0) - (bar(0, 0) + bar(0, 1));
    let drawn_span = bar(1, 0) + bar(1, 1) - bar(0, 0);
    let (drawn, journaled) = (drawn_gap / drawn_span, gap_ms / span_ms);
    assert!((drawn - journaled).abs() < 0.02, "drawn gap {drawn:.3} of the span, journaled {journaled:.3}: {bars}");
    assert!(gap_ms >= 550.0, "the backoff was about 600 ms: {gap_ms}");

    // The id's copy button writes it to the clipboard (captured here: headless Chromium has none).
    browser
        .client
        .execute(
            "window.copied = null; navigator.clipboard.writeText = async (text) => { window.copied = text; }; return true",
            vec![],
        )
        .await
        .expect("a script runs");
    browser.client.find(Locator::Css("h1 button.copy")).await.expect("a copy button").click().await.expect("a click");
    let copied = browser.client.execute("return window.copied", vec![]).await.expect("a script runs");
    assert_eq!(copied, json!("gap-1"));
    let ago = browser.client.execute("return document.querySelector('time + .ago').textContent", vec![]).await;
    let ago = ago.expect("a script runs");
    assert!(ago.as_str().is_some_and(|text| text.ends_with(" ago)")), "a time says how long ago: {ago}");
    browser.close().await;
}
