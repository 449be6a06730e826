//! A throwaway PostgreSQL cluster shared by all tests of one test process.
//!
//! Tests call [`PgCluster::shared`] and then [`PgCluster::create_database`] to get a fresh,
//! empty database of their own. The cluster runs from a temporary directory with durability
//! switched off, and a watchdog process stops it and deletes its files when the test process
//! exits, however it exits.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Database superuser created by `initdb`; every URL connects as this role.
const DB_USER: &str = "emporium";
/// OS account created (as root only) when there is no `postgres` account to run the server.
const FALLBACK_OS_USER: &str = "emporium-pg";
/// Attempts to start the server, each on a newly picked port.
const START_ATTEMPTS: u32 = 5;
/// Lines of the server log quoted in a start failure.
const LOG_TAIL_LINES: usize = 40;

// The script reads its stdin until EOF. Only the test process holds the write end (Rust opens
// pipes close-on-exec, so no other child inherits it), and the kernel closes it however that
// process ends, SIGKILL included, with no polling delay; polling the pid with `kill -0` could
// also take a reused pid for the test process and keep the server forever. Terminal signals
// are ignored so a Ctrl-C of `cargo test` cannot kill the watchdog before it has cleaned up.
const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT TERM
root=$1
shift
while read -r _; do :; done
"$@" >/dev/null 2>&1
rm -rf -- "$root"
"#;

/// Whether the environment demands PostgreSQL tests: `EMPORIUM_REQUIRE_POSTGRES` is `1` or
/// `true`.
///
/// When it does, a missing PostgreSQL installation fails the tests instead of skipping them.
pub fn require_postgres() -> bool {
    std::env::var("EMPORIUM_REQUIRE_POSTGRES").is_ok_and(|value| {
        let value = value.trim();
        value == "1" || value.eq_ignore_ascii_case("true")
    })
}

/// A throwaway PostgreSQL cluster, started once per test process and shared by its tests.
///
/// It listens on `127.0.0.1` on a free port, trusts every connection, and runs with `fsync`,
/// synchronous commit and full-page writes off: fast, and worthless after a crash, which is
/// fine for tests. Its superuser is `emporium`.
#[derive(Debug)]
pub struct PgCluster {
    port: u16,
    bin: PgBin,
    runner: Runner,
    root: PathBuf,
    data: PathBuf,
    next_db: AtomicU64,
    watchdog: Mutex<Option<Watchdog>>,
}

