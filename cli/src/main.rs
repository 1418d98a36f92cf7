//! The `llmgate` command (work in progress).
fn main() {
    eprintln!("llmgate: not implemented yet");
    std::process::exit(2);
}
