//! Running the real `host` binary on guest components built from source, and
//! reading back the journal it wrote with plain SQL.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::Connection as _;
use stepbox::journal::{Journal, Target};

pub use stepbox_test_artifacts as artifacts;

pub mod cluster;
pub mod partition;
pub mod pgbouncer;
pub mod proxy;
pub mod rows;

/// One `host` invocation's result.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The value after `Workflow output: ` (an inherited guest stdout may precede it
    /// on its line), failing the test with the logs otherwise.
    pub fn output(&self) -> &str {
        let output = self.stdout.lines().find_map(|line| line.split_once("Workflow output: ").map(|(_, value)| value));
        output.unwrap_or_else(|| {
            panic!("no workflow output (exit {:?})\nstdout:\n{}\nstderr:\n{}", self.code, self.stdout, self.stderr)
        })
    }

    /// Asserts the run succeeded and returns its output.
    pub fn success(&self) -> &str {
        assert_eq!(self.code, Some(0), "host failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self.output()
    }

    /// Asserts the run was refused as bad input (exit 2, one `error:` paragraph, no panic).
    pub fn refused(&self) -> &str {
        assert_eq!(self.code, Some(2), "expected exit 2\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert!(!self.stderr.contains("panicked"), "host panicked:\n{}", self.stderr);
        assert!(self.stdout.is_empty(), "no output expected on refusal, got {}", self.stdout);
        self.stderr.lines().find(|line| line.starts_with("error: ")).unwrap_or_else(|| {
            panic!("no `error:` line in stderr:\n{}", self.stderr);
        })
    }

    /// How many stderr lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.stderr.lines().filter(|line| line.contains(needle)).count()
    }
}

/// A runner of `spec` on `journal`, in this process (compiled through the shared cache).
pub fn runner(journal: &Journal, spec: &stepbox::run::RunSpec) -> stepbox::run::Runner {
    let engine = stepbox::wasm::new_engine().expect("the engine starts");
    let loader = stepbox::wasm::ComponentLoader::new(&engine, Some(shared_cache()));
    let executor = stepbox::run::Executor::start(journal.clone(), stepbox::run::DEFAULT_LEASE);
    stepbox::run::Runner::open(spec, &loader, executor).expect("the components link")
}

/// The compile cache shared by all tests, so each component compiles once per test run.
pub fn shared_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stepbox-cache")
}

/// Runs `host run` with `args`, in `dir` (where a default SQLite journal would land).
pub fn host_in(dir: &Path, args: &[&str]) -> Run {
    host_with_env(dir, args, &[])
}

/// As [`host_in`], with extra environment variables.
pub fn host_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = host_command_line(dir);
    command.arg("run").args(args).envs(env.iter().copied());
    finish(command)
}

/// `host` in `dir` with a clean environment and the shared compile cache.
fn host_command_line(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_host"));
    command
        .current_dir(dir)
        .env_remove("STEPBOX_JOURNAL")
        .env(
            "RUST_LOG",
            std::env::var("STEPBOX_TEST_HOST_LOG")
                .unwrap_or_else(|_| "info,sqlx=error,wasmtime=warn,cranelift=warn".into()),
        )
        .env("STEPBOX_CACHE_DIR", shared_cache());
    command
}