impl PgCluster {
    /// The cluster of this test process, started on first use (which takes a second or two).
    ///
    /// Returns `None` when no PostgreSQL binaries are installed and
    /// [`require_postgres`] is false: a warning explaining that the PostgreSQL tests are
    /// skipped is printed to stderr once, and the caller should return early.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is required but missing, when `EMPORIUM_PG_BIN` names an unusable
    /// directory, or when the binaries are there but the cluster fails to start (the message
    /// quotes the server log). Every later call panics the same way.
    pub fn shared() -> Option<&'static PgCluster> {
        static SHARED: OnceLock<Result<Option<PgCluster>, String>> = OnceLock::new();
        // The initializer returns errors instead of panicking: a panic would leave the cell
        // empty and make each following test pay for another failed start.
        match SHARED.get_or_init(init_shared) {
            Ok(cluster) => cluster.as_ref(),
            Err(message) => panic!("{message}"),
        }
    }

    /// Creates a new, empty database with a unique name and returns its URL.
    ///
    /// Safe to call from many threads at once.
    ///
    /// # Panics
    ///
    /// When `createdb` fails, for instance after [`PgCluster::stop`].
    pub fn create_database(&self) -> String {
        if self.is_stopped() {
            panic!("create_database: the shared PostgreSQL cluster has been stopped");
        }
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("emporium_test_{}_{n}", std::process::id());
        let port = self.port.to_string();
        let mut command = Command::new(&self.bin.createdb);
        scrub_pg_env(&mut command);
        command
            .args(["-h", "127.0.0.1", "-p", &port, "-U", DB_USER, "-w"])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        if self.bin.major >= 15 {
            // The WAL_LOG default of 15+ pushes the whole template through the WAL, while
            // with fsync off the two checkpoints of FILE_COPY cost little. Measured here
            // with 20 createdb at once (the usual burst when parallel tests start),
            // FILE_COPY finished first in every paired run, 30-60% sooner; one at a time
            // neither won consistently. Older versions always copy files.
            command.args(["--strategy", "FILE_COPY"]);
        }
        command.arg(&name);
        match command.output() {
            Ok(output) if output.status.success() => self.url(&name),
            Ok(output) => panic!(
                "createdb {name} on PostgreSQL port {port} failed ({}):\n{}",
                output.status,
                output_text(&output)
            ),
            Err(err) => panic!("cannot run {}: {err}", self.bin.createdb.display()),
        }
    }

    /// The URL of database `db` in this cluster:
    /// `postgres://emporium@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{DB_USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The TCP port the cluster listens on, on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the cluster at once (`pg_ctl stop -m immediate`) and deletes its files.
    ///
    /// Not needed at the end of a test run, where it happens by itself. Waits until the
    /// server is gone; calling it again does nothing. The cluster cannot be restarted.
    pub fn stop(&self) {
        let watchdog = self
            .watchdog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(Watchdog {
            lifeline,
            mut child,
        }) = watchdog
        else {
            return;
        };
        // Closing the lifeline makes the watchdog run its cleanup now, as it would at exit,
        // so both ways out share one code path.
        drop(lifeline);
        let _ = child.wait();
        if self.root.exists() {
            // Only reached if the watchdog was killed before it could clean up.
            let _ = command_from(&stop_argv(&self.runner, &self.bin, &self.data)).output();
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    /// Restarts the server (`pg_ctl restart -m fast`) on the same port and
    /// data: every connection drops, and the server is back when this returns.
    /// Not `immediate`: this cluster runs with fsync and synchronous commit off,
    /// so a crash-like restart would lose commits it had acknowledged, which no
    /// real deployment does.
    pub fn restart(&self) -> Result<(), String> {
        let log = self.root.join("restart.log");
        let output = self
            .runner
            .command(
                &self.bin.pg_ctl(),
                &[
                    "-D".as_ref(),
                    self.data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-m".as_ref(),
                    "fast".as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "restart".as_ref(),
                ],
            )
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("pg_ctl restart failed: {}", output_text(&output)))
        }
    }

    fn is_stopped(&self) -> bool {
        self.watchdog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    /// Creates the temporary directory, the watchdog, the data directory and the server.
    fn start(bin: PgBin) -> Result<PgCluster, String> {
        let runner = if current_uid()? == 0 {
            Runner::as_user(os_user_for_root()?)?
        } else {
            Runner::Current
        };
        let temp = tempfile::Builder::new()
            .prefix("emporium-pg-")
            .tempdir()
            .map_err(|err| format!("cannot create a temporary directory for PostgreSQL: {err}"))?;
        let root = temp.path().to_path_buf();
        let data = root.join("data");
        let socket_dir = root.join("socket");
        let log = root.join("postgres.log");

        // From here on the watchdog owns the cleanup, so the directory outlives `temp` and
        // is removed even if this process dies halfway through starting the server.
        let watchdog = Watchdog::spawn(&root, &stop_argv(&runner, &bin, &data))
            .map_err(|err| format!("cannot spawn the PostgreSQL watchdog (/bin/sh): {err}"))?;
        let _ = temp.keep();

        fs::create_dir(&socket_dir)
            .map_err(|err| format!("cannot create {}: {err}", socket_dir.display()))?;
        if let Some(user) = runner.user() {
            run(Command::new("chown")
                .arg("-R")
                .arg(format!("{user}:"))
                .arg(&root))
            .map(drop)?;
        }

        run(runner
            .command(
                &bin.dir.join("initdb"),
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-A".as_ref(),
                    "trust".as_ref(),
                    "-U".as_ref(),
                    DB_USER.as_ref(),
                    "--no-sync".as_ref(),
                    "-E".as_ref(),
                    "UTF8".as_ref(),
                    // Independent of the caller's locale, which may not even be installed;
                    // also keeps server messages in English for the log checks below.
                    "--locale=C".as_ref(),
                ],
            )
            .current_dir(&root))
        .map(drop)?;

        let port = start_server(&bin, &runner, &root, &data, &socket_dir, &log)?;
        Ok(PgCluster {
            port,
            bin,
            runner,
            root,
            data,
            next_db: AtomicU64::new(0),
            watchdog: Mutex::new(Some(watchdog)),
        })
    }
}

