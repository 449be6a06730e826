//! The processes under measurement: started from the release binaries (or the
//! bench's own bare echo server), pinned to the services' CPU with `taskset`,
//! timed from spawn to their first SERVING health answer, and read from
//! `/proc` for CPU time and resident memory.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A running process of the stack.
#[derive(Debug)]
pub struct Proc {
    /// Its name in the report (`user`, `order`, `echo`, …).
    pub name: String,
    child: Child,
    /// The main port.
    pub addr: SocketAddr,
    /// From spawn to the first SERVING answer.
    pub started_in: Duration,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The testkit's, compiled in here: the bench must not depend on the testkit
// (see Cargo.toml), and a port from `bind(0)` was taken by an outgoing
// connection before a service bound it.
#[path = "../../testkit/src/ports.rs"]
#[allow(unreachable_pub)]
mod ports;

/// A free loopback address below the ephemeral port range.
pub fn free_addr() -> SocketAddr {
    let port = ports::free_port().expect("a free port");
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// How to start one process.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Name in the report.
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its environment (on top of `PATH`).
    pub vars: Vec<(String, String)>,
    /// Where it answers gRPC health.
    pub addr: SocketAddr,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Spec {
    /// Starts it on `cpus` (a `taskset` list, e.g. `0`) and waits for SERVING.
    pub async fn start(&self, cpus: Option<&str>) -> Result<Proc, String> {
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        let log = std::fs::File::create(&self.log).map_err(|e| e.to_string())?;
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.program.display()))?;
        let started_in = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!(
                    "{} exited ({status}) before serving:\n{log}",
                    self.name
                ));
            }
            if serving(self.addr).await {
                break spawned.elapsed();
            }
            if spawned.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                return Err(format!("{} did not serve within 60 s", self.name));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        Ok(Proc {
            name: self.name.clone(),
            child,
            addr: self.addr,
            started_in,
        })
    }
}

/// True when `addr` answers gRPC health with SERVING.
async fn serving(addr: SocketAddr) -> bool {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_millis(200))
        .connect()
        .await
    else {
        return false;
    };
    let mut client = HealthClient::new(channel);
    let asked = client.check(HealthCheckRequest {
        service: String::new(),
    });
    matches!(
        tokio::time::timeout(Duration::from_millis(500), asked).await,
        Ok(Ok(r)) if r.get_ref().status() == ServingStatus::Serving
    )
}

impl Proc {
    /// The process id (of `taskset`'s exec, so the service itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU time so far.
    pub fn cpu(&self) -> Duration {
        cpu_time(self.pid()).unwrap_or_default()
    }

    /// Resident memory now, in bytes.
    pub fn rss(&self) -> u64 {
        rss(self.pid())
    }
}

/// Resident memory of process `pid` now, in bytes (0 when it is gone).
pub fn rss(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:").unwrap_or(0) * 1024
}

/// Clock ticks per second of `/proc/<pid>/stat`.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces, inside parens.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line (11 and 12 here).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks()))
}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// Pins this process (the load generator) to `cpus`.
pub fn pin_self(cpus: &str) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(["-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset -p -c {cpus} failed ({status})"))
    }
}

/// The machine, for the report: CPU model, core count, kernel.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Every CPU of the machine, not this process's affinity (it is pinned).
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{model}, {cores} cores, Linux {kernel}")
}

/// `bin_dir/emporium-<name>`, checked.
pub fn binary(bin_dir: &Path, name: &str) -> Result<PathBuf, String> {
    let path = bin_dir.join(format!("emporium-{name}"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build the services first (make bench does)",
            path.display()
        ))
    }
}