fn finish(mut command: Command) -> Run {
    let output = command.output().expect("the host binary runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A scratch directory with a SQLite journal path inside it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The SQLite journal file of this scratch directory.
    pub fn journal(&self) -> String {
        self.dir.path().join("journal.db").display().to_string()
    }

    /// Runs `host run ... --journal <this journal>`.
    pub fn run(&self, args: &[&str]) -> Run {
        let journal = self.journal();
        let mut all = args.to_vec();
        all.extend(["--journal", &journal]);
        host_in(self.path(), &all)
    }
}

/// The rows the journal holds for one workflow, as plain values (times in
/// ms since the epoch, words as their column text) that tests compare.
pub struct Rows {
    /// `(status, output)` of the workflow row.
    pub workflow: Option<(String, Option<String>)>,
    pub calls: Vec<CallRow>,
    pub attempts: Vec<AttemptRow>,
}

/// A `step_calls` row.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    pub seq: i64,
    pub step: String,
    pub input: String,
    pub status: String,
    pub output: Option<String>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// A `step_attempts` row.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub seq: i64,
    pub attempt: i64,
    pub executor: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: Option<String>,
    pub kind: Option<String>,
    pub message: Option<String>,
    pub retry_at: Option<i64>,
    /// The planned wait before the next attempt: `retry_at - finished_at`.
    pub next_delay_ms: Option<i64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

/// Reads a workflow's rows from a journal (SQLite path or postgres URL).
pub async fn rows(target: &str, workflow_id: &str) -> Rows {
    let journal = match Journal::open_existing(target).await {
        Ok(journal) => journal,
        // Not created yet (a test polling a child that is starting up).
        Err(_) => return Rows { workflow: None, calls: Vec::new(), attempts: Vec::new() },
    };
    let record = journal.workflow(workflow_id).await.expect("workflow row");
    let calls: Vec<CallRow> = journal
        .step_calls(workflow_id)
        .await
        .expect("step_calls rows")
        .into_iter()
        .map(|call| CallRow {
            seq: call.seq,
            step: call.step,
            input: call.input,
            status: call.status.to_string(),
            output: call.output,
            attempts: i64::from(call.attempts),
            max_attempts: i64::from(call.max_attempts),
            started_at: call.started_at.millis(),
            finished_at: call.finished_at.map(|at| at.millis()),
        })
        .collect();
    let attempts: Vec<AttemptRow> = journal
        .attempts(workflow_id)
        .await
        .expect("step_attempts rows")
        .into_iter()
        .map(|attempt| AttemptRow {
            seq: attempt.seq,
            attempt: i64::from(attempt.attempt),
            executor: attempt.executor,
            started_at: attempt.started_at.millis(),
            finished_at: attempt.finished_at.map(|at| at.millis()),
            outcome: attempt.outcome.map(|outcome| outcome.to_string()),
            kind: attempt.kind.map(|kind| kind.to_string()),
            message: attempt.message,
            retry_at: attempt.retry_at.map(|at| at.millis()),
            next_delay_ms: attempt.retry_at.zip(attempt.finished_at).map(|(at, end)| at.millis() - end.millis()),
            stdout: attempt.stdout,
            stderr: attempt.stderr,
        })
        .collect();
    if record.as_ref().is_some_and(|record| record.status.is_final()) {
        // Nothing writes a finished workflow: cross-check the reader against plain SQL.
        let counted = count_attempts(target, workflow_id).await;
        assert_eq!(counted, attempts.len(), "plain SQL and the journal reader disagree");
    }
    let workflow = record.map(|record| (record.status.to_string(), record.output));
    Rows { workflow, calls, attempts }
}

/// `SELECT count(*)` of a workflow's attempt rows, without the library's reader.
pub async fn count_attempts(target: &str, workflow_id: &str) -> usize {
    let sql = "SELECT count(*) FROM step_attempts WHERE workflow_id = $1";
    let count: i64 = match Target::parse(target).expect("a journal location") {
        Target::Sqlite(sqlite) => {
            let url = format!("sqlite://{}?mode=ro", sqlite.path.display());
            let mut connection = sqlx::SqliteConnection::connect(&url).await.expect("journal opens");
            sqlx::query_scalar(sql).bind(workflow_id).fetch_one(&mut connection).await.expect("count query")
        }
        Target::Postgres(postgres) => {
            let mut connection = primary(&postgres).await;
            let sql = sql.replace("step_attempts", &format!("{}.step_attempts", postgres.schema));
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(workflow_id)
                .fetch_one(&mut connection)
                .await
                .expect("count query")
        }
    };
    usize::try_from(count).expect("a count is not negative")
}

/// A connection to the host of `target` that accepts writes (the first, for a single-host URL).
async fn primary(target: &stepbox::journal::PostgresTarget) -> sqlx::PgConnection {
    for url in &target.hosts {
        if let Ok(mut connection) = sqlx::PgConnection::connect(url.as_str()).await {
            let standby: bool =
                sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&mut connection).await.unwrap_or(true);
            if !standby {
                return connection;
            }
        }
    }
    panic!("no host of {:?} accepts writes", target.hosts)
}

/// Runs one SQL statement on a journal's database (tests that edit or inspect rows directly).
pub async fn execute_sql(target: &str, sql: &str) {
    match Target::parse(target).expect("a journal location") {
        Target::Sqlite(sqlite) => {
            let url = format!("sqlite://{}", sqlite.path.display());
            let mut connection = sqlx::SqliteConnection::connect(&url).await.expect("journal opens");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut connection).await.expect("statement runs");
        }
        Target::Postgres(postgres) => {
            let mut connection = primary(&postgres).await;
            let sql = format!("SET search_path TO {}; {sql}", postgres.schema);
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut connection).await.expect("statement runs");
        }
    }
}

/// Asserts the waits between consecutive attempts: each gap (next start minus
/// previous finish, in ms) is at least the planned delay and at most `slack` more.
pub fn assert_gaps(attempts: &[AttemptRow], planned_ms: &[i64], slack_ms: i64) {
    assert_eq!(attempts.len(), planned_ms.len() + 1, "attempts: {attempts:#?}");
    for (pair, planned) in attempts.windows(2).zip(planned_ms) {
        let finished = pair[0].finished_at.expect("a failed attempt has a finish time");
        let gap = pair[1].started_at - finished;
        assert_eq!(pair[0].next_delay_ms, Some(*planned), "journaled delay of attempt {}", pair[0].attempt);
        assert!(
            gap >= planned - 2 && gap <= planned + slack_ms,
            "attempt {} started {gap} ms after attempt {} finished; planned {planned} ms (+{slack_ms} ms slack)",
            pair[1].attempt,
            pair[0].attempt
        );
    }
}

