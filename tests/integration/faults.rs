//! Database faults as weather: PostgreSQL restarts (fast, immediate, 15 s
//! down), failover to a standby (synchronous and asynchronous replication),
//! connections lost between a commit and its acknowledgement, and SQLite's
//! full disks, read-only files and busy locks. Every run finishes without a
//! human, with the right output and an exact journal. Servers here are the
//! tests' own clusters (`support::cluster`), never the shared one on 5432.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::cluster::Cluster;
use crate::support::proxy::Proxy;
use crate::support::{Child, PostgresDb, Scratch, artifacts, eventually, rows};

/// Starts `pipeline.wasm ITEMS MS` as workflow `id` on `journal`, under a
/// lease longer than any outage here: what rides through an outage shorter
/// than the lease is what these tests check (`leases.rs` has the longer ones).
fn pipeline(scratch: &Scratch, journal: &str, id: &str, items: u32, millis: u32, extra: &[&str]) -> Child {
    let (items, millis) = (items.to_string(), millis.to_string());
    let mut args =
        vec!["run", artifacts::PIPELINE, &items, &millis, "--id", id, "--journal", journal, "--interval", "200ms"];
    if !extra.contains(&"--lease") {
        args.extend(["--lease", "30s"]);
    }
    args.extend(extra);
    Child::spawn(scratch.path(), &args)
}

/// How many calls of the workflow have succeeded in the journal.
async fn done_calls(journal: &str, id: &str) -> usize {
    rows(journal, id).await.calls.iter().filter(|call| call.status == "succeeded").count()
}

/// Waits for the pipeline to finish and checks it: the output, exactly one ok
/// attempt per call, attempts numbered 1, 2, … Returns how many (item,
/// attempt) executions the host ran more than once (writes lost by the database).
async fn finished_exactly(child: &mut Child, journal: &str, id: &str, items: u32) -> usize {
    let code = child.wait_for_exit(Duration::from_secs(120));
    let stderr = child.stderr();
    assert_eq!(code, Some(0), "the run rode through:\n{stderr}");
    let journal_rows = rows(journal, id).await;
    let expected = u64::from(items) * u64::from(items + 1);
    assert_eq!(journal_rows.workflow, Some(("succeeded".into(), Some(expected.to_string()))), "{stderr}");
    assert_eq!(journal_rows.calls.len(), items as usize);
    let mut by_call: BTreeMap<i64, Vec<_>> = BTreeMap::new();
    for attempt in &journal_rows.attempts {
        by_call.entry(attempt.seq).or_default().push(attempt);
    }
    for call in &journal_rows.calls {
        let attempts = &by_call[&call.seq];
        let numbers: Vec<i64> = attempts.iter().map(|a| a.attempt).collect();
        assert_eq!(numbers, (1..=attempts.len() as i64).collect::<Vec<_>>(), "call {}: {attempts:?}", call.seq);
        let oks = attempts.iter().filter(|a| a.outcome.as_deref() == Some("ok")).count();
        assert_eq!((call.status.as_str(), oks), ("succeeded", 1), "call {}: {attempts:?}", call.seq);
    }
    let mut runs: BTreeMap<(String, String), usize> = BTreeMap::new();
    for line in stderr.lines().filter(|line| line.contains("(process) process item") && line.ends_with("started")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [.., item, "attempt", attempt, "started"] = words.as_slice() {
            *runs.entry((item.to_string(), attempt.to_string())).or_default() += 1;
        }
    }
    runs.values().filter(|&&count| count > 1).count()
}

/// A connection lost after the server committed and before the host heard
/// so, again and again: the batch is written again on a fresh connection,
/// neither duplicated nor lost, and no finished step runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commit_outcomes_are_retried_safely() {
    let db = PostgresDb::create().await;
    let port: u16 = db.url.rsplit_once(':').and_then(|(_, rest)| rest.split('/').next()?.parse().ok()).expect("a port");
    let proxy = Proxy::start(port).await;
    let database = db.url.rsplit('/').next().unwrap();
    let journal = format!("postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable", proxy.port);
    let scratch = Scratch::new();
    let mut child = pipeline(&scratch, &journal, "cut", 12, 20, &[]);
    // Cut once the run is under way: every cut hits its journal writes and reads.
    assert!(eventually(Duration::from_secs(30), || async { done_calls(&journal, "cut").await >= 1 }).await);
    proxy.cut_rate(12);
    // The test reads the journal directly, not through the cutting proxy.
    let repeated = finished_exactly(&mut child, &db.url, "cut", 12).await;
    let stderr = child.stderr();
    assert!(proxy.cuts() >= 5, "only {} connections were cut", proxy.cuts());
    assert_eq!(repeated, 0, "no committed completion was run again:\n{stderr}");
    assert!(stderr.contains("unreachable") && stderr.contains("is back after"), "one line per outage:\n{stderr}");
    println!("unknown commit outcomes: {} connections cut, the run finished exactly", proxy.cuts());
}

