//! A throw-away PostgreSQL cluster for integration tests.
//!
//! `Postgres::start()` runs `initdb` into a fresh temp dir and `postgres` on a free loopback port
//! (no system service, no Unix socket outside the temp dir), waits until the superuser can log in,
//! and on drop shuts the server down and removes the directory. Every cluster has its own port and
//! directory, so tests may run in parallel.
//!
//! Authentication is **scram-sha-256 for every connection** (`initdb --auth=scram-sha-256`, no
//! `trust` line in pg_hba.conf), so a successful [`Postgres::try_login`] proves a password. The
//! superuser (`postgres`) gets a random password: hand [`Postgres::superuser`] /
//! [`Postgres::superuser_password`] and [`Postgres::openbao_connection_url`] to OpenBao's
//! `postgresql-database-plugin`.
//!
//! `initdb` and `postgres` refuse to run as root: as root they run as the `postgres` system user
//! (`runuser -u postgres --`), and the temp dir is handed to that user. Binaries are found through
//! `$PG_BIN_DIR`, then a `$PATH` directory holding both `initdb` and `postgres`, then the newest
//! `/usr/lib/postgresql/<major>/bin` (Debian's layout). `make tools` installs Debian's
//! `postgresql` package when none is found.
//!
//! Logins are real connections made by `psql` (it ships with the server package), so this file
//! needs nothing but std, tokio and tempfile.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const START_ATTEMPTS: usize = 3;
/// The system user the server runs as when the tests run as root.
const RUN_AS: &str = "postgres";

pub struct Postgres {
    child: Option<Child>,
    port: u16,
    password: String,
    bin_dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    dir: Option<tempfile::TempDir>,
}

/// How a login attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// Connected and ran `SELECT current_user`; holds its answer.
    Ok(String),
    /// The server refused (wrong password, unknown or expired role, …); holds psql's message.
    Refused(String),
}

impl Login {
    pub fn is_ok(&self) -> bool {
        matches!(self, Login::Ok(_))
    }
}

impl Postgres {
    /// initdb + start a fresh cluster and wait until the superuser can log in with its password.
    pub async fn start() -> Postgres {
        let bin_dir = find_bin_dir();
        let as_root = running_as_root();
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("postgres-test-")
                .tempdir_in(temp_base(as_root))
                .expect("create temp dir for PostgreSQL");
            let password = random_password();
            let data_dir = dir.path().join("data");
            let log_path = dir.path().join("postgres.log");
            let pwfile = dir.path().join("pwfile");
            std::fs::write(&pwfile, &password).expect("write initdb password file");
            if as_root {
                hand_to_run_as_user(dir.path());
                hand_to_run_as_user(&pwfile);
            }

            let out = server_command(&bin_dir, "initdb", as_root)
                .arg("-D")
                .arg(&data_dir)
                .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8"])
                .args(["--no-locale", "--no-sync"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("running initdb from {}: {e}", bin_dir.display()));
            let _ = std::fs::remove_file(&pwfile);
            assert!(
                out.status.success(),
                "initdb failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );

            let port = free_port();
            let log = std::fs::File::create(&log_path).expect("create PostgreSQL log file");
            if as_root {
                hand_to_run_as_user(&log_path);
            }
            let log_err = log.try_clone().expect("clone PostgreSQL log handle");
            let child = server_command(&bin_dir, "postgres", as_root)
                .arg("-D")
                .arg(&data_dir)
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                // Unix socket inside the temp dir, never /var/run/postgresql.
                .arg("-k")
                .arg(dir.path())
                .args(["-c", "fsync=off", "-c", "max_connections=50"])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log_err))
                .spawn()
                .unwrap_or_else(|e| panic!("spawning postgres from {}: {e}", bin_dir.display()));

            let mut pg = Postgres {
                child: Some(child),
                port,
                password,
                bin_dir: bin_dir.clone(),
                data_dir,
                log_path,
                dir: Some(dir),
            };
            match pg.wait_ready().await {
                Ok(()) => return pg,
                Err(reason) => {
                    let log = pg.log_contents();
                    last_failure = format!(
                        "PostgreSQL did not become ready: {reason}\n--- {} ---\n{}",
                        pg.log_path.display(),
                        tail(&log, 40)
                    );
                    pg.stop();
                    // Free-port selection can race with another process; try another port.
                    if log.contains("could not bind") && attempt < START_ATTEMPTS {
                        continue;
                    }
                    panic!("{last_failure}");
                }
            }
        }
        panic!("{last_failure}");
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database every login uses.
    pub fn database(&self) -> &'static str {
        "postgres"
    }

    pub fn superuser(&self) -> &'static str {
        "postgres"
    }

    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// `connection_url` for OpenBao's `database/config/<name>` (templated; pass `username` and
    /// `password` beside it).
    pub fn openbao_connection_url(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// Creation statement for an OpenBao database role: a login role whose password expires with
    /// the lease (`VALID UNTIL '{{expiration}}'`).
    pub fn creation_statement() -> &'static str {
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A real TCP connection with password authentication as `user`; runs `SELECT current_user`.
    pub async fn try_login(&self, user: &str, password: &str) -> Login {
        match self.psql(user, password, "SELECT current_user").await {
            Ok(out) => Login::Ok(out),
            Err(e) => Login::Refused(e),
        }
    }

    /// Run `sql` as the superuser (password login); returns psql's unaligned, tuples-only output.
    pub async fn superuser_sql(&self, sql: &str) -> Result<String, String> {
        self.psql(self.superuser(), &self.password, sql).await
    }

    /// Whether a role named `name` exists (superuser query).
    pub async fn role_exists(&self, name: &str) -> bool {
        let escaped = name.replace('\'', "''");
        let out = self
            .superuser_sql(&format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = '{escaped}'"
            ))
            .await
            .unwrap_or_else(|e| panic!("querying pg_roles: {e}"));
        out.trim() == "1"
    }

    async fn psql(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        let conninfo = format!(
            "host=127.0.0.1 port={} dbname=postgres user='{}' connect_timeout=10 sslmode=disable",
            self.port,
            user.replace('\\', "\\\\").replace('\'', "\\'")
        );
        let out = tokio::process::Command::new(self.tool("psql"))
            .args(["-X", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-d")
            .arg(conninfo)
            .arg("-c")
            .arg(sql)
            .env("PGPASSWORD", password)
            .env_remove("PGSERVICE")
            .env_remove("PGSERVICEFILE")
            .env("PGPASSFILE", "/dev/null")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("running psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// `<bin_dir>/<name>`, else `name` from `$PATH` (Debian's pg_wrapper for psql).
    fn tool(&self, name: &str) -> PathBuf {
        let local = self.bin_dir.join(name);
        if is_executable(&local) {
            local
        } else {
            PathBuf::from(name)
        }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("postgres exited early with {status}"));
                }
            }
            let last = match self.superuser_sql("SELECT 1").await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "timed out after {}s; last: {last}",
                    READY_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Immediate shutdown (SIGQUIT to the postmaster), then SIGKILL if it lingers. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Under runuser the child is runuser, not the postmaster: signal the postmaster by the
        // pid in its pid file (first line), falling back to the direct child.
        let postmaster = std::fs::read_to_string(self.data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()));
        let target = postmaster.unwrap_or(child.id());
        signal(target, "QUIT");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    signal(target, "KILL");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        // The postmaster is gone once runuser returned; make sure no backend outlives it.
        if let Some(pid) = postmaster {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!(
                    "PostgreSQL log kept at {}",
                    kept.join("postgres.log").display()
                );
            }
        }
        // Otherwise TempDir removes the cluster.
    }
}

