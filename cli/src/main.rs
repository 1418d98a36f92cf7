//! The `llmgate` command: validates plugin configurations with the filter's
//! own code, hashes virtual keys, and runs LLM-as-a-judge regression suites
//! through the gateway. See `cli/README.md`.

mod eval;
mod http;
mod judge;
mod report;
mod stats;
mod suite;

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

pub const USAGE: &str = "\
usage:
  llmgate check-config [--check-env] FILE|DIR...
      Validate plugin configurations exactly as the filter does at plugin
      start. Prints `FILE: ok` or `FILE: field: message`; exit 1 if any fails.
      A directory is searched recursively for *.json (eval suites, *.suite.json, and
      dashboards, *.dashboard.json, are skipped). Credential environment variables are
      assumed set unless --check-env checks them against this environment.
  llmgate hash-key
      Read a virtual key on stdin (one trailing newline removed) and print
      its SHA-256 hex, the form `keys[].sha256` wants.
  llmgate eval SUITE [options]
      Run an LLM-as-a-judge regression suite through an OpenAI-compatible
      endpoint (plain http). Exit 0 all passed, 1 some case failed, 2 usage
      or file errors.
      --endpoint URL        base URL (default http://127.0.0.1:10000)
      --key KEY             bearer key (default $LLMGATE_KEY or sk-llmgate-demo)
      --model M             model for the cases (overrides the suite)
      --judge-model M       judge model (overrides the suite)
      --threshold X         default pass threshold for overall, 1-10 (default 7)
      --concurrency N       cases in flight (default 4)
      --timeout-ms N        per-request timeout (default 60000)
      --retries N           retries on connect errors, 5xx and 429, with
                            exponential backoff (default 2)
      --json-report FILE    write a JSON report
      --junit FILE          write JUnit XML
      --use-cache           allow the gateway's response cache (default:
                            x-llmgate-cache: no-store)
      --compare A B         run every case with prompt A and with prompt B
                            (x-llmgate-prompt: id@version) and report the
                            paired difference with a sign test
  llmgate help
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("check-config") => check_config(args.get(1..).unwrap_or_default()),
        Some("hash-key") => hash_key(args.get(1..).unwrap_or_default()),
        Some("eval") => eval::main(args.get(1..).unwrap_or_default()),
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            0
        }
        Some("--version" | "-V") => {
            println!("llmgate {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some(other) => {
            eprintln!("llmgate: unknown command {other:?}\n\n{USAGE}");
            2
        }
        None => {
            eprint!("{USAGE}");
            2
        }
    };
    std::process::exit(code);
}

/// Eval suites and dashboards live next to configurations; they are not
/// configurations (`*.suite.json`, `*.dashboard.json`).
fn is_suite(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".suite.json") || n.ends_with(".dashboard.json"))
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_json(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "json") && !is_suite(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Checks one configuration; `Err` is the line to print after `FILE: `.
pub fn check_one(bytes: &[u8], check_env: bool) -> Result<(), String> {
    let real = |name: &str| std::env::var(name).ok();
    let any = |_: &str| Some("set".to_string());
    let env: &dyn Fn(&str) -> Option<String> = if check_env { &real } else { &any };
    llmgate::core::config::Config::from_json_with_env(bytes, env)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn check_config(args: &[String]) -> i32 {
    let mut check_env = false;
    let mut files = Vec::new();
    for a in args {
        match a.as_str() {
            "--check-env" => check_env = true,
            f if f.starts_with('-') && f != "-" => {
                eprintln!("llmgate check-config: unknown option {f}\n\n{USAGE}");
                return 2;
            }
            f => {
                let p = PathBuf::from(f);
                if p.is_dir() {
                    if let Err(e) = collect_json(&p, &mut files) {
                        eprintln!("{f}: cannot read directory: {e}");
                        return 2;
                    }
                } else if is_suite(&p) {
                    eprintln!("{f}: skipped (an eval suite, not a configuration)");
                } else {
                    files.push(p);
                }
            }
        }
    }
    if files.is_empty() && !args.iter().any(|a| !a.starts_with("--")) {
        eprintln!("llmgate check-config: no FILE given\n\n{USAGE}");
        return 2;
    }
    let mut failed = 0;
    for f in &files {
        let name = f.display();
        let result = if f.as_os_str() == "-" {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .map_err(|e| format!("cannot read stdin: {e}"))
                .and_then(|_| check_one(&b, check_env))
        } else {
            std::fs::read(f)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|b| check_one(&b, check_env))
        };
        match result {
            Ok(()) => println!("{name}: ok"),
            Err(e) => {
                failed += 1;
                println!("{name}: {e}");
            }
        }
    }
    if !check_env {
        eprintln!(
            "note: credential environment variables (credentials.*.env) were assumed set; \
             use --check-env to check them against this environment"
        );
    }
    if failed > 0 {
        eprintln!("{failed} of {} configuration(s) invalid", files.len());
        1
    } else {
        0
    }
}

/// The key as read from stdin: trailing CR/LF removed, nothing else.
pub fn key_from_input(input: &str) -> &str {
    input.trim_end_matches(['\n', '\r'])
}

fn hash_key(args: &[String]) -> i32 {
    if !args.is_empty() {
        eprintln!("llmgate hash-key: takes no arguments (the key is read from stdin)\n\n{USAGE}");
        return 2;
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("type the key, then Enter and Ctrl-D:");
    }
    let mut input = String::new();
    if let Err(e) = stdin.lock().read_to_string(&mut input) {
        eprintln!("llmgate hash-key: cannot read stdin: {e}");
        return 2;
    }
    let key = key_from_input(&input);
    if key.is_empty() {
        eprintln!("llmgate hash-key: empty key");
        return 2;
    }
    println!("{}", llmgate::core::util::sha256_hex(key.as_bytes()));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_trimming() {
        assert_eq!(key_from_input("sk-x\n"), "sk-x");
        assert_eq!(key_from_input("sk-x\r\n"), "sk-x");
        assert_eq!(key_from_input(" sk x \n"), " sk x ");
        assert_eq!(
            llmgate::core::util::sha256_hex(key_from_input("sk-llmgate-demo\n").as_bytes()),
            "528cefacbb803dce597f65354585f8f725f136ea970d56276a8e5e3d28d821a0"
        );
    }

    #[test]
    fn check_one_names_fields() {
        assert!(check_one(b"{}", false).is_ok());
        let e = check_one(br#"{"bogus": 1}"#, false).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = check_one(br#"{"max_body_bytes": 0}"#, false).unwrap_err();
        assert!(e.starts_with("max_body_bytes: "), "{e}");
        let cfg = br#"{"auth":{"mode":"none"},"credentials":{"openai":{"env":"LLMGATE_TEST_SURELY_UNSET_VAR"}}}"#;
        assert!(check_one(cfg, false).is_ok());
        let e = check_one(cfg, true).unwrap_err();
        assert!(e.starts_with("credentials.openai.env: "), "{e}");
    }

    #[test]
    fn repo_examples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut files = Vec::new();
        collect_json(&dir, &mut files).unwrap();
        assert!(!files.is_empty());
        for f in files {
            let b = std::fs::read(&f).unwrap();
            assert_eq!(check_one(&b, false), Ok(()), "{}", f.display());
        }
    }
}
