//! [`TempPostgres`]: a throwaway PostgreSQL server in a temporary directory.

use std::fmt;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

/// What to tell someone whose machine lacks the PostgreSQL server.
const INSTALL_HINT: &str = "install the PostgreSQL server: `apt-get install postgresql` on \
     Debian/Ubuntu (the tests need initdb, pg_ctl and postgres; `.ci/run` installs them), or \
     point SHOAL_PG_BINDIR at a directory holding them";

/// Settings every server gets. Durability is what the stores are tested for, so `fsync` and
/// `synchronous_commit` stay on, as in production.
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "'127.0.0.1'"),
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "on"),
    ("max_connections", "200"),
    ("logging_collector", "off"),
    ("log_min_messages", "warning"),
    ("log_line_prefix", "'%m [%p] '"),
];

/// How often to try another port when the chosen one was taken in the meantime.
const PORT_ATTEMPTS: usize = 10;

/// Configures a [`TempPostgres`] before starting it.
#[derive(Debug, Default, Clone)]
pub struct TempPostgresBuilder {
    settings: Vec<(String, String)>,
}

impl TempPostgresBuilder {
    /// Adds a server setting (a `postgresql.conf` line `name = value`; quote string values
    /// yourself, as in `.setting("work_mem", "'64MB'")`). Later settings win.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Creates the cluster with `initdb` and starts the server. Panics, saying why, if the
    /// PostgreSQL binaries are missing or the server does not start.
    pub fn start(self) -> TempPostgres {
        TempPostgres::create(self)
    }
}

/// A throwaway PostgreSQL server: `initdb` into a temporary directory, `pg_ctl start` on a free
/// loopback port with trust authentication for the user `postgres`.
///
/// * When the current user is root, the server runs as the `postgres` user (via
///   `runuser -u postgres --`), which owns the temporary directory.
/// * The binaries are found with `$SHOAL_PG_BINDIR`, `pg_config --bindir`, or
///   `/usr/lib/postgresql/*/bin` (newest version first). If they are missing, starting
///   **panics** with a message saying how to install them: tests are never skipped silently.
/// * `fsync` and `synchronous_commit` stay on: acknowledged commits survive a crash of the
///   server, which is what the durability tests check.
/// * On drop the server is stopped (`-m immediate`) and the directory removed. A watchdog
///   process does the same if the test process dies without dropping it (SIGKILL, or a
///   [`shared`](Self::shared) server at process exit).
///
/// [`stop`](Self::stop), [`kill`](Self::kill) and [`restart`](Self::restart) stop and start
/// the same server on the same port, for fault tests.
pub struct TempPostgres {
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    bin: PathBuf,
    /// `Some("postgres")` when we are root and run the server tools as that user.
    run_as: Option<String>,
    running: Mutex<bool>,
    watchdog: Mutex<Option<Child>>,
}

impl fmt::Debug for TempPostgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TempPostgres")
            .field("url", &self.url())
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

impl TempPostgres {
    /// Starts a server with the default settings. Panics, saying why, if the PostgreSQL
    /// binaries are missing or the server does not start.
    pub fn start() -> TempPostgres {
        Self::builder().start()
    }

    /// A builder, to add server settings before starting.
    pub fn builder() -> TempPostgresBuilder {
        TempPostgresBuilder::default()
    }

