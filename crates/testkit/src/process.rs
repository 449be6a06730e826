//! A service binary as a real process: started with a clean environment and
//! the variables a test gives, ready once it logged its `"{binary} listening"`
//! line (with the bound `grpc` and `admin` addresses), stopped with SIGTERM or
//! killed. Its stdout is read to the end on a thread of its own (so the child
//! never blocks on a full pipe) and every line is kept for the test.

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::eventually;

/// `bin` (the caller's `env!("CARGO_BIN_EXE_…")`) with an empty environment
/// but `PATH`, JSON logs, and `vars`; stdout and stderr piped. Use it as is for
/// `.output()` runs (bad settings, `--print-config`), or hand it to
/// [`Process::start`].
pub fn command<K, V>(bin: &str, vars: impl IntoIterator<Item = (K, V)>) -> Command
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // The test keys include the development service key pair; a test of
        // production refusals removes this.
        .env("EMPORIUM_DEV_MODE", "true")
        .env("EMPORIUM_TELEMETRY__LOG_FORMAT", "json")
        .envs(vars)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A running service binary. Dropping it kills the process.
#[derive(Debug)]
pub struct Process {
    child: Child,
    /// Where its gRPC port listens.
    pub grpc: SocketAddr,
    /// Where its admin HTTP port listens.
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    /// Starts `bin` with [`command`]`(bin, vars)` on ephemeral ports.
    pub fn spawn<K, V>(bin: &str, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut cmd = command(bin, vars);
        cmd.env("EMPORIUM_SERVER__GRPC_ADDR", "127.0.0.1:0")
            .env("EMPORIUM_SERVER__ADMIN_ADDR", "127.0.0.1:0");
        Self::start(cmd)
    }

    /// Starts `cmd` (best made with [`command`]) and waits until it logs that
    /// it listens; panics when it exits first. Its stdout is kept (see
    /// [`Self::logs`]); its stderr is discarded.
    pub fn start(mut cmd: Command) -> Self {
        let program = cmd.get_program().to_owned();
        let binary = Path::new(&program)
            .file_name()
            .and_then(OsStr::to_str)
            .unwrap_or_default()
            .to_owned();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let listening = format!("{binary} listening");
        let (grpc, admin) = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("{binary} exited before listening"))
                .expect("read stdout");
            logs.lock().unwrap().push(line.clone());
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == listening.as_str() {
                let addr = |key: &str| -> SocketAddr {
                    v[key]
                        .as_str()
                        .and_then(|a| a.parse().ok())
                        .unwrap_or_else(|| panic!("{binary}: no {key} address in {line}"))
                };
                break (addr("grpc"), addr("admin"));
            }
        };
        let kept = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            grpc,
            admin,
            logs,
            reader: Some(reader),
        }
    }

    /// `http://127.0.0.1:PORT` of the gRPC port.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// A connected channel to the gRPC port.
    pub async fn channel(&self) -> emporium_common::rpc::Channel {
        emporium_common::rpc::Channel::from_shared(self.url())
            .expect("valid url")
            .connect()
            .await
            .expect("connect to the process")
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Every stdout line so far (all of them once [`Self::exit`] returned).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM (a graceful shutdown) and returns at once.
    pub fn sigterm(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {}", self.child.id());
    }

    /// Whether it is still running (`None`) or how it ended.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll the child")
    }

    /// Waits, at most `within`, for the process to exit, then for its last
    /// log lines.
    pub async fn exit(&mut self, within: Duration) -> ExitStatus {
        let status = eventually(within, || std::future::ready(self.try_status())).await;
        if let Some(reader) = self.reader.take() {
            // The pipe closed with the process: the reader is at its end.
            let _ = tokio::task::spawn_blocking(move || reader.join()).await;
        }
        status
    }

    /// [`Self::sigterm`], then [`Self::exit`].
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.sigterm();
        self.exit(within).await
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
