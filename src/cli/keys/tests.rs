use super::*;
use crate::cli::{Cli, Command};
use crate::store::{ids, KeyStore};
use clap::Parser;

/// A directory with a config file whose `data_dir` is `data` beside it; removed on drop.
struct Setup {
    dir: PathBuf,
    config: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = std::env::temp_dir().join(format!("cf-cli-keys-{}", ids::new_key_id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("credentialflow.toml");
        std::fs::write(&config, "[server]\ndata_dir = \"data\"\n").unwrap();
        Setup { dir, config }
    }

    fn config(&self) -> &str {
        self.config.to_str().unwrap()
    }

    /// Runs `credentialflow <args>` (a `keys` or `audit` command) and returns the exit code
    /// and stdout.
    fn run(&self, args: &[&str]) -> (i32, String) {
        let cli =
            Cli::try_parse_from(std::iter::once("credentialflow").chain(args.iter().copied()))
                .unwrap();
        let mut out = Vec::new();
        let result = match cli.command {
            Command::Keys(keys) => run_keys_to(*keys, &mut out),
            Command::Audit(audit) => run_audit_to(audit, &mut out),
            other => panic!("not a keys command: {other:?}"),
        };
        let code = match result {
            Ok(()) => 0,
            Err(failure) => failure.code,
        };
        (code, String::from_utf8(out).unwrap())
    }

    /// `keys create --json` with `extra` flags; returns (id, key).
    fn create(&self, name: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec![
            "keys",
            "create",
            "--config",
            self.config(),
            "--name",
            name,
            "--json",
        ];
        args.extend_from_slice(extra);
        let (code, out) = self.run(&args);
        assert_eq!(code, 0, "{out}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        (
            json["id"].as_str().unwrap().to_owned(),
            json["key"].as_str().unwrap().to_owned(),
        )
    }

    fn store(&self) -> KeyStore {
        KeyStore::open(&self.dir.join("data")).unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("credentialflow").chain(args.iter().copied()))
}

#[test]
fn create_parses_every_flag() {
    let cli = parse(&[
        "keys",
        "create",
        "--name",
        "ci",
        "--team",
        "t",
        "--models",
        "gpt-*,claude-*",
        "--routes",
        "api",
        "--scopes",
        "a,b",
        "--rps",
        "2.5",
        "--rpm",
        "60",
        "--tpm",
        "1000",
        "--max-concurrency",
        "4",
        "--budget-usd",
        "9.5",
        "--budget-tokens",
        "100",
        "--budget-period",
        "month",
        "--expires",
        "30d",
        "--json",
        "--config",
        "x.toml",
    ])
    .unwrap();
    let Command::Keys(args) = cli.command else {
        panic!("not keys")
    };
    assert!(args.json);
    assert_eq!(args.config, Some(PathBuf::from("x.toml")));
    let KeysCommand::Create { name, fields } = args.command else {
        panic!("not create")
    };
    let new = fields.into_new_key(name);
    assert_eq!(new.name, "ci");
    assert_eq!(new.team, "t");
    assert_eq!(new.models, ["gpt-*", "claude-*"]);
    assert_eq!(new.routes, ["api"]);
    assert_eq!(new.scopes, ["a", "b"]);
    assert_eq!(new.rps, Some(2.5));
    assert_eq!(new.rpm, Some(60));
    assert_eq!(new.tpm, Some(1000));
    assert_eq!(new.max_concurrency, Some(4));
    assert_eq!(new.budget_usd, Some(9.5));
    assert_eq!(new.budget_tokens, Some(100));
    assert_eq!(new.budget_period.as_deref(), Some("month"));
    assert_eq!(new.expires_in.as_deref(), Some("30d"));
}

#[test]
fn create_without_name_is_a_usage_error() {
    assert!(parse(&["keys", "create", "--team", "t"]).is_err());
}

#[test]
fn config_may_stand_before_or_after_the_keys_subcommand() {
    for args in [
        &["keys", "--config", "a.toml", "list"][..],
        &["keys", "list", "--config", "a.toml"][..],
    ] {
        let Command::Keys(keys) = parse(args).unwrap().command else {
            panic!("not keys")
        };
        assert_eq!(keys.config, Some(PathBuf::from("a.toml")));
    }
}

#[test]
fn bad_flag_values_are_usage_errors() {
    assert!(parse(&["keys", "create", "--name", "x", "--rpm", "lots"]).is_err());
    assert!(parse(&["keys", "create", "--name", "x", "--budget-period", "week"]).is_err());
    assert!(parse(&["keys", "rotate", "key_x", "--grace", "later"]).is_err());
    assert!(parse(&["keys", "update", "key_x", "--metadata", "[1]"]).is_err());
}

#[test]
fn grace_without_a_unit_is_a_usage_error_naming_the_grammar() {
    for grace in ["1", "0", "1.5h"] {
        let error = parse(&["keys", "rotate", "key_x", "--grace", grace])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("500ms") && error.contains("30d"),
            "{grace:?}: {error}"
        );
    }
}

