//! The hook scripts of one config load: read, compiled to Luau bytecode and checked once, on
//! the loading thread (startup, reload, `credentialflow check`), then shared by every worker.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use crate::config::Config;

use super::cache::Cache;
use super::redact::Redactor;
use super::vm::Vm;
use super::{Hook, LuaLimits};

/// Index of a script in its [`ScriptSet`].
pub type ScriptId = usize;

/// One hook script (a `hooks = ".."` file).
#[derive(Clone, Debug)]
pub(crate) struct Script {
    /// The path as written in the config (what errors and logs show).
    pub(crate) name: String,
    /// The scripts folder: the script's directory, where `require` looks.
    pub(crate) root: PathBuf,
    pub(crate) bytecode: Vec<u8>,
    hooks: [bool; Hook::ALL.len()],
}

/// A module some script `require`s.
#[derive(Clone, Debug)]
pub(crate) struct Module {
    /// Shown in errors: the requiring script's folder as written, joined with the module path.
    pub(crate) name: String,
    pub(crate) bytecode: Vec<u8>,
}

/// The scripts of one config load, compiled and checked. `Send + Sync`: it holds bytecode,
/// never Lua state; each worker's [`crate::lua::LuaRuntime`] loads it into its own VM.
#[derive(Clone, Debug, Default)]
pub struct ScriptSet {
    scripts: Vec<Script>,
    by_path: HashMap<PathBuf, ScriptId>,
    modules: Vec<Module>,
    module_by_path: HashMap<PathBuf, usize>,
}

/// A script to load: the config key that names it, the path as written, the resolved path.
struct Source {
    key: String,
    name: String,
    path: PathBuf,
}

impl ScriptSet {
    /// Reads, compiles and checks every script the config references (`route[i].hooks`,
    /// `ai.hooks`, `mcp.hooks`; a file named twice is loaded once) and the modules they
    /// `require`. The check runs each script's top level in a VM with the config's `[lua]`
    /// limits, so a script that fails there is refused too. Every error is returned, each as
    /// `"route[1].hooks: scripts/auth.lua:12: <message>"`.
    pub fn load(config: &Config) -> Result<ScriptSet, Vec<String>> {
        let mut sources = Vec::new();
        for (i, route) in config.route.iter().enumerate() {
            if !route.hooks.is_empty() {
                sources.push(Source {
                    key: format!("route[{i}].hooks"),
                    name: route.hooks.clone(),
                    path: config.resolve_path(&route.hooks),
                });
            }
        }
        if !config.ai.hooks.is_empty() {
            sources.push(Source {
                key: "ai.hooks".into(),
                name: config.ai.hooks.clone(),
                path: config.resolve_path(&config.ai.hooks),
            });
        }
        if !config.mcp.hooks.is_empty() {
            sources.push(Source {
                key: "mcp.hooks".into(),
                name: config.mcp.hooks.clone(),
                path: config.resolve_path(&config.mcp.hooks),
            });
        }
        Self::load_sources(sources, LuaLimits::from_config(&config.lua))
    }

    /// Loads the given script files (paths relative to `base_dir` or absolute), as
    /// [`ScriptSet::load`] does for a config; ids follow the order of `files`. For tools,
    /// benches and tests that have scripts but no config.
    pub fn from_files(
        base_dir: &Path,
        files: &[&str],
        limits: LuaLimits,
    ) -> Result<ScriptSet, Vec<String>> {
        let sources = files
            .iter()
            .enumerate()
            .map(|(i, f)| Source {
                key: format!("script[{i}]"),
                name: (*f).to_owned(),
                path: base_dir.join(f),
            })
            .collect();
        Self::load_sources(sources, limits)
    }

    /// A set without scripts (no hooks configured).
    pub fn empty() -> ScriptSet {
        ScriptSet::default()
    }

    /// The id of the script at `resolved_path` (as given by [`Config::resolve_path`] of the
    /// `hooks` value), if the config references it.
    pub fn id_for(&self, resolved_path: &Path) -> Option<ScriptId> {
        self.by_path.get(resolved_path).copied()
    }

    /// Whether script `id` defines the global function of `hook`.
    pub fn defines(&self, id: ScriptId, hook: Hook) -> bool {
        self.scripts.get(id).is_some_and(|s| s.hooks[hook.index()])
    }

