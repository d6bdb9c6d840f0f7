//! PostgreSQL servers of a test's own: `initdb` on a free port in a
//! temporary folder (never the shared server on 5432), started, stopped,
//! restarted and promoted with `pg_ctl`, and streaming standbys made with
//! `pg_basebackup -R`. As root, the server binaries run as `postgres`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One PostgreSQL cluster owned by a test; stopped when dropped.
pub struct Cluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
}

/// The folder of Debian's PostgreSQL server binaries (the newest installed).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL's server binaries are needed (Debian's `postgresql` package: /usr/lib/postgresql/VERSION/bin); \
             `tools/install-test-deps` installs them",
        )
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version with initdb under /usr/lib/postgresql")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

/// Runs a server binary (as `postgres` when we are root: PostgreSQL refuses to run as root).
fn pg(binary: &str, args: &[&str]) -> std::process::Output {
    let path = bin_dir().join(binary);
    let mut command = if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    };
    command.args(args).output().unwrap_or_else(|error| panic!("cannot run {binary}: {error}"))
}

fn check(output: std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port()
}

/// A temporary folder the server user may write.
fn server_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("stepbox-pg-").tempdir().expect("a temporary folder");
    if is_root() {
        check(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).output().unwrap(), "chown");
    }
    dir
}

impl Cluster {
    /// A new primary (`wal_level = replica`, room for standbys), started.
    pub fn primary() -> Self {
        let dir = server_dir();
        let data = dir.path().join("data");
        let data_text = data.to_str().unwrap();
        check(pg("initdb", &["-A", "trust", "-U", "postgres", "--no-sync", "-D", data_text]), "initdb");
        let port = free_port();
        let config = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = replica\n\
             max_wal_senders = 5\nfsync = on\nsynchronous_commit = on\n",
            dir.path().display()
        );
        append(&data.join("postgresql.conf"), &config);
        append(&data.join("pg_hba.conf"), "host replication all 127.0.0.1/32 trust\n");
        let cluster = Self { log: dir.path().join("server.log"), data, port, _dir: dir };
        cluster.start();
        cluster
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started. With
    /// `synchronous`, the primary waits for it to confirm every commit.
    pub fn standby_of(primary: &Cluster, synchronous: bool) -> Self {
        let dir = server_dir();
        let data = dir.path().join("data");
        let port = free_port().to_string();
        let primary_port = primary.port.to_string();
        let backup = [
            "-h",
            "127.0.0.1",
            "-p",
            &primary_port,
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            "-D",
            data.to_str().unwrap(),
        ];
        check(pg("pg_basebackup", &backup), "pg_basebackup");
        let config = format!("port = {port}\nunix_socket_directories = '{}'\n", dir.path().display());
        append(&data.join("postgresql.conf"), &config);
        let standby = Self { log: dir.path().join("server.log"), data, port: port.parse().unwrap(), _dir: dir };
        standby.start();
        if synchronous {
            primary.set("synchronous_standby_names", "'*'");
        }
        standby
    }

    /// A journal URL on this server.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let data = self.data.to_str().unwrap();
        let log = self.log.to_str().unwrap();
        let mut all = vec!["-D", data, "-l", log, "-w", "-t", "60"];
        all.extend(args);
        pg("pg_ctl", &all)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        check(self.ctl(&["start"]), "pg_ctl start");
    }

    /// Stops it (`fast` or `immediate`).
    pub fn stop(&self, mode: &str) {
        check(self.ctl(&["stop", "-m", mode]), "pg_ctl stop");
    }

    /// Restarts it (`fast` or `immediate`), down for 6 s: longer than the
    /// journal's connect timeout (5 s), within which a pool's new connection
    /// waits a shorter restart out unseen, so the outage is met and logged.
    pub fn restart(&self, mode: &str) {
        self.stop(mode);
        std::thread::sleep(std::time::Duration::from_secs(6));
        self.start();
    }

    /// Promotes a standby to primary; returns once it accepts writes.
    pub fn promote(&self) {
        check(self.ctl(&["promote"]), "pg_ctl promote");
    }

    /// Sets a server setting and reloads.
    pub fn set(&self, name: &str, value: &str) {
        append(&self.data.join("postgresql.conf"), &format!("{name} = {value}\n"));
        check(self.ctl(&["reload"]), "pg_ctl reload");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop", "-m", "immediate"]);
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).expect("the config file opens");
    file.write_all(text.as_bytes()).expect("the config file is written");
}