fn init_shared() -> Result<Option<PgCluster>, String> {
    match find_binaries()? {
        Some(bin) => PgCluster::start(bin).map(Some),
        None if require_postgres() => Err(format!(
            "EMPORIUM_REQUIRE_POSTGRES is set, but {NOT_FOUND}. Install PostgreSQL \
             (apt-get install -y postgresql) or set EMPORIUM_PG_BIN to the directory holding \
             initdb and pg_ctl."
        )),
        None => {
            // Written to the stderr handle, not with eprintln!, which the libtest harness
            // captures and hides for passing tests: a skip must not go unnoticed.
            let _ = writeln!(
                io::stderr(),
                "\n\
                 ======================================================================\n\
                 WARNING: the PostgreSQL tests of this test binary are SKIPPED.\n\
                 Why: {NOT_FOUND}.\n\
                 To run them: install PostgreSQL (apt-get install -y postgresql), or set\n\
                 EMPORIUM_PG_BIN to the directory holding initdb and pg_ctl.\n\
                 To fail instead of skipping: set EMPORIUM_REQUIRE_POSTGRES=1.\n\
                 ======================================================================\n"
            );
            Ok(None)
        }
    }
}

const NOT_FOUND: &str = "no PostgreSQL server binaries (initdb, pg_ctl, postgres) were found \
                         in $EMPORIUM_PG_BIN, /usr/lib/postgresql/*/bin or on PATH";

/// Starts the server on a free port, retrying with another port when one is taken between
/// picking it and the server binding it.
fn start_server(
    bin: &PgBin,
    runner: &Runner,
    root: &Path,
    data: &Path,
    socket_dir: &Path,
    log: &Path,
) -> Result<u16, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port()?;
        // pg_ctl pastes these options into a /bin/sh command line.
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=1000 -k "
        )
        .into_bytes();
        options.extend_from_slice(sh_quote(socket_dir.as_os_str()).as_bytes());
        let options = OsString::from_vec(options);
        let log_start = fs::metadata(log).map_or(0, |meta| meta.len());
        let output = runner
            .command(
                &bin.pg_ctl(),
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "-o".as_ref(),
                    &options,
                    "start".as_ref(),
                ],
            )
            .current_dir(root)
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run pg_ctl: {err}"))?;
        if output.status.success() {
            return Ok(port);
        }
        let this_attempt = read_from(log, log_start);
        let port_taken = this_attempt.contains("Address already in use");
        if !(port_taken && attempt < START_ATTEMPTS) {
            return Err(format!(
                "PostgreSQL failed to start (attempt {attempt}, port {port}, binaries in {}):\n\
                 {}\n--- server log, last {LOG_TAIL_LINES} lines ---\n{}",
                bin.dir.display(),
                output_text(&output),
                tail(&read_from(log, 0), LOG_TAIL_LINES)
            ));
        }
    }
}

fn stop_argv(runner: &Runner, bin: &PgBin, data: &Path) -> Vec<OsString> {
    let args = ["-m", "immediate", "-w", "-t", "30", "stop"].map(OsStr::new);
    runner.argv(
        &bin.pg_ctl(),
        &[&["-D".as_ref(), data.as_os_str()][..], &args].concat(),
    )
}

fn free_port() -> Result<u16, String> {
    crate::ports::free_port().map_err(|err| format!("cannot find a free port on 127.0.0.1: {err}"))
}

/// The directory of a PostgreSQL installation.
#[derive(Debug)]
struct PgBin {
    dir: PathBuf,
    createdb: PathBuf,
    /// Major version, from `initdb --version`; 0 when it cannot be parsed.
    major: u32,
}

impl PgBin {
    fn pg_ctl(&self) -> PathBuf {
        self.dir.join("pg_ctl")
    }

