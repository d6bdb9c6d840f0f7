//! Hostile and broken steps: each tries something the sandbox must stop or
//! contain. Denials the guest observes come back as `permanent(...)`.

use std::io::Write as _;

wit_bindgen::generate!({
    world: "guests:hostile/hostile",
    path: ["../../../wit", "../../wit/hostile.wit"],
    generate_all,
});

use exports::guests::hostile::steps::{Guest, StepError};

struct Hostile;

fn denied(what: &str, error: impl std::fmt::Display) -> StepError {
    StepError::Permanent(format!("{what}: {error}"))
}

impl Guest for Hostile {
    fn spin() -> Result<u64, StepError> {
        let mut counter = 0u64;
        loop {
            counter = std::hint::black_box(counter.wrapping_add(1));
        }
    }

    fn hog_memory() -> Result<u64, StepError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 16 << 20]);
            std::hint::black_box(&hoard);
        }
    }

    fn recurse(depth: u64) -> Result<u64, StepError> {
        fn down(depth: u64) -> u64 {
            let frame = std::hint::black_box([depth; 512]);
            if depth == 0 { frame[0] } else { down(depth - 1).wrapping_add(frame[511]) }
        }
        Ok(down(depth))
    }

    fn huge_result(bytes: u64) -> Result<String, StepError> {
        Ok("x".repeat(usize::try_from(bytes).unwrap_or(usize::MAX)))
    }

    fn shout(bytes: u64) -> Result<u64, StepError> {
        let chunk = vec![b'!'; 64 << 10];
        let mut written = 0u64;
        let mut stdout = std::io::stdout().lock();
        while written < bytes {
            let size = usize::try_from((bytes - written).min(chunk.len() as u64)).unwrap_or(chunk.len());
            stdout.write_all(&chunk[..size]).map_err(|error| denied("stdout", error))?;
            written += size as u64;
        }
        stdout.flush().map_err(|error| denied("stdout", error))?;
        eprintln!("shouted {written} bytes");
        Ok(written)
    }

    fn read_file(path: String) -> Result<String, StepError> {
        std::fs::read_to_string(&path).map_err(|error| denied(&format!("read {path}"), error))
    }

    fn write_file(path: String, contents: String) -> Result<u64, StepError> {
        std::fs::write(&path, &contents).map_err(|error| denied(&format!("write {path}"), error))?;
        Ok(contents.len() as u64)
    }

    fn write_then_panic(path: String) -> Result<u64, StepError> {
        let mut file = std::fs::File::create(&path).map_err(|error| denied(&format!("create {path}"), error))?;
        file.write_all(b"first half;").map_err(|error| denied(&format!("write {path}"), error))?;
        file.flush().map_err(|error| denied(&format!("flush {path}"), error))?;
        panic!("crashed halfway through writing {path}");
    }

    fn list_env() -> Result<Vec<String>, StepError> {
        Ok(std::env::vars().map(|(name, value)| format!("{name}={value}")).collect())
    }

    fn fetch(url: String) -> Result<String, StepError> {
        http_get(&url).map_err(|error| denied(&format!("fetch {url}"), error))
    }

    fn huge_bytes(bytes: u64) -> Result<Vec<u8>, StepError> {
        Ok(vec![7u8; usize::try_from(bytes).unwrap_or(usize::MAX)])
    }

    fn log_flood(bytes: u64, times: u32) -> Result<u64, StepError> {
        let message = "#".repeat(usize::try_from(bytes).unwrap_or(usize::MAX));
        for _ in 0..times {
            stepbox::runtime::log::log(stepbox::runtime::log::Level::Info, &message);
        }
        Ok(bytes * u64::from(times))
    }

    fn make_link(target: String, link: String) -> Result<u64, StepError> {
        // Through `wasi:filesystem` directly, on the preopened directory holding `link`.
        let preopens = wasi::filesystem::preopens::get_directories();
        let (dir, name) = preopens
            .iter()
            .find_map(|(dir, root)| {
                let rest = link.strip_prefix(root.as_str())?.trim_start_matches('/');
                Some((dir, rest.to_string()))
            })
            .ok_or_else(|| denied(&format!("symlink {link}"), "no granted directory holds it"))?;
        dir.symlink_at(&target, &name).map_err(|error| denied(&format!("symlink {link}"), format!("{error:?}")))?;
        Ok(1)
    }

    fn nap(ms: u64) -> Result<u64, StepError> {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        Ok(ms)
    }

    fn logged_nap(dir: String, tag: String, ms: u64) -> Result<u64, StepError> {
        use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
        let nonce = wasi::random::random::get_random_u64();
        let path = format!("{dir}/{tag}.{nonce:016x}");
        let mut file = std::fs::File::create(&path).map_err(|error| denied(&format!("create {path}"), error))?;
        let mut line = |what: &str| {
            let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis());
            writeln!(file, "{what} {at}").and_then(|()| file.flush())
        };
        line("start").map_err(|error| denied(&path, error))?;
        let end = Instant::now() + Duration::from_millis(ms);
        while let Some(left) = end.checked_duration_since(Instant::now()).filter(|left| !left.is_zero()) {
            std::thread::sleep(left.min(Duration::from_millis(20)));
            line("tick").map_err(|error| denied(&path, error))?;
        }
        line("end").map_err(|error| denied(&path, error))?;
        Ok(ms)
    }

    fn logged_flaky(dir: String, tag: String, fail_times: u32, ms: u64) -> Result<u32, StepError> {
        use std::time::{SystemTime, UNIX_EPOCH};
        let attempt = stepbox::runtime::step_context::status().map_or(0, |status| status.attempt);
        let nonce = wasi::random::random::get_random_u64();
        let path = format!("{dir}/{tag}.{nonce:016x}");
        let mut file = std::fs::File::create(&path).map_err(|error| denied(&format!("create {path}"), error))?;
        let mut line = |what: &str| {
            let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis());
            writeln!(file, "{what} {at}").and_then(|()| file.flush()).map_err(|error| denied(&path, error))
        };
        line(&format!("start {attempt}"))?;
        std::thread::sleep(std::time::Duration::from_millis(ms));
        if attempt <= fail_times {
            line("fail")?;
            return Err(StepError::Failed(format!("attempt {attempt} of {tag} fails on purpose")));
        }
        line("ok")?;
        Ok(attempt)
    }

    fn connect(address: String) -> Result<String, StepError> {
        match std::net::TcpStream::connect(&address) {
            Ok(stream) => Ok(format!("connected to {:?}", stream.peer_addr())),
            Err(error) => Err(denied(&format!("connect {address}"), error)),
        }
    }
}

/// A plain `wasi:http` GET, the way any guest language would make one.
fn http_get(url: &str) -> Result<String, String> {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, OutgoingRequest, Scheme};
    use wasi::io::streams::StreamError;

    let rest = url.strip_prefix("http://").ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, format!("/{path}")),
        None => (rest, "/".to_string()),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| "invalid scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "invalid authority")?;
    request.set_path_with_query(Some(&path)).map_err(|()| "invalid path")?;
    let pending = outgoing_handler::handle(request, None).map_err(|error| format!("{error:?}"))?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(error))) => return Err(format!("{error:?}")),
        Some(Err(())) | None => return Err("the response was not ready".into()),
    };
    let body = response.consume().map_err(|()| "no body")?;
    let stream = body.stream().map_err(|()| "no body stream")?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(error)) => return Err(error.to_debug_string()),
        }
    }
    Ok(format!("{} {}", response.status(), String::from_utf8_lossy(&bytes)))
}

export!(Hostile);
