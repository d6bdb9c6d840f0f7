//! A real pgbouncer (Debian's package) of a test's own, in transaction mode
//! on a free port, in front of the shared PostgreSQL server: the pooler
//! that swallows LISTEN/NOTIFY and session state, for the poll-only tests.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::cluster::free_port;
use super::postgres_admin_url;

/// A running pgbouncer; killed when dropped.
pub struct Pgbouncer {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Pgbouncer {
    /// Starts pgbouncer in transaction mode in front of the tests' server.
    pub fn start() -> Self {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .expect("pgbouncer is needed for the poll-only tests (Debian's `pgbouncer`); tools/install-test-deps installs it");
        let upstream = url::Url::parse(&postgres_admin_url()).expect("the admin URL parses");
        let (host, upstream_port) =
            (upstream.host_str().unwrap_or("127.0.0.1").to_string(), upstream.port().unwrap_or(5432));
        let dir = tempfile::Builder::new().prefix("stepbox-pgbouncer-").tempdir().expect("a temporary folder");
        let port = free_port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(dir.path().join("userlist.txt"), "\"postgres\" \"\"\n").expect("userlist");
        let config = format!(
            "[databases]\n* = host={host} port={upstream_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {}\npool_mode = transaction\n\
             ignore_startup_parameters = extra_float_digits,options\nmax_client_conn = 500\ndefault_pool_size = 20\n\
             logfile = {}\npidfile = {}\n",
            path("userlist.txt"),
            path("pgbouncer.log"),
            path("pgbouncer.pid"),
        );
        std::fs::write(dir.path().join("pgbouncer.ini"), config).expect("pgbouncer.ini");
        let root = Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.starts_with(b"0\n"));
        let mut command = if root {
            // pgbouncer refuses to run as root.
            let chown = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status();
            assert!(chown.is_ok_and(|status| status.success()), "chown of the pgbouncer folder");
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", binary]);
            command
        } else {
            Command::new(binary)
        };
        // Quiet: it logs to its file only.
        let child = command.arg("-q").arg(path("pgbouncer.ini")).spawn().expect("pgbouncer starts");
        let bouncer = Self { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pgbouncer did not listen on {port}:\n{}", bouncer.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        bouncer
    }

    /// A journal URL for `database` through this pooler.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}?pooler=transaction", self.port)
    }

    /// pgbouncer's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        // runuser forwards the signal to pgbouncer.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}
