//! `credentialflow check` as an operator meets it: errors in the words of the file's author
//! (`expected a whole number`, not `expected usize`), on stderr with their key path and
//! line; `check` without `--config` checks `./credentialflow.toml` like `serve` uses it and
//! says so when there is none; `config default` prints a config `check` accepts; and
//! `completions` prints a script for each shell.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::TempDir;

/// What a command printed and how it exited.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `credentialflow ARGS` in `cwd`.
fn run(cwd: &Path, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_credentialflow"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run credentialflow");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A valid `[server]` followed by `rest`.
fn config(rest: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
         data_dir = \"data\"\naccess_log = \"\"\n{rest}"
    )
}

#[test]
fn type_errors_are_in_the_users_words_on_stderr_with_path_and_line() {
    let dir = TempDir::new("check-words");
    // Lines: 6 [limits], 7, 8, 9, 10 [lua], 11.
    let text = config(
        "[limits]\nmax_body_bytes = \"ten megabytes\"\nheader_timeout_ms = -5\n\
         max_header_bytes = 1.5\n[lua]\nhook_timeout_ms = true\n",
    );
    std::fs::write(dir.join("credentialflow.toml"), text).unwrap();
    let out = run(dir.path(), &["check", "--config", "credentialflow.toml"]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        !out.stdout.contains("error"),
        "errors belong on stderr: {}",
        out.stdout
    );
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    for expected in [
        "error: limits.max_body_bytes (line 7): expected a whole number, found a string",
        "error: limits.header_timeout_ms (line 8): expected a whole number of 0 or more, found -5",
        "error: limits.max_header_bytes (line 9): expected a whole number, found 1.5",
        "error: lua.hook_timeout_ms (line 11): expected a whole number, found true",
    ] {
        assert!(errors.contains(&expected), "{expected}\n{}", out.stderr);
    }
    for rust_words in [
        "usize",
        "u64",
        "u32",
        "invalid type",
        "invalid value",
        "ten megabytes",
    ] {
        assert!(
            !out.stderr.contains(rust_words),
            "{rust_words}: {}",
            out.stderr
        );
    }
}

#[test]
fn strings_lists_and_booleans_are_named_as_such() {
    let dir = TempDir::new("check-words-kinds");
    let text = "[server]\nlisten = 8080\nadmin_listen = 9901\ndata_dir = \"data\"\n\
                access_log = \"\"\n\n[[upstream]]\nname = \"b\"\ntargets = [\"127.0.0.1:9\"]\n\
                tls = \"yes\"\n";
    std::fs::write(dir.join("credentialflow.toml"), text).unwrap();
    let out = run(dir.path(), &["check", "--config", "credentialflow.toml"]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    for expected in [
        "server.listen (line 2): expected a list (`[...]`), found 8080",
        "server.admin_listen (line 3): expected a string, found 9901",
        "upstream[0].tls (line 10): expected true or false, found a string",
    ] {
        assert!(out.stderr.contains(expected), "{expected}\n{}", out.stderr);
    }
}

#[test]
fn check_without_config_uses_the_file_serve_would() {
    let dir = TempDir::new("check-default-path");
    std::fs::write(
        dir.join("credentialflow.toml"),
        config("[limits]\nmax_body_bytes = \"big\"\n"),
    )
    .unwrap();
    let bad = run(dir.path(), &["check"]);
    assert_eq!(bad.code, Some(1), "{}{}", bad.stdout, bad.stderr);
    assert!(
        bad.stderr.contains("limits.max_body_bytes"),
        "the file in the working directory was not the one checked: {}",
        bad.stderr
    );

    std::fs::write(dir.join("credentialflow.toml"), config("")).unwrap();
    let good = run(dir.path(), &["check"]);
    assert_eq!(good.code, Some(0), "{}{}", good.stdout, good.stderr);
    assert!(good.stdout.starts_with("ok: "), "{}", good.stdout);
    assert!(
        good.stdout.contains("credentialflow.toml"),
        "{}",
        good.stdout
    );
}

#[test]
fn check_without_config_says_when_there_is_no_file() {
    let dir = TempDir::new("check-no-file");
    let out = run(dir.path(), &["check"]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: ") && out.stderr.contains("./credentialflow.toml"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("config default"), "{}", out.stderr);
}

#[test]
fn config_default_prints_a_starting_point_that_check_accepts() {
    let dir = TempDir::new("config-default");
    let printed = run(dir.path(), &["config", "default"]);
    assert_eq!(printed.code, Some(0), "{}", printed.stderr);
    assert!(printed.stdout.contains("[server]"), "{}", printed.stdout);
    assert!(
        printed.stdout.contains("kind = \"mock\""),
        "{}",
        printed.stdout
    );
    std::fs::write(dir.join("credentialflow.toml"), &printed.stdout).unwrap();

    let checked = run(dir.path(), &["check"]);
    assert_eq!(
        checked.code,
        Some(0),
        "{}{}",
        checked.stdout,
        checked.stderr
    );
    assert!(
        !checked.stderr.contains("warning"),
        "the built-in config is clean: {}",
        checked.stderr
    );
}

#[test]
fn completions_print_a_script_for_each_shell() {
    let dir = TempDir::new("completions");
    // Each shell's own way of registering a completion for the command.
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef credentialflow"),
        ("fish", "complete -c credentialflow"),
    ] {
        let out = run(dir.path(), &["completions", shell]);
        assert_eq!(out.code, Some(0), "{shell}: {}", out.stderr);
        assert!(out.stdout.contains(marker), "{shell}: {}", out.stdout);
        for word in ["serve", "check", "keys", "completions"] {
            assert!(out.stdout.contains(word), "{shell}: no {word}");
        }
    }
    let out = run(dir.path(), &["completions", "tcsh"]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}