/// Restarts the server while a pipeline runs; the run rides through.
async fn ride_through(what: &str, disturb: impl AsyncFnOnce(&Cluster, &str)) {
    let cluster = Cluster::primary();
    let journal = cluster.url();
    let scratch = Scratch::new();
    let started = Instant::now();
    let mut child = pipeline(&scratch, &journal, "weather", 10, 150, &[]);
    assert!(eventually(Duration::from_secs(30), || async { done_calls(&journal, "weather").await >= 2 }).await);
    disturb(&cluster, &journal).await;
    let repeated = finished_exactly(&mut child, &journal, "weather", 10).await;
    assert_eq!(repeated, 0, "{what}: a restart loses nothing committed");
    let stderr = child.stderr();
    assert!(stderr.contains("unreachable") && stderr.contains("is back after"), "{what}:\n{stderr}");
    println!("{what}: finished in {:?} (its work: 10 steps of 150 ms, 3 backoffs of 200 ms)", started.elapsed());
}

#[tokio::test]
async fn a_fast_restart_during_steps_is_ridden_through() {
    ride_through("fast restart during steps", async |cluster, _| cluster.restart("fast")).await;
}

#[tokio::test]
async fn an_immediate_restart_during_steps_is_ridden_through() {
    ride_through("immediate restart during steps", async |cluster, _| cluster.restart("immediate")).await;
}

#[tokio::test]
async fn a_restart_during_a_backoff_is_ridden_through() {
    ride_through("immediate restart during a backoff", async |cluster, journal| {
        // Item 3 fails its first attempt and waits 200 ms before its second.
        let waiting = eventually(Duration::from_secs(30), || async {
            rows(journal, "weather").await.attempts.iter().any(|a| a.seq == 3 && a.outcome.as_deref() == Some("failed"))
        })
        .await;
        assert!(waiting);
        cluster.restart("immediate");
    })
    .await;
}

#[tokio::test]
async fn fifteen_seconds_down_during_steps_is_ridden_through() {
    ride_through("15 s down during steps", async |cluster, _| {
        cluster.stop("fast");
        tokio::time::sleep(Duration::from_secs(15)).await;
        cluster.start();
    })
    .await;
}

#[tokio::test]
async fn fifteen_seconds_down_during_the_final_write_is_ridden_through() {
    ride_through("15 s down during the last step and the final write", async |cluster, journal| {
        let last_running = eventually(Duration::from_secs(30), || async {
            rows(journal, "weather").await.attempts.iter().any(|a| a.seq == 10)
        })
        .await;
        assert!(last_running);
        cluster.stop("immediate");
        tokio::time::sleep(Duration::from_secs(15)).await;
        cluster.start();
    })
    .await;
}

/// Stops the primary (immediate: nothing more is shipped) mid-run and
/// promotes the standby; the run moves to it through the multi-host URL.
async fn failover(synchronous: bool) -> usize {
    let primary = Cluster::primary();
    let standby = Cluster::standby_of(&primary, synchronous);
    let journal = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let scratch = Scratch::new();
    let mut child = pipeline(&scratch, &journal, "failover", 12, 150, &[]);
    let going = eventually(Duration::from_secs(30), || async { done_calls(&journal, "failover").await >= 4 }).await;
    assert!(going, "the run did not get going:\n{}", child.stderr());
    primary.stop("immediate");
    standby.promote();
    let repeated = finished_exactly(&mut child, &journal, "failover", 12).await;
    let stderr = child.stderr();
    assert!(stderr.contains("unreachable") && stderr.contains("is back after"), "{stderr}");
    repeated
}

#[tokio::test]
async fn a_failover_to_a_synchronous_standby_loses_nothing() {
    let repeated = failover(true).await;
    assert_eq!(repeated, 0, "with synchronous replication no acknowledged write is lost, no step runs again");
}

#[tokio::test]
async fn a_failover_to_an_asynchronous_standby_finishes_and_is_measured() {
    let repeated = failover(false).await;
    println!("asynchronous failover: {repeated} attempt(s) ran again (their journaled start or end was lost)");
}

/// A small ext4 file system on a loop device the test mounts for a SQLite
/// journal (needs root, as CI runs; ext4 rather than tmpfs, whose lazily
/// allocated pages turn a full disk into SIGBUS for memory-mapped files).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let run = |program: &str, args: &[&std::ffi::OsStr]| {
            let status = std::process::Command::new(program).args(args).status().expect("the tool runs");
            assert!(
                status.success(),
                "`{program}` failed: this test mounts a {size} ext4 image and needs root (as CI runs)"
            );
        };
        run("truncate", &["-s".as_ref(), size.as_ref(), image.as_os_str()]);
        run("mkfs.ext4", &["-q".as_ref(), "-F".as_ref(), image.as_os_str()]);
        run("mount", &["-o".as_ref(), "loop".as_ref(), image.as_os_str(), mount.as_os_str()]);
        Self { dir }
    }

    fn mount_point(&self) -> std::path::PathBuf {
        self.dir.path().join("mnt")
    }

    fn journal(&self) -> String {
        self.mount_point().join("journal.db").display().to_string()
    }

    /// Fills the disk; returns the filler file to remove to free it.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let filler = self.mount_point().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.write_all(&chunk[..1024]);
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.mount_point()).status();
    }
}