#[test]
fn expires_without_a_unit_exits_1() {
    let setup = Setup::new();
    for expires in ["30", "1.5h"] {
        let (code, _) = setup.run(&[
            "keys",
            "create",
            "--name",
            "x",
            "--expires",
            expires,
            "--config",
            setup.config(),
        ]);
        assert_eq!(code, EXIT_BAD_INPUT, "{expires:?}");
    }
    let (code, _) = setup.run(&[
        "keys",
        "create",
        "--name",
        "x",
        "--expires",
        "1h30m",
        "--config",
        setup.config(),
    ]);
    assert_eq!(code, 0);
}

#[test]
fn update_none_and_never_clear_fields() {
    let cli = parse(&[
        "keys",
        "update",
        "key_x",
        "--rpm",
        "none",
        "--expires",
        "never",
        "--budget-period",
        "none",
    ])
    .unwrap();
    let Command::Keys(args) = cli.command else {
        panic!("not keys")
    };
    let KeysCommand::Update { id, name, fields } = args.command else {
        panic!("not update")
    };
    assert_eq!(id, "key_x");
    let patch = fields.into_patch(name);
    assert_eq!(patch.rpm, Some(None));
    assert_eq!(patch.expires_in, Some(None));
    assert_eq!(patch.budget_period, Some(None));
    assert_eq!(patch.tpm, None);
    assert_eq!(patch.name, None);
}

#[test]
fn rotate_grace_defaults_to_zero_and_parses() {
    let Command::Keys(args) = parse(&["keys", "rotate", "key_x"]).unwrap().command else {
        panic!("not keys")
    };
    assert!(matches!(args.command, KeysCommand::Rotate { grace, .. } if grace.is_zero()));
    let Command::Keys(args) = parse(&["keys", "rotate", "key_x", "--grace", "1h"])
        .unwrap()
        .command
    else {
        panic!("not keys")
    };
    assert!(matches!(args.command, KeysCommand::Rotate { grace, .. } if grace.as_secs() == 3600));
}