    /// One server shared by every caller in this process, started on first use. It is never
    /// dropped; its watchdog stops it and removes its directory once the process has exited.
    /// Tests sharing it must keep their data apart (their own schema or names) and must not
    /// stop it.
    pub fn shared() -> &'static TempPostgres {
        static SHARED: OnceLock<TempPostgres> = OnceLock::new();
        SHARED.get_or_init(TempPostgres::start)
    }

    /// The connection URL: `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The directory holding the binaries in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The end of the server log (at most `max_bytes`), for failure messages.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        let log = std::fs::read(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(max_bytes);
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    /// Whether the server is running (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        *self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`: open connections are terminated,
    /// committed data is kept) and waits until it is down. Panics if it does not stop.
    pub fn stop(&self) {
        self.shut_down("fast");
    }

    /// Stops the server abruptly (`pg_ctl stop -m immediate`: no shutdown checkpoint, as after
    /// a crash; the next start runs crash recovery) and waits until it is down.
    pub fn kill(&self) {
        self.shut_down("immediate");
    }

    /// Starts the stopped server again on the same port and waits until it accepts
    /// connections. Panics if it does not start.
    pub fn restart(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if *running {
            return;
        }
        let out = self.pg_ctl_start();
        if !out.status.success() {
            panic!(
                "TempPostgres: restarting the server on port {} failed: {}\n--- server log ---\n{}",
                self.port,
                output_text(&out),
                self.log_tail(4000)
            );
        }
        *running = true;
    }

    fn shut_down(&self, mode: &str) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if !*running {
            return;
        }
        let out = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .output()
            .expect("run pg_ctl stop");
        if !out.status.success() {
            panic!(
                "TempPostgres: pg_ctl stop -m {mode} failed: {}\n--- server log ---\n{}",
                output_text(&out),
                self.log_tail(4000)
            );
        }
        *running = false;
    }

    fn create(builder: TempPostgresBuilder) -> TempPostgres {
        let bin = find_bin_dir();
        let run_as = if running_as_root() {
            Some("postgres".to_owned())
        } else {
            None
        };

        // As root the server runs as `postgres`, which must be able to reach the directory:
        // use /tmp (world-traversable) rather than a TMPDIR that may be private to root.
        let base = if run_as.is_some() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let root = tempfile::Builder::new()
            .prefix("shoal-pg-")
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("TempPostgres: cannot create a directory in {base:?}: {e}"))
            .keep();
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user);
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("TempPostgres: cannot chown {root:?} to {user}: {e}"));
        }
        let data = root.join("data");
        let log = root.join("server.log");

        let mut pg = TempPostgres {
            root,
            data,
            log,
            port: 0,
            bin,
            run_as,
            running: Mutex::new(false),
            watchdog: Mutex::new(None),
        };
        // From here on, a panic drops `pg`, which cleans up what exists.
        pg.spawn_watchdog();

        let out = pg
            .tool("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                // Only initdb's own writes are not synced; the server keeps fsync on.
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        if !out.status.success() {
            panic!("TempPostgres: initdb failed: {}", output_text(&out));
        }

        let mut conf = String::from("\n# added by shoal-testkit\n");
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            pg.root.display()
        ));
        for (name, value) in BASE_SETTINGS {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        for (name, value) in &builder.settings {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        let conf_path = pg.data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path)
            .unwrap_or_else(|e| panic!("TempPostgres: cannot read {conf_path:?}: {e}"));
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)
            .unwrap_or_else(|e| panic!("TempPostgres: cannot write {conf_path:?}: {e}"));

        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            pg.port = free_port();
            let out = pg.pg_ctl_start();
            if out.status.success() {
                *pg.running.lock().unwrap_or_else(|e| e.into_inner()) = true;
                return pg;
            }
            let log = pg.log_tail(4000);
            last_failure = format!("{}\n--- server log ---\n{log}", output_text(&out));
            if !(log.contains("could not bind") || log.contains("already in use")) {
                break;
            }
        }
        panic!("TempPostgres: the server did not start: {last_failure}");
    }

    fn pg_ctl_start(&self) -> Output {
        self.tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port))
            .arg("start")
            // pg_ctl leaves the server running in the background; it must not hold the test's
            // output pipes open.
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl start")
    }

    /// A command running one of the server tools, as the `postgres` user when we are root.
    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(path);
                cmd
            }
            None => Command::new(path),
        }
    }

    /// Starts a process that waits for this process to end, then stops the server and removes
    /// the directory: the cleanup for a test process that dies without dropping us.
    fn spawn_watchdog(&self) {
        const SCRIPT: &str = r#"
parent=$1; runas=$2; pgctl=$3; data=$4; root=$5
while kill -0 "$parent" 2>/dev/null; do sleep 1; done
if [ -f "$data/postmaster.pid" ]; then
    if [ -n "$runas" ]; then
        runuser -u "$runas" -- "$pgctl" -D "$data" -m immediate -w stop
    else
        "$pgctl" -D "$data" -m immediate -w stop
    fi
fi
rm -rf "$root"
"#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("shoal-pg-watchdog")
            .arg(std::process::id().to_string())
            .arg(self.run_as.as_deref().unwrap_or(""))
            .arg(self.bin.join("pg_ctl"))
            .arg(&self.data)
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C meant for the tests must not kill the cleanup.
            .process_group(0)
            .spawn();
        match child {
            Ok(child) => *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(child),
            Err(e) => eprintln!("TempPostgres: no watchdog (cannot run sh: {e})"),
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let running = *self.running.get_mut().unwrap_or_else(|e| e.into_inner());
        if running {
            let _ = self
                .tool("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "-t", "60", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut watchdog) = self
            .watchdog
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("TempPostgres: cannot bind a loopback port")
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The uid and gid of `user`.
fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, user]).output().ok();
        out.filter(|o| o.status.success())
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "TempPostgres: running as root, the server must run as the user {user:?}, \
                     which does not exist; {INSTALL_HINT} (the package creates the user)"
                )
            })
    };
    (id("-u"), id("-g"))
}

fn has_server_tools(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|tool| dir.join(tool).is_file())
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`, or a panic saying how to get them.
fn find_bin_dir() -> PathBuf {
    let mut looked = Vec::new();
    if let Some(dir) = std::env::var_os("SHOAL_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_server_tools(&dir) {
            return dir;
        }
        panic!(
            "TempPostgres: SHOAL_PG_BINDIR={} holds no initdb, pg_ctl and postgres; {INSTALL_HINT}",
            dir.display()
        );
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server_tools(&dir) {
            return dir;
        }
        looked.push(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    for (_, dir) in versions {
        if has_server_tools(&dir) {
            return dir;
        }
        looked.push(dir);
    }
    for dir in ["/usr/local/pgsql/bin", "/usr/lib/postgresql/bin"] {
        let dir = PathBuf::from(dir);
        if has_server_tools(&dir) {
            return dir;
        }
        looked.push(dir);
    }
    panic!(
        "TempPostgres: PostgreSQL server binaries not found (looked in pg_config --bindir, \
         /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin: {looked:?}); {INSTALL_HINT}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    #[test]
    fn starts_stops_restarts_and_cleans_up() {
        let pg = TempPostgres::builder().setting("work_mem", "'8MB'").start();
        assert!(pg.url().starts_with("postgres://postgres@127.0.0.1:"));
        assert!(TcpStream::connect(("127.0.0.1", pg.port())).is_ok());
        let conf = std::fs::read_to_string(pg.data_dir().join("postgresql.conf")).unwrap();
        assert!(conf.contains("fsync = on") && conf.contains("work_mem = '8MB'"));

        pg.stop();
        assert!(!pg.is_running());
        assert!(
            TcpStream::connect(("127.0.0.1", pg.port())).is_err(),
            "the port still accepts connections after stop"
        );
        pg.restart();
        assert!(TcpStream::connect(("127.0.0.1", pg.port())).is_ok());
        pg.kill();
        pg.restart();
        assert!(TcpStream::connect(("127.0.0.1", pg.port())).is_ok());

        let root = pg.data_dir().parent().unwrap().to_owned();
        drop(pg);
        assert!(!root.exists(), "the directory is removed on drop");
    }
}