/// The PostgreSQL server the tests use: `STEPBOX_TEST_POSTGRES_URL` or the local default.
pub fn postgres_admin_url() -> String {
    std::env::var("STEPBOX_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test, dropped when the test ends.
pub struct PostgresDb {
    pub url: String,
    name: String,
}

impl PostgresDb {
    /// Creates the database; fails the test (never skips) when no server answers.
    pub async fn create() -> Self {
        let admin = postgres_admin_url();
        let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|error| {
            panic!(
                "PostgreSQL is required for this test and is not reachable at {admin}: {error}. \
                 Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                 (or `.ci/run`, which starts it), or point STEPBOX_TEST_POSTGRES_URL at a server."
            )
        });
        let name = format!("stepbox_test_{}", uuid::Uuid::now_v7().simple());
        // The name is ours (a UUID); identifiers cannot be bound as parameters.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .expect("create test database");
        pool.close().await;
        let (base, _) = admin.rsplit_once('/').expect("the admin URL names a database");
        Self { url: format!("{base}/{name}"), name }
    }
}

impl Drop for PostgresDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let pool = sqlx::PgPool::connect(&postgres_admin_url()).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&pool)
                    .await
                    .ok()?;
                pool.close().await;
                Some(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: could not drop test database {}", self.name);
        }
    }
}

/// A `host` child process whose stderr goes to a file, so it survives a SIGKILL.
pub struct Child {
    pub process: std::process::Child,
    stderr: PathBuf,
}

impl Drop for Child {
    /// A test that failed halfway must not leave its hosts running (workers never exit on their own).
    fn drop(&mut self) {
        if matches!(self.process.try_wait(), Ok(None)) {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

impl Child {
    /// Starts `host ARGS...` in `dir` (the subcommand is part of `args`).
    pub fn spawn(dir: &Path, args: &[&str]) -> Self {
        let stderr = dir.join(format!("stderr-{}.log", uuid::Uuid::now_v7().simple()));
        let process = host_command_line(dir)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("the host binary starts");
        Self { process, stderr }
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends `signal` (`INT`, `TERM`, `STOP`, `CONT`...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.process.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit (at most `timeout`); its exit code.
    pub fn wait_for_exit(&mut self, timeout: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_wait().expect("child status") {
                use std::os::unix::process::ExitStatusExt as _;
                if let Some(signal) = status.signal() {
                    eprintln!("the host was killed by signal {signal}");
                }
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the host did not exit within {timeout:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Runs `host ARGS...` (any subcommand) in `dir`.
pub fn host_command(dir: &Path, args: &[&str]) -> Run {
    let mut command = host_command_line(dir);
    command.args(args);
    finish(command)
}

/// Intervals `(start, end)`: the most that overlap at any instant (an end
/// and a start at the same instant do not overlap).
pub fn most_at_once(intervals: &[(i64, i64)]) -> usize {
    let mut edges: Vec<(i64, i32)> = intervals.iter().flat_map(|&(start, end)| [(start, 1), (end, -1)]).collect();
    edges.sort_unstable();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// Polls `condition` every 10 ms for up to `timeout`; false if it never held.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// Waits (up to 10 s) until workflow `id`'s lease has lapsed or been
/// released, by the database's own clock — what decides whether another
/// process may take the workflow over — instead of sleeping a guess. A
/// workflow not written yet (its process killed first) holds no lease.
pub async fn until_lease_lapsed(target: &str, id: &str) {
    let lapsed = eventually(std::time::Duration::from_secs(10), || async {
        let sql = "SELECT count(*) FROM workflows WHERE id = $1 AND lease_expires_at > NOW";
        let live: i64 = match Target::parse(target).expect("a journal location") {
            Target::Sqlite(sqlite) => {
                let url = format!("sqlite://{}?mode=ro", sqlite.path.display());
                // No journal file yet, or no table yet: nothing holds a lease.
                let Ok(mut connection) = sqlx::SqliteConnection::connect(&url).await else { return true };
                let sql = sql.replace("NOW", "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)");
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(id).fetch_one(&mut connection).await.unwrap_or(0)
            }
            Target::Postgres(postgres) => {
                let mut connection = primary(&postgres).await;
                let sql = sql
                    .replace("NOW", "statement_timestamp()")
                    .replace("FROM workflows", &format!("FROM {}.workflows", postgres.schema));
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(id).fetch_one(&mut connection).await.unwrap_or(0)
            }
        };
        live == 0
    })
    .await;
    assert!(lapsed, "the lease of workflow {id} never lapsed");
}