/// `name` from `bin_dir`, wrapped in `runuser -u postgres --` when running as root.
fn server_command(bin_dir: &Path, name: &str, as_root: bool) -> Command {
    let bin = bin_dir.join(name);
    if as_root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", RUN_AS, "--"]).arg(bin);
        cmd
    } else {
        Command::new(bin)
    }
}

/// `$PG_BIN_DIR`, a `$PATH` dir with both `initdb` and `postgres`, or the newest
/// `/usr/lib/postgresql/<major>/bin`.
pub fn find_bin_dir() -> PathBuf {
    let has_both =
        |dir: &Path| is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres"));
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        let dir = PathBuf::from(dir);
        assert!(
            has_both(&dir),
            "PG_BIN_DIR={} holds no initdb + postgres",
            dir.display()
        );
        return dir;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_both(&dir) {
                // Debian symlinks a few binaries into /usr/local/bin: use the real directory,
                // where psql and pg_ctl live too.
                return std::fs::canonicalize(dir.join("initdb"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .filter(|d| has_both(d))
                    .unwrap_or(dir);
            }
        }
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_both(&bin).then_some((major, bin))
        })
        .collect();
    versioned.sort();
    versioned.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found (looked at $PG_BIN_DIR, $PATH and \
             /usr/lib/postgresql/*/bin); run `make tools` (installs Debian's `postgresql`)"
        )
    })
}

/// `$TMPDIR` (or /tmp); as root, /tmp when `$TMPDIR` is not searchable by the `postgres` user.
fn temp_base(as_root: bool) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::temp_dir();
    let searchable = std::fs::metadata(&base)
        .map(|m| m.permissions().mode() & 0o001 != 0)
        .unwrap_or(false);
    if as_root && !searchable {
        PathBuf::from("/tmp")
    } else {
        base
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// chown `path` to the `postgres` user (and its primary group).
fn hand_to_run_as_user(path: &Path) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .arg(flag)
            .arg(RUN_AS)
            .output()
            .unwrap_or_else(|e| panic!("running `id {flag} {RUN_AS}`: {e}"));
        assert!(
            out.status.success(),
            "no `{RUN_AS}` system user (install Debian's postgresql package: `make tools`)"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    std::os::unix::fs::chown(path, Some(id("-u")), Some(id("-g")))
        .unwrap_or_else(|e| panic!("chown {} to {RUN_AS}: {e}", path.display()));
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local_addr")
        .port()
}

/// 32 alphanumerics from the kernel's RNG (no rand dependency).
fn random_password() -> String {
    use std::io::Read;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (nanos >> (i % 16 * 8)) as u8 ^ (std::process::id() as u8).wrapping_add(i as u8);
        }
    }
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
