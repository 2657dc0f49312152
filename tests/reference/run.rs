//! Runs the reference scripts beside this file (`python3 tests/reference/<script>.py`) for
//! the tests that compare our code with botocore's. Included by those test files with
//! `#[path]`: it is not a test of its own.
//!
//! python3 and botocore are required (CI installs botocore: [`PIP_INSTALL`]); without them
//! the tests fail with that line, they do not skip.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// What CI installs so these tests can pass (scripts/test.sh).
pub const PIP_INSTALL: &str = "pip install botocore==1.43.11";

/// Longest a script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `tests/reference/<script>.py` with `args`, `input` as its stdin, and returns the JSON
/// line it prints last; fails the test if it does not exit 0 in time.
pub fn run_reference(script: &str, args: &[&str], input: &Value) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("tests/reference").join(format!("{script}.py"));
    let mut child = Command::new("python3")
        .arg(&path)
        .args(args)
        // No `__pycache__` left in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {PIP_INSTALL}"));
    let mut stdin = child.stdin.take().expect("stdin piped");
    stdin
        .write_all(input.to_string().as_bytes())
        .expect("write the script's input");
    drop(stdin);
    // Read the output on another thread, so a large answer cannot fill the pipe and stall
    // the script while we wait for it to exit.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(SCRIPT_TIMEOUT) {
        Ok(output) => output.expect("python3 output"),
        Err(_) => {
            // Ends only the script this test started, by its own pid.
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("{script}.py ran past {SCRIPT_TIMEOUT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script}.py failed ({}); the reference tests need python3 with botocore: \
         {PIP_INSTALL}\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}",
        output.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{script}.py printed no JSON line ({e}):\n{stdout}\n{stderr}"))
}