    /// The script's path as written in the config.
    pub fn name(&self, id: ScriptId) -> Option<&str> {
        self.scripts.get(id).map(|s| s.name.as_str())
    }

    /// Number of scripts.
    pub fn len(&self) -> usize {
        self.scripts.len()
    }

    /// Whether there are no scripts.
    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }

    pub(crate) fn script(&self, id: ScriptId) -> &Script {
        &self.scripts[id]
    }

    pub(crate) fn module(&self, index: usize) -> &Module {
        &self.modules[index]
    }

    pub(crate) fn module_index(&self, path: &Path) -> Option<usize> {
        self.module_by_path.get(path).copied()
    }

    fn load_sources(sources: Vec<Source>, limits: LuaLimits) -> Result<ScriptSet, Vec<String>> {
        let mut set = ScriptSet::default();
        let mut errors = Vec::new();
        let mut keys = Vec::new();
        for source in sources {
            if set.by_path.contains_key(&source.path) {
                continue;
            }
            match set.add_script(&source) {
                Ok(()) => keys.push(source.key),
                Err(mut errs) => {
                    errors.extend(errs.drain(..).map(|e| format!("{}: {e}", source.key)))
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        set.check(&keys, limits)?;
        Ok(set)
    }

    /// Compiles one script and, transitively, the modules it requires by literal name.
    fn add_script(&mut self, source: &Source) -> Result<(), Vec<String>> {
        let bytecode = compile_file(&source.name, &source.path).map_err(|e| vec![e])?;
        let root = source.path.parent().unwrap_or(Path::new("")).to_path_buf();
        let name_root = Path::new(&source.name)
            .parent()
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let mut errors = Vec::new();
        let mut pending: Vec<(String, String)> = required_names(&read_lossy(&source.path))
            .into_iter()
            .map(|n| (source.name.clone(), n))
            .collect();
        while let Some((from, required)) = pending.pop() {
            let Some(rel) = module_relative_path(&required) else {
                errors.push(format!(
                    "{from}: require of invalid module name {required:?}"
                ));
                continue;
            };
            let path = root.join(&rel);
            if self.module_by_path.contains_key(&path) {
                continue;
            }
            let name = name_root.join(&rel).to_string_lossy().into_owned();
            match compile_file(&name, &path) {
                Ok(bytecode) => {
                    pending.extend(
                        required_names(&read_lossy(&path))
                            .into_iter()
                            .map(|n| (name.clone(), n)),
                    );
                    self.module_by_path.insert(path, self.modules.len());
                    self.modules.push(Module { name, bytecode });
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        self.by_path.insert(source.path.clone(), self.scripts.len());
        self.scripts.push(Script {
            name: source.name.clone(),
            root,
            bytecode,
            hooks: [false; Hook::ALL.len()],
        });
        Ok(())
    }

    /// Runs every script's top level in a throwaway VM and records which hooks it defines.
    fn check(&mut self, keys: &[String], limits: LuaLimits) -> Result<(), Vec<String>> {
        if self.scripts.is_empty() {
            return Ok(());
        }
        let shared = Arc::new(self.clone());
        let cache = Rc::new(RefCell::new(Cache::new(limits.memory_limit_bytes / 2)));
        let mut vm = Vm::new(limits, cache, Rc::new(Redactor::default()))
            .map_err(|e| vec![format!("lua: cannot create a VM within the limits: {e}")])?;
        vm.load_scripts(&shared);
        let errors: Vec<String> = vm
            .load_errors()
            .map(|(id, e)| format!("{}: {e}", keys[id]))
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        for (id, script) in self.scripts.iter_mut().enumerate() {
            for hook in Hook::ALL {
                script.hooks[hook.index()] = vm.defines(id, hook);
            }
        }
        Ok(())
    }
}

/// Reads and compiles one file; errors read `"scripts/auth.lua:12: <message>"`.
fn compile_file(name: &str, path: &Path) -> Result<Vec<u8>, String> {
    let source = std::fs::read(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    compile(name, &source)
}

/// Compiles Luau source to bytecode (line info kept for error positions).
pub(crate) fn compile(name: &str, source: &[u8]) -> Result<Vec<u8>, String> {
    mlua::chunk::Compiler::new().compile(source).map_err(|e| {
        let message = match &e {
            mlua::Error::SyntaxError { message, .. } => message.clone(),
            other => other.to_string(),
        };
        // Luau reports ":12: message"; mlua passes it on as "12: message".
        let message = message.lines().next().unwrap_or("").trim_start_matches(':');
        let digits = message.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && message[digits..].starts_with(':') {
            format!("{name}:{message}")
        } else {
            format!("{name}: {message}")
        }
    })
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The literal module names in `require("x")` / `require 'x'` calls, skipping calls after a
/// `--` on the same line (commented out). Only these modules are read with the config: the
/// run time never touches the disk.
pub(crate) fn required_names(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in source.lines() {
        let code = line.find("--").map_or(line, |i| &line[..i]);
        let mut rest = code;
        while let Some(at) = rest.find("require") {
            let before_ok = rest[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.' || c == ':'));
            rest = &rest[at + "require".len()..];
            if !before_ok {
                continue;
            }
            let arg = rest.trim_start();
            let arg = arg.strip_prefix('(').map_or(arg, str::trim_start);
            let Some(quote) = arg.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                continue;
            };
            if let Some(end) = arg[1..].find(quote) {
                names.push(arg[1..1 + end].to_owned());
            }
        }
    }
    names
}

/// The file a module name stands for, relative to the scripts folder: segments of ASCII
/// letters, digits, `_` and `-`, separated by `.` or `/`, plus `.lua`. Anything else (empty
/// segments, `..`, absolute paths, backslashes) is refused, so `require` cannot leave the
/// scripts folder.
pub(crate) fn module_relative_path(name: &str) -> Option<PathBuf> {
    let segments: Vec<&str> = name.split(['.', '/']).collect();
    let valid = |s: &&str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if name.len() > 200 || !segments.iter().all(valid) {
        return None;
    }
    let mut path: PathBuf = segments.iter().collect();
    path.set_extension("lua");
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteConfig;
    use crate::lua::test_support::{load, temp_dir, test_limits};
    use crate::lua::{HookRequest, LuaRuntime};

    #[test]
    fn script_set_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ScriptSet>();
    }

    #[test]
    fn compile_error_is_reported_with_file_and_line() {
        let errors = load(
            &[("auth.lua", "local a = 1\nlocal b = = 2\n")],
            test_limits(),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("script[0]: auth.lua:2: "),
            "{errors:?}"
        );
    }

    #[test]
    fn top_level_runtime_error_is_reported_at_load() {
        let errors = load(&[("a.lua", "\n\nlocal x = nil + 1")], test_limits()).unwrap_err();
        assert!(errors[0].starts_with("script[0]: a.lua:3: "), "{errors:?}");
    }

    #[test]
    fn hook_global_that_is_not_a_function_is_refused() {
        let errors = load(&[("a.lua", "on_access = 5")], test_limits()).unwrap_err();
        assert!(
            errors[0].contains("on_access is not a function"),
            "{errors:?}"
        );
    }

    #[test]
    fn defines_tells_which_hooks_a_script_has() {
        let set = load(
            &[(
                "a.lua",
                "function on_access(ctx) end\nfunction on_log(ctx, e) end",
            )],
            test_limits(),
        )
        .unwrap();
        assert!(set.defines(0, Hook::Access));
        assert!(set.defines(0, Hook::Log));
        assert!(!set.defines(0, Hook::Prompt));
        assert!(!set.defines(1, Hook::Access));
    }

    #[test]
    fn config_scripts_are_found_by_resolved_path_and_loaded_once() {
        let dir = temp_dir();
        std::fs::create_dir_all(dir.join("scripts")).unwrap();
        std::fs::write(dir.join("scripts/a.lua"), "function on_access(ctx) end").unwrap();
        std::fs::write(
            dir.join("scripts/b.lua"),
            "function on_prompt(ctx, chat) end",
        )
        .unwrap();
        let route = |hooks: &str| RouteConfig {
            hooks: hooks.into(),
            ..RouteConfig::default()
        };
        let mut config = Config {
            base_dir: dir.clone(),
            route: vec![route("scripts/a.lua"), route(""), route("./scripts/a.lua")],
            ..Config::default()
        };
        config.ai.hooks = "scripts/b.lua".into();
        let set = ScriptSet::load(&config).unwrap();
        assert_eq!(set.len(), 2);
        let a = set.id_for(&config.resolve_path("scripts/a.lua")).unwrap();
        let b = set.id_for(&config.resolve_path("scripts/b.lua")).unwrap();
        assert!(set.defines(a, Hook::Access) && set.defines(b, Hook::Prompt));
        assert_eq!(set.name(a), Some("scripts/a.lua"));
    }

    #[test]
    fn missing_script_file_is_reported_with_its_config_key() {
        let config = Config {
            base_dir: temp_dir(),
            route: vec![RouteConfig {
                hooks: "nope.lua".into(),
                ..RouteConfig::default()
            }],
            ..Config::default()
        };
        let errors = ScriptSet::load(&config).unwrap_err();
        assert!(
            errors[0].starts_with("route[0].hooks: nope.lua: cannot read"),
            "{errors:?}"
        );
    }

    #[test]
    fn require_loads_modules_from_the_scripts_folder_once() {
        let set = load(
            &[
                ("main.lua", "local util = require('lib.util')\nlocal again = require 'lib/util'\n\
                              function on_access(ctx) ctx:set_consumer(util.name .. tostring(util == again)) end"),
                ("lib/util.lua", "return { name = 'util-' }"),
            ],
            test_limits(),
        )
        .unwrap();
        let mut rt = LuaRuntime::new(test_limits());
        rt.sync(&Arc::new(set));
        let mut req = HookRequest::default();
        rt.call(0, Hook::Access, &mut req).unwrap();
        assert_eq!(req.set_consumer.as_deref(), Some("util-true"));
    }

    #[test]
    fn require_of_a_missing_module_is_a_load_error() {
        let errors = load(
            &[("main.lua", "local x = require('nothere')")],
            test_limits(),
        )
        .unwrap_err();
        assert!(errors[0].contains("nothere.lua: cannot read"), "{errors:?}");
    }

    #[test]
    fn require_outside_the_scripts_folder_is_refused() {
        let errors = load(
            &[("main.lua", "local x = require('../secret')")],
            test_limits(),
        )
        .unwrap_err();
        assert!(errors[0].contains("invalid module name"), "{errors:?}");
        let errors = load(
            &[(
                "main.lua",
                "local name = '/etc/passwd'\nlocal x = require(name)",
            )],
            test_limits(),
        )
        .unwrap_err();
        assert!(
            errors[0].contains("main.lua:2: require: invalid module name"),
            "{errors:?}"
        );
    }

    #[test]
    fn module_names_map_to_files_inside_the_folder() {
        assert_eq!(module_relative_path("a.b"), Some(PathBuf::from("a/b.lua")));
        assert_eq!(
            module_relative_path("a/b-c_d"),
            Some(PathBuf::from("a/b-c_d.lua"))
        );
        for bad in ["", "..", "../x", "/etc/passwd", "a..b", "a\\b", "a b"] {
            assert_eq!(module_relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn required_names_skips_comments_and_other_identifiers() {
        let source =
            "local a = require('x')\n-- local b = require('old')\nlocal c = my_require('y')\n\
                      local d = require \"z.w\"";
        assert_eq!(required_names(source), vec!["x", "z.w"]);
    }

    #[test]
    fn scripts_do_not_see_each_others_globals() {
        let dir = temp_dir();
        std::fs::write(
            dir.join("a.lua"),
            "function helper() return 'a' end\nfunction on_access(ctx) end",
        )
        .unwrap();
        std::fs::write(
            dir.join("b.lua"),
            "function on_access(ctx) ctx:set_consumer(tostring(helper)) end",
        )
        .unwrap();
        let set = ScriptSet::from_files(&dir, &["a.lua", "b.lua"], test_limits()).unwrap();
        let mut rt = LuaRuntime::new(test_limits());
        rt.sync(&Arc::new(set));
        let mut req = HookRequest::default();
        rt.call(1, Hook::Access, &mut req).unwrap();
        assert_eq!(req.set_consumer.as_deref(), Some("nil"));
    }
}