    /// Checks that `dir` holds a server installation whose `initdb` runs.
    fn probe(dir: &Path) -> Result<PgBin, String> {
        for name in ["initdb", "pg_ctl", "postgres"] {
            if !dir.join(name).is_file() {
                return Err(format!("{} has no {name}", dir.display()));
            }
        }
        let mut version = Command::new(dir.join("initdb"));
        version.arg("--version").stdin(Stdio::null());
        // "initdb (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"
        let major = run(&mut version)?
            .split_whitespace()
            .nth(2)
            .and_then(|version| version.split('.').next()?.parse().ok())
            .unwrap_or(0);
        // Debian ships client programs in the same directory; the PATH copy is a fallback
        // for layouts that split them.
        let createdb = Some(dir.join("createdb"))
            .filter(|path| path.is_file())
            .or_else(|| find_on_path("createdb"))
            .ok_or_else(|| format!("no createdb in {} nor on PATH", dir.display()))?;
        Ok(PgBin {
            dir: dir.to_path_buf(),
            createdb,
            major,
        })
    }
}

/// Finds the binaries: `$EMPORIUM_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin` with a
/// server in it, else the directory `initdb` on PATH really lives in.
fn find_binaries() -> Result<Option<PgBin>, String> {
    if let Some(dir) = std::env::var_os("EMPORIUM_PG_BIN").filter(|dir| !dir.is_empty()) {
        // A wrong explicit setting is a mistake to report, not a reason to look elsewhere.
        return PgBin::probe(Path::new(&dir))
            .map(Some)
            .map_err(|err| format!("EMPORIUM_PG_BIN is unusable: {err}"));
    }

    let mut versions: Vec<(Vec<u64>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = name
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u64>, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    // Another version's client package creates its bin directory here too, without a
    // server in it, so the newest directory is not necessarily usable.
    if let Some(bin) = versions
        .iter()
        .rev()
        .find_map(|(_, dir)| PgBin::probe(dir).ok())
    {
        return Ok(Some(bin));
    }

    // initdb and pg_ctl look for `postgres` next to their resolved path, so a symlink on
    // PATH (as in /usr/local/bin on the project's machines) must be followed to the real
    // installation directory.
    Ok(find_on_path("initdb")
        .and_then(|initdb| fs::canonicalize(initdb).ok())
        .and_then(|initdb| PgBin::probe(initdb.parent()?).ok()))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// How server-side commands are run: `initdb` and `postgres` refuse to run as root.
#[derive(Debug)]
enum Runner {
    Current,
    Runuser { runuser: PathBuf, user: String },
    Su { su: PathBuf, user: String },
}

impl Runner {
    fn as_user(user: String) -> Result<Runner, String> {
        // root's PATH may lack the sbin directories where runuser lives.
        let find_tool = |name: &str| {
            find_on_path(name).or_else(|| {
                ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                    .iter()
                    .map(|dir| Path::new(dir).join(name))
                    .find(|path| path.is_file())
            })
        };
        if let Some(runuser) = find_tool("runuser") {
            Ok(Runner::Runuser { runuser, user })
        } else if let Some(su) = find_tool("su") {
            Ok(Runner::Su { su, user })
        } else {
            Err(format!(
                "running as root, but neither runuser nor su is available to run PostgreSQL \
                 as {user}"
            ))
        }
    }

    fn user(&self) -> Option<&str> {
        match self {
            Runner::Current => None,
            Runner::Runuser { user, .. } | Runner::Su { user, .. } => Some(user),
        }
    }

    fn argv(&self, program: &Path, args: &[&OsStr]) -> Vec<OsString> {
        let direct = std::iter::once(program.as_os_str())
            .chain(args.iter().copied())
            .map(OsStr::to_owned);
        match self {
            Runner::Current => direct.collect(),
            Runner::Runuser { runuser, user } => [
                runuser.as_os_str(),
                "-u".as_ref(),
                user.as_ref(),
                "--".as_ref(),
            ]
            .into_iter()
            .map(OsStr::to_owned)
            .chain(direct)
            .collect(),
            Runner::Su { su, user } => {
                let mut script = b"exec".to_vec();
                for arg in direct {
                    script.push(b' ');
                    script.extend_from_slice(sh_quote(&arg).as_bytes());
                }
                vec![
                    su.clone().into_os_string(),
                    "-s".into(),
                    "/bin/sh".into(),
                    "-c".into(),
                    OsString::from_vec(script),
                    user.into(),
                ]
            }
        }
    }

    fn command(&self, program: &Path, args: &[&OsStr]) -> Command {
        command_from(&self.argv(program, args))
    }
}

fn command_from(argv: &[OsString]) -> Command {
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    scrub_pg_env(&mut command);
    command
}

/// The OS account to run the server as when this process is root.
fn os_user_for_root() -> Result<String, String> {
    for user in ["postgres", FALLBACK_OS_USER] {
        if os_user_exists(user) {
            return Ok(user.to_owned());
        }
    }
    let created = Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home"])
        .args(["--shell", "/usr/sbin/nologin", FALLBACK_OS_USER])
        .stdin(Stdio::null())
        .output();
    // Several test processes may race to create the account; losing the race is fine.
    if os_user_exists(FALLBACK_OS_USER) {
        return Ok(FALLBACK_OS_USER.to_owned());
    }
    Err(format!(
        "running as root, there is no postgres account, and creating {FALLBACK_OS_USER} \
         failed: {}",
        match created {
            Ok(output) => output_text(&output),
            Err(err) => err.to_string(),
        }
    ))
}

fn os_user_exists(user: &str) -> bool {
    Command::new("id")
        .args(["-u", user])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The effective uid, from /proc (no libc allowed) or else `id -u`.
fn current_uid() -> Result<u32, String> {
    let from_proc = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        });
    if let Some(uid) = from_proc {
        return Ok(uid);
    }
    let output = Command::new("id")
        .arg("-u")
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run `id -u`: {err}"))?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| format!("cannot tell the current uid: {}", output_text(&output)))
}

/// The watchdog process that stops the cluster once its lifeline pipe closes.
#[derive(Debug)]
struct Watchdog {
    lifeline: ChildStdin,
    child: Child,
}

impl Watchdog {
    fn spawn(root: &Path, stop_argv: &[OsString]) -> io::Result<Watchdog> {
        let mut command = Command::new("/bin/sh");
        scrub_pg_env(&mut command);
        command
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("emporium-pg-watchdog")
            .arg(root)
            .args(stop_argv)
            .current_dir("/")
            .stdin(Stdio::piped())
            // Inherited output pipes would keep a capturing test runner waiting for EOF.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Out of the test's process group, so signals aimed at the whole job (Ctrl-C,
            // a runner killing the group) leave it alive to clean up.
            .process_group(0);
        let mut child = command.spawn()?;
        let Some(lifeline) = child.stdin.take() else {
            let _ = child.kill();
            return Err(io::Error::other("watchdog has no stdin pipe"));
        };
        Ok(Watchdog { lifeline, child })
    }
}

/// Keeps the caller's libpq settings (PGHOST, PGSSLMODE, PGOPTIONS, …) from redirecting or
/// breaking the commands aimed at the throwaway cluster.
fn scrub_pg_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.as_bytes().starts_with(b"PG") {
            command.env_remove(key);
        }
    }
}

/// Runs `command` to completion and returns its standard output.
fn run(command: &mut Command) -> Result<String, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {command:?}: {err}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?} failed ({}):\n{}",
            output.status,
            output_text(&output)
        ))
    }
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The file's contents from byte `offset` on; empty if it cannot be read.
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    let _ = fs::File::open(path).and_then(|mut file| {
        file.seek(SeekFrom::Start(offset))?;
        file.read_to_end(&mut bytes)
    });
    String::from_utf8_lossy(&bytes).into_owned()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Quotes `arg` for /bin/sh.
fn sh_quote(arg: &OsStr) -> OsString {
    let mut quoted = vec![b'\''];
    for &byte in arg.as_bytes() {
        if byte == b'\'' {
            quoted.extend_from_slice(b"'\\''");
        } else {
            quoted.push(byte);
        }
    }
    quoted.push(b'\'');
    OsString::from_vec(quoted)
}
