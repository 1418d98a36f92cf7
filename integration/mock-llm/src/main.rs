//! `mock-llm --port N --name NAME [--host HOST]`: serves the mock on HOST:N
//! (127.0.0.1 by default; port 0 picks a free port). Prints one line
//! `mock-llm NAME listening on http://HOST:PORT` once it accepts connections.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use mock_llm::{serve, Server};

const USAGE: &str = "usage: mock-llm --port N [--name NAME] [--host HOST]";

struct Args {
    host: String,
    port: u16,
    name: String,
}

fn parse_args() -> Result<Args, String> {
    let mut host = "127.0.0.1".to_string();
    let mut port = None;
    let mut name = "mock-llm".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--port" => {
                let v = value()?;
                port = Some(v.parse().map_err(|_| format!("bad --port: {v}"))?);
            }
            "--name" => name = value()?,
            "--host" => host = value()?,
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    let port = port.ok_or("--port is required")?;
    Ok(Args { host, port, name })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            if e.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("mock-llm: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let server = match Server::new(&args.name) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("mock-llm: {e}");
            return ExitCode::from(2);
        }
    };
    // One thread: cheap and fast enough for the benchmark on a 2-core machine.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mock-llm: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "mock-llm: cannot listen on {}:{}: {e}",
                    args.host, args.port
                );
                return ExitCode::FAILURE;
            }
        };
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], args.port)));
        println!("mock-llm {} listening on http://{addr}", args.name);
        serve(listener, server).await;
        ExitCode::SUCCESS
    })
}