/// `PRAGMA integrity_check` of a SQLite journal.
async fn integrity(journal: &str) -> String {
    use sqlx::Connection as _;
    let mut connection =
        sqlx::SqliteConnection::connect(&format!("sqlite://{journal}")).await.expect("the journal opens");
    sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut connection).await.expect("the check runs")
}

/// Makes a SQLite journal's file and its write-ahead log immutable (`chattr
/// +i`: writes through open descriptors fail too), or writable again. (Not
/// the memory-mapped `-shm` index: a write to a mapping of an immutable file
/// is a SIGBUS, whatever the program.)
fn immutable(journal: &str, on: bool) {
    for suffix in ["", "-wal"] {
        let path = format!("{journal}{suffix}");
        if std::path::Path::new(&path).exists() {
            let flag = if on { "+i" } else { "-i" };
            let status = std::process::Command::new("chattr").arg(flag).arg(&path).status().expect("chattr runs");
            assert!(status.success(), "this test needs chattr on an ext4 /tmp as root (as CI runs)");
        }
    }
}

/// A full disk and a journal made read-only mid-run: the run waits and continues once freed.
#[tokio::test]
async fn a_full_disk_or_a_read_only_journal_is_waited_out_on_sqlite() {
    for fault in ["full", "read-only"] {
        let disk = SmallDisk::mount("8M");
        let scratch = Scratch::new();
        let journal = if fault == "full" { disk.journal() } else { scratch.journal() };
        let mut child = pipeline(&scratch, &journal, "weather", 10, 150, &[]);
        let started = eventually(Duration::from_secs(60), || async { done_calls(&journal, "weather").await >= 2 });
        assert!(started.await, "{fault}: two calls never ended:\n{}", child.stderr());
        let filler = if fault == "full" { Some(disk.fill()) } else { None };
        if fault == "read-only" {
            immutable(&journal, true);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        match filler {
            Some(filler) => std::fs::remove_file(filler).unwrap(),
            None => immutable(&journal, false),
        }
        let repeated = finished_exactly(&mut child, &journal, "weather", 10).await;
        assert_eq!(repeated, 0, "{fault}");
        let stderr = child.stderr();
        let symptom = if fault == "full" { "the disk is full" } else { "unreachable" };
        assert!(stderr.contains(symptom) && stderr.contains("is back after"), "{fault}:\n{stderr}");
        assert_eq!(integrity(&journal).await, "ok", "{fault}");
    }
}

/// A disk that stays full past the outage budget: a clear error, the journal
/// intact, and a resume that works once space is freed.
#[tokio::test]
async fn a_disk_full_past_the_budget_stops_clearly_and_resumes_later_on_sqlite() {
    let disk = SmallDisk::mount("8M");
    let journal = disk.journal();
    let scratch = Scratch::new();
    // The outage budget (2 s) runs out before the lease's local deadline (4.5 s of 5 s).
    let mut child = pipeline(&scratch, &journal, "full", 10, 150, &["--db-outage", "2s", "--lease", "5s"]);
    assert!(eventually(Duration::from_secs(30), || async { done_calls(&journal, "full").await >= 2 }).await);
    let filler = disk.fill();
    let code = child.wait_for_exit(Duration::from_secs(30));
    let stderr = child.stderr();
    assert_eq!(code, Some(4), "stopped, resumable:\n{stderr}");
    assert!(stderr.contains("the disk is full") && stderr.contains("host resume full"), "{stderr}");
    std::fs::remove_file(filler).unwrap();
    assert_eq!(integrity(&journal).await, "ok");
    crate::support::until_lease_lapsed(&journal, "full").await;
    let resumed = crate::support::host_command(scratch.path(), &["resume", "full", "--journal", &journal]);
    assert_eq!(resumed.success(), "110");
}

/// Another process holding SQLite's write lock past the busy timeout: writes wait and continue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_holding_the_write_lock_is_waited_out_on_sqlite() {
    use sqlx::Connection as _;
    let scratch = Scratch::new();
    let journal = scratch.journal();
    let mut child = pipeline(&scratch, &journal, "busy", 10, 150, &[]);
    assert!(eventually(Duration::from_secs(30), || async { done_calls(&journal, "busy").await >= 2 }).await);
    let mut locker = sqlx::SqliteConnection::connect(&format!("sqlite://{journal}")).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut locker).await.unwrap();
    // Longer than the 5 s busy timeout.
    tokio::time::sleep(Duration::from_secs(7)).await;
    sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.unwrap();
    let repeated = finished_exactly(&mut child, &journal, "busy", 10).await;
    assert_eq!(repeated, 0);
    let stderr = child.stderr();
    assert!(stderr.contains("another process holds the journal's write lock"), "{stderr}");
    assert_eq!(integrity(&journal).await, "ok");
}
