//! Replays every committed fuzz corpus file (`tests/fuzz/corpus/<target>/`) through the same
//! checking function its cargo-fuzz target calls (`credentialflow::fuzzing`), so a regression
//! on any seed or past finding fails the normal stable `cargo test`, without nightly.

use std::fs;
use std::panic;
use std::path::PathBuf;

use credentialflow::fuzzing;

/// Runs `check` on every file of the corpus for `target`; fails naming each file whose check
/// panicked, and returns how many files were replayed.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = fs::read(path).expect("read corpus file");
            panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: properties violated by {failed:?}"
    );
    eprintln!("{target}: replayed {} corpus files", files.len());
    files.len()
}

#[test]
fn http1_head_corpus() {
    assert!(replay("http1_head", fuzzing::http1_head) > 0);
}

#[test]
fn http1_chunked_corpus() {
    assert!(replay("http1_chunked", fuzzing::http1_chunked) > 0);
}

#[test]
fn sse_corpus() {
    assert!(replay("sse", fuzzing::sse) > 0);
}

#[test]
fn ai_json_corpus() {
    assert!(replay("ai_json", fuzzing::ai_json) > 0);
}

#[test]
fn config_corpus() {
    assert!(replay("config", fuzzing::config) > 0);
}

#[test]
fn http1_path_corpus() {
    assert!(replay("http1_path", fuzzing::http1_path) > 0);
}

#[test]
fn lua_caps_corpus() {
    assert!(replay("lua_caps", fuzzing::lua_caps) > 0);
}