#[test]
fn create_prints_id_and_key_lines_and_stores_only_the_hash() {
    let setup = Setup::new();
    let (code, out) = setup.run(&["keys", "create", "--config", setup.config(), "--name", "ci"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let id = lines[0].strip_prefix("id: ").unwrap();
    let key = lines[1].strip_prefix("key: ").unwrap();
    let store = setup.store();
    let record = store.get(id).unwrap().unwrap();
    assert_eq!(record.hash, store.pepper().hash(key.as_bytes()));
}

#[test]
fn create_json_prints_id_and_key() {
    let setup = Setup::new();
    let (id, key) = setup.create("ci", &["--rpm", "5"]);
    assert!(id.starts_with("key_") && key.starts_with("cf_"));
    assert_eq!(setup.store().get(&id).unwrap().unwrap().rpm, Some(5));
}

#[test]
fn list_shows_keys_without_secrets() {
    let setup = Setup::new();
    let (id, key) = setup.create("ci", &["--team", "platform"]);
    let (code, out) = setup.run(&["keys", "list", "--config", setup.config()]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ID"));
    assert!(out.contains(&id) && out.contains("platform") && out.contains("active"));
    assert!(!out.contains(&key));
    let (code, out) = setup.run(&["keys", "list", "--json", "--config", setup.config()]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert!(!out.contains(&key));
}

#[test]
fn show_update_revoke_work_on_the_store() {
    let setup = Setup::new();
    let (id, _) = setup.create("ci", &[]);
    let (code, out) = setup.run(&[
        "keys",
        "update",
        &id,
        "--team",
        "ml",
        "--config",
        setup.config(),
        "--json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["team"],
        "ml"
    );
    let (code, out) = setup.run(&["keys", "show", &id, "--config", setup.config()]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["team"],
        "ml"
    );
    let (code, out) = setup.run(&["keys", "revoke", &id, "--config", setup.config()]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("revoked: {id}"));
    assert!(setup
        .store()
        .get(&id)
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
}

#[test]
fn rotate_prints_a_new_key_for_the_same_id() {
    let setup = Setup::new();
    let (id, old) = setup.create("ci", &[]);
    let (code, out) = setup.run(&[
        "keys",
        "rotate",
        &id,
        "--grace",
        "1h",
        "--json",
        "--config",
        setup.config(),
    ]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["id"], id.as_str());
    let new = json["key"].as_str().unwrap();
    assert_ne!(new, old);
    let store = setup.store();
    assert_eq!(
        store.get(&id).unwrap().unwrap().hash,
        store.pepper().hash(new.as_bytes())
    );
}

#[test]
fn unknown_id_exits_1() {
    let setup = Setup::new();
    for command in ["show", "revoke", "rotate", "update"] {
        let (code, _) = setup.run(&["keys", command, "key_nope", "--config", setup.config()]);
        assert_eq!(code, EXIT_BAD_INPUT, "{command}");
    }
}

#[test]
fn invalid_field_exits_1() {
    let setup = Setup::new();
    let (code, _) = setup.run(&[
        "keys",
        "create",
        "--name",
        "x",
        "--expires",
        "soon",
        "--config",
        setup.config(),
    ]);
    assert_eq!(code, EXIT_BAD_INPUT);
}

#[test]
fn unreadable_config_exits_1() {
    let setup = Setup::new();
    let missing = setup.dir.join("missing.toml");
    let (code, _) = setup.run(&["keys", "list", "--config", missing.to_str().unwrap()]);
    assert_eq!(code, EXIT_BAD_INPUT);
}

#[test]
fn audit_prints_cli_actions_with_the_cli_actor() {
    let setup = Setup::new();
    let (id, key) = setup.create("ci", &[]);
    setup.run(&[
        "keys",
        "update",
        &id,
        "--team",
        "ml",
        "--config",
        setup.config(),
    ]);
    let (code, out) = setup.run(&["audit", "--config", setup.config()]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains(" cli:") && lines[0].contains(" create ") && lines[0].contains(&id));
    assert!(lines[1].contains(" update ") && lines[1].ends_with("changed: team"));
    let (code, out) = setup.run(&["audit", "--json", "--config", setup.config()]);
    assert_eq!(code, 0);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["action"], "create");
    assert!(first["actor"].as_str().unwrap().starts_with("cli:"));
    assert!(!out.contains(&key));
}

/// `--mcp-tools` on `keys create` and `keys update`: comma-separated globs stored on the
/// key, replaced by update, emptied by `--mcp-tools ""`, shown by `show --json`.
#[test]
fn mcp_tools_flag_sets_and_replaces_the_tool_globs() {
    let setup = Setup::new();
    let (id, _) = setup.create("agent", &["--mcp-tools", "github__search_*,fs__read_?"]);
    let stored = setup.store().get(&id).unwrap().unwrap();
    assert_eq!(stored.mcp_tools, ["github__search_*", "fs__read_?"]);

    let (code, out) = setup.run(&[
        "keys",
        "update",
        &id,
        "--config",
        setup.config(),
        "--mcp-tools",
        "fs__*",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["mcp_tools"], serde_json::json!(["fs__*"]));

    // An update without the flag leaves the list alone.
    let (code, _) = setup.run(&[
        "keys",
        "update",
        &id,
        "--config",
        setup.config(),
        "--rpm",
        "5",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        setup.store().get(&id).unwrap().unwrap().mcp_tools,
        ["fs__*"]
    );

    let (code, _) = setup.run(&[
        "keys",
        "update",
        &id,
        "--config",
        setup.config(),
        "--mcp-tools",
        "",
    ]);
    assert_eq!(code, 0);
    assert!(setup
        .store()
        .get(&id)
        .unwrap()
        .unwrap()
        .mcp_tools
        .is_empty());
}

/// A glob out of bounds exits 1 (bad input) and names the field; nothing is stored.
#[test]
fn out_of_bounds_mcp_tools_flag_exits_1_naming_the_field() {
    let setup = Setup::new();
    let too_long = "t".repeat(129);
    for value in ["fs__read file", too_long.as_str(), "a,b,c;d"] {
        let (code, out) = setup.run(&[
            "keys",
            "create",
            "--config",
            setup.config(),
            "--name",
            "agent",
            "--mcp-tools",
            value,
        ]);
        assert_eq!(code, crate::serve::EXIT_BAD_INPUT, "{value}: {out}");
    }
    assert!(setup.store().list().unwrap().is_empty());
    let err = setup
        .store()
        .create(
            NewKey {
                name: "agent".into(),
                mcp_tools: vec!["x".into(); 65],
                ..NewKey::default()
            },
            "test",
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "mcp_tools: at most 64 entries");
}
