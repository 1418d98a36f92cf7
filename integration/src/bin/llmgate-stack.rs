//! Starts the demo stack on the ports of CONTRACT.md.
//!
//! `llmgate-stack run`: in the foreground until Ctrl-C (which reaches every
//! process of the foreground process group, so all of them stop).
//! `llmgate-stack up`: in the background; returns once every component is
//! healthy, with the pids in `.run/pids` for `make down`.
//! `llmgate-stack fleet`: the fleet demo in the foreground — a 3-master Redis
//! Cluster behind Envoy's `redis_proxy` and webdis, and two Envoys with
//! llmgate ("two pods", two workers each) sharing it; the first on the demo
//! ports (10000, 9901), the second on the ports it prints.

use llmgate_integration::{repo_root, Options, Ports, Stack};
use std::path::PathBuf;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "run".to_string());
    let root = repo_root();
    if mode == "fleet" {
        fleet(&root);
        return;
    }
    let config_path = std::env::var("LLMGATE_CONFIG")
        .ok()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("examples/demo.json"));
    let config = match std::fs::read_to_string(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "cannot read plugin configuration {}: {e}",
                config_path.display()
            );
            std::process::exit(1);
        }
    };
    // The same validation the filter runs at plugin start, so a bad file is
    // refused here with the field named instead of leaving Envoy warming.
    if let Err(e) = llmgate::core::config::Config::from_json_with_env(config.as_bytes(), &|_| {
        Some("set".to_string())
    }) {
        eprintln!(
            "invalid plugin configuration {}: {e}",
            config_path.display()
        );
        std::process::exit(1);
    }
    let run_dir = root.join(".run");
    let _ = std::fs::create_dir_all(&run_dir);
    if mode != "reload" {
        // A fresh audit log per stack start.
        let _ = std::fs::remove_file(run_dir.join("audit.log"));
    }
    let mut opts = Options::new(&config);
    // The demo loads the plugin through ECDS from .run/ecds/llmgate.json:
    // `make reload` swaps that file and the running Envoy picks it up.
    opts.ecds = true;
    // Bare Envoy (no wasm filter), for measurements side by side.
    if std::env::var("LLMGATE_BARE").is_ok_and(|v| v == "1") {
        opts.plugin_config = None;
        opts.ecds = false;
    }
    if mode == "reload" {
        match llmgate_integration::write_ecds(&run_dir, &opts, &config) {
            Ok(()) => {
                println!(
                    "llmgate configuration reloaded from {}",
                    config_path.display()
                );
                return;
            }
            Err(e) => {
                eprintln!("reload failed: {e}");
                std::process::exit(1);
            }
        }
    }
    opts.ports = Ports::demo();
    // Redis 8 for the semantic cache's vector sets, when installed (the
    // Makefile installs it): 16380, its webdis 17380.
    opts.vectors = llmgate_integration::redis8_bin().is_some();
    opts.dir = Some(run_dir.clone());
    opts.envoy_env = vec![
        (
            "LLMGATE_OPENAI_API_KEY".into(),
            std::env::var("LLMGATE_OPENAI_API_KEY")
                .unwrap_or_else(|_| "sk-demo-provider-openai".into()),
        ),
        (
            "LLMGATE_ANTHROPIC_API_KEY".into(),
            std::env::var("LLMGATE_ANTHROPIC_API_KEY")
                .unwrap_or_else(|_| "sk-ant-demo-provider".into()),
        ),
    ];
    let detached = mode == "up";
    let started = if detached {
        Stack::start_detached(opts)
    } else {
        Stack::try_start(opts)
    };
    let stack = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("the stack did not start: {e}");
            std::process::exit(1);
        }
    };
    let pids: String = stack
        .pids()
        .iter()
        .map(|(name, pid)| format!("{pid} {name}\n"))
        .collect();
    if let Err(e) = std::fs::write(run_dir.join("pids"), pids) {
        eprintln!("cannot write .run/pids: {e}");
    }
    println!(
        "llmgate demo stack is up (config: {})",
        config_path.display()
    );
    println!("  Envoy + llmgate  http://127.0.0.1:10000");
    println!("  Envoy admin      http://127.0.0.1:9901/stats/prometheus");
    println!(
        "  mock LLMs        http://127.0.0.1:18001 (primary), http://127.0.0.1:18002 (fallback)"
    );
    println!("  Redis 127.0.0.1:16379, webdis http://127.0.0.1:17379");
    if llmgate_integration::redis8_bin().is_some() {
        println!("  Redis 8 (vector sets) 127.0.0.1:16380, webdis http://127.0.0.1:17380; embeddings mock http://127.0.0.1:18003");
    }
    println!("  audit log        .run/audit.log");
    println!();
    println!("Try:");
    println!(
        r#"  curl -s http://127.0.0.1:10000/v1/chat/completions -H 'Authorization: Bearer sk-llmgate-demo' -H 'content-type: application/json' -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Hello there"}}]}}'"#
    );
    println!(
        r#"  curl -sN http://127.0.0.1:10000/v1/chat/completions -H 'Authorization: Bearer sk-llmgate-demo' -H 'content-type: application/json' -d '{{"model":"gpt-4o-mini","stream":true,"messages":[{{"role":"user","content":"Stream this please"}}]}}'"#
    );
    println!(
        r#"  curl -s http://127.0.0.1:10000/v1/messages -H 'x-api-key: sk-llmgate-demo' -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' -d '{{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{{"role":"user","content":"Hi Claude"}}]}}'"#
    );
    println!("  curl -s http://127.0.0.1:9901/stats/prometheus | grep llmgate");
    if detached {
        std::mem::forget(stack);
        return;
    }
    println!();
    println!("Ctrl-C stops everything.");
    loop {
        std::thread::park();
    }
}

