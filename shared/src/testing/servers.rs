//! Private servers for the tests that take the shop past one machine, from Debian's packages,
//! each on free ports of its own and stopped when dropped, so such tests stay parallel:
//!
//! - [`PrivatePostgres`]: a PostgreSQL server of the test's own (`initdb` in a temporary
//!   folder), which the test may stop, restart or kill without disturbing the shared server
//!   every other test uses. PostgreSQL refuses to run as root, so under root it is started as
//!   the `postgres` system user (which the Debian packages create), in a folder it owns.
//! - [`Haproxy`]: a load balancer in front of several api instances.
//! - [`PgBouncer`]: a transaction-mode pooler in front of the shared PostgreSQL, with fewer
//!   server connections than clients so transactions really hop between them. It needs
//!   PgBouncer 1.21 or later (`PGBOUNCER_BIN`, which `scripts/test.sh` builds from Debian's
//!   source package). PgBouncer refuses to run as root, so under root it drops to `postgres`.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use super::free_port;

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program` with `args`, as the `postgres` user when this process is root.
fn as_server_user(program: &str, args: &[&str]) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]).args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

/// A fresh folder under the system temp folder that the server user can read and write.
fn server_folder(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("orderly-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create the server folder");
    if running_as_root() {
        let status = Command::new("chown")
            .args(["postgres:postgres", &dir.display().to_string()])
            .status()
            .expect("chown runs");
        assert!(status.success(), "chown of {}", dir.display());
    }
    dir
}

fn wait_for_port(port: u16, what: &str) {
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not start listening on port {port}");
}

/// A PostgreSQL server of one test's own, on a free port, with `fsync` off (it holds nothing
/// worth a disk flush) and the shop's migrations left to the test.
pub struct PrivatePostgres {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    /// Creates the cluster (`initdb`, trust authentication) and starts it.
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                let mut found: Vec<PathBuf> = versions
                    .filter_map(Result::ok)
                    .map(|v| v.path().join("bin"))
                    .filter(|bin| bin.join("initdb").is_file())
                    .collect();
                found.sort();
                found.pop()
            })
            .expect("PostgreSQL's server binaries under /usr/lib/postgresql/<version>/bin");
        let dir = server_folder("postgres");
        let data = dir.join("data").display().to_string();
        let initdb = bin.join("initdb").display().to_string();
        let output = as_server_user(
            &initdb,
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .output()
        .expect("initdb runs");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let server = Self {
            port: free_port(),
            dir,
            bin,
        };
        server.restart();
        server
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.dir.join("data").display().to_string();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        as_server_user(&pg_ctl, &all)
            .stdin(Stdio::null())
            .output()
            .expect("pg_ctl runs")
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub fn restart(&self) {
        let options = format!(
            "-p {} -k '' -h 127.0.0.1 -c fsync=off -c max_connections=200",
            self.port
        );
        let log = self.dir.join("server.log").display().to_string();
        let output = self.pg_ctl(&["-o", &options, "-l", &log, "-w", "-t", "60", "start"]);
        assert!(
            output.status.success(),
            "the private PostgreSQL did not start: {} {}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
        wait_for_port(self.port, "the private PostgreSQL");
    }

    /// Stops the server at once (`immediate`: no checkpoint, every connection cut, as a crash
    /// of the server would; restart recovers from the WAL).
    pub fn stop_immediately(&self) {
        let output = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        assert!(
            output.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HAProxy on a free port balancing HTTP requests round robin over `backends`
/// (`127.0.0.1:<port>` each), checking each on `/health/live`, and saying in an
/// `x-served-by` response header which backend (`api1`, `api2`, ...) answered.
pub struct Haproxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl Haproxy {
    /// Starts it in front of `backends` and waits until every backend passed its check.
    pub fn start(backends: &[u16]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("orderly-haproxy-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the haproxy folder");
        let port = free_port();
        let stats = free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, backend)| {
                format!(
                    "  server api{} 127.0.0.1:{backend} check inter 200ms\n",
                    i + 1
                )
            })
            .collect();
        let config = format!(
            "global\n\
             \x20 maxconn 2000\n\
             defaults\n\
             \x20 mode http\n\
             \x20 timeout connect 2s\n\
             \x20 timeout client 30s\n\
             \x20 timeout server 30s\n\
             \x20 option forwardfor\n\
             frontend shop\n\
             \x20 bind 127.0.0.1:{port}\n\
             \x20 default_backend apis\n\
             frontend stats\n\
             \x20 bind 127.0.0.1:{stats}\n\
             \x20 http-request return status 200 content-type text/plain lf-string \"%[nbsrv(apis)]\"\n\
             backend apis\n\
             \x20 balance roundrobin\n\
             \x20 option httpchk GET /health/live\n\
             \x20 http-response set-header x-served-by %[srv_name]\n\
             {servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).expect("write the configuration");
        let program = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .unwrap_or("haproxy");
        let child = Command::new(program)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy is installed (apt-get install haproxy)");
        let haproxy = Self {
            port,
            dir,
            child: Some(child),
        };
        wait_for_port(port, "haproxy");
        // Up means every backend passed its health check (the stats frontend counts them).
        let expected = backends.len().to_string();
        for _ in 0..400 {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", stats)) {
                use std::io::{Read, Write};
                let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.trim_end().ends_with(&format!("\n{expected}")) {
                    return haproxy;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("haproxy's backends never all passed their health checks");
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PgBouncer in transaction mode on a free port, in front of the PostgreSQL at
/// `127.0.0.1:<server_port>`, with `max_prepared_statements` set (sqlx names its statements) and
/// a pool of `pool_size` server connections per database and user; stopped when dropped.
pub struct PgBouncer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl PgBouncer {
    /// Starts it and waits until it listens. Panics, saying how to get one, when `PGBOUNCER_BIN`
    /// is not set: a test that silently skipped would pass in a CI that never ran it.
    pub fn start(server_port: u16, pool_size: u32, max_prepared_statements: u32) -> Self {
        let Some(program) = std::env::var_os("PGBOUNCER_BIN") else {
            panic!(
                "PGBOUNCER_BIN is not set: run the tests with scripts/test.sh, which builds \
                 PgBouncer 1.24 (transaction mode needs 1.21 or later) and sets it"
            );
        };
        let dir = server_folder("pgbouncer");
        let port = free_port();
        std::fs::write(
            dir.join("userlist.txt"),
            "\"postgres\" \"\"\n\"root\" \"\"\n",
        )
        .expect("write the user list");
        let config = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={server_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             max_prepared_statements = {max_prepared_statements}\n\
             default_pool_size = {pool_size}\n\
             max_client_conn = 1000\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {dir}/pgbouncer.log\n",
            dir = dir.display(),
        );
        let path = dir.join("pgbouncer.ini");
        std::fs::write(&path, config).expect("write the configuration");
        let mut command = Command::new(&program);
        if running_as_root() {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("{} does not run: {error}", program.display()));
        let bouncer = Self {
            port,
            dir,
            child: Some(child),
        };
        wait_for_port(port, "pgbouncer");
        bouncer
    }

    /// `url` (a PostgreSQL URL) pointed at this PgBouncer instead of the server.
    pub fn url_for(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).expect("a PostgreSQL URL");
        url.set_host(Some("127.0.0.1")).expect("a host");
        url.set_port(Some(self.port)).expect("a port");
        url.to_string()
    }

    /// What PgBouncer logged (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
