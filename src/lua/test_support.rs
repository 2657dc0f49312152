//! Helpers for the Lua tests: scripts written to a fresh temporary folder.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{LuaLimits, LuaRuntime, ScriptSet};

/// A fresh, empty folder under the system temp dir.
pub(crate) fn temp_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cf-lua-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Limits generous enough that only tests about limits hit them.
pub(crate) fn test_limits() -> LuaLimits {
    LuaLimits {
        hook_timeout: Duration::from_millis(500),
        memory_limit_bytes: 16 << 20,
    }
}

/// Writes `files` (name, source) into a fresh folder and loads the first as script 0.
pub(crate) fn load(files: &[(&str, &str)], limits: LuaLimits) -> Result<ScriptSet, Vec<String>> {
    let dir = temp_dir();
    for (name, source) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, source).unwrap();
    }
    ScriptSet::from_files(&dir, &[files[0].0], limits)
}

/// A runtime with the single script `source` loaded as script 0 (`hook.lua`).
pub(crate) fn runtime(source: &str) -> LuaRuntime {
    runtime_with(source, test_limits())
}

/// As [`runtime`], with the given limits.
pub(crate) fn runtime_with(source: &str, limits: LuaLimits) -> LuaRuntime {
    let set = load(&[("hook.lua", source)], limits).expect("script loads");
    let mut rt = LuaRuntime::new(limits);
    rt.sync(&Arc::new(set));
    rt
}