/// `llmgate-stack fleet` (foreground until Ctrl-C or SIGTERM to its process
/// group, which `make fleet-down` sends).
fn fleet(root: &std::path::Path) {
    use llmgate_integration::cluster::RedisCluster;
    let config_path = std::env::var("LLMGATE_CONFIG")
        .ok()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("examples/fleet.json"));
    let config = match std::fs::read_to_string(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot read {}: {e}", config_path.display());
            std::process::exit(1);
        }
    };
    let cluster = match RedisCluster::try_start() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("the Redis Cluster did not start: {e}");
            std::process::exit(1);
        }
    };
    let env = vec![
        (
            "LLMGATE_OPENAI_API_KEY".to_string(),
            "sk-demo-provider-openai".to_string(),
        ),
        (
            "LLMGATE_ANTHROPIC_API_KEY".to_string(),
            "sk-ant-demo-provider".to_string(),
        ),
    ];
    let mut pods = Vec::new();
    for i in 0..2 {
        let mut opts = Options::new(&config);
        opts.concurrency = 2;
        opts.fleet_webdis_port = Some(cluster.webdis_port);
        opts.envoy_env = env.clone();
        if i == 0 {
            opts.ports = Ports::demo();
        }
        match Stack::try_start(opts) {
            Ok(s) => pods.push(s),
            Err(e) => {
                eprintln!("pod {i} did not start: {e}");
                std::process::exit(1);
            }
        }
    }
    println!(
        "llmgate fleet demo is up (config: {})",
        config_path.display()
    );
    println!(
        "  Redis Cluster masters {:?}, redis_proxy 127.0.0.1:{}, webdis http://127.0.0.1:{}",
        cluster.masters, cluster.proxy_port, cluster.webdis_port
    );
    for (i, p) in pods.iter().enumerate() {
        println!(
            "  pod {i}: Envoy + llmgate http://127.0.0.1:{}, admin http://127.0.0.1:{}",
            p.ports.listen, p.ports.admin
        );
    }
    println!("fleet is up; Ctrl-C (or make fleet-down) stops everything.");
    loop {
        std::thread::park();
    }
}
