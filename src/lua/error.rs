//! A failed hook call, reduced to what an operator needs: which script, which line, why.

use std::fmt;

use super::redact::Redactor;

/// Why a hook call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookErrorKind {
    /// The script raised an error (its own `error(..)`, a runtime fault, a refused argument).
    Error,
    /// The call ran past `[lua] hook_timeout_ms` and was interrupted.
    Timeout,
    /// The VM ran past `[lua] memory_limit_mb`.
    Memory,
}

/// A hook call that failed; the pipeline answers 500 `hook_error` (closed for `on_access`).
///
/// `message` is the script's error text (first line, at most [`MAX_MESSAGE_CHARS`] chars),
/// without a traceback. Gateway-made messages never hold request data, but a script's own
/// `error(..)` text is the script author's choice: log it, do not send it to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookError {
    /// The script file the error points at, as written in the config (or a required module's
    /// path inside the scripts folder).
    pub script: String,
    /// Line in `script`, when the VM knows it.
    pub line: Option<u32>,
    /// What went wrong.
    pub message: String,
    /// Error, timeout or out-of-memory.
    pub kind: HookErrorKind,
}

/// Longest `message` kept, so a script cannot flood the log through its errors.
pub const MAX_MESSAGE_CHARS: usize = 300;

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.script, line, self.message),
            None => write!(f, "{}: {}", self.script, self.message),
        }
    }
}

impl std::error::Error for HookError {}

impl HookError {
    /// An error of `kind` in `script` with a gateway-made message.
    pub(crate) fn new(script: &str, kind: HookErrorKind, message: impl Into<String>) -> Self {
        HookError {
            script: script.to_owned(),
            line: None,
            message: message.into(),
            kind,
        }
    }

    /// Turns an mlua error raised while running `script` into a `HookError`, taking the
    /// position from the message (`file.lua:12: text`) or, for errors raised inside a Rust
    /// callback, from the first frame of the traceback that names a Lua file. The message is
    /// redacted (a script's `error(..)` text may quote request data) before it is cut to
    /// length, so no part of a secret survives the cut.
    pub(crate) fn from_lua(
        script: &str,
        kind: HookErrorKind,
        err: &mlua::Error,
        redactor: &Redactor,
    ) -> Self {
        let (cause, traceback) = root_cause(err);
        let text = match cause {
            mlua::Error::RuntimeError(m) | mlua::Error::MemoryError(m) => m.clone(),
            mlua::Error::SyntaxError { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let first_line = text.lines().next().unwrap_or("").trim();
        let mut out = HookError::new(script, kind, "");
        match split_position(first_line) {
            Some((file, line, rest)) => {
                out.script = file.to_owned();
                out.line = Some(line);
                out.message = rest.to_owned();
            }
            None => {
                out.message = first_line.to_owned();
                if let Some((file, line)) = traceback.and_then(first_lua_frame) {
                    out.script = file.to_owned();
                    out.line = Some(line);
                }
            }
        }
        out.message = truncate_chars(&redactor.redact(&out.message), MAX_MESSAGE_CHARS);
        out
    }
}

/// Whether `err` is (or wraps) an allocation failure under the VM's memory limit.
pub(crate) fn is_memory_error(err: &mlua::Error) -> bool {
    matches!(root_cause(err).0, mlua::Error::MemoryError(_))
}

/// The innermost error behind callback and context wrappers, with the innermost traceback.
fn root_cause(err: &mlua::Error) -> (&mlua::Error, Option<&str>) {
    let mut current = err;
    let mut traceback = None;
    loop {
        match current {
            mlua::Error::CallbackError {
                traceback: t,
                cause,
            } => {
                traceback = Some(t.as_str());
                current = cause;
            }
            mlua::Error::WithContext { cause, .. } => current = cause,
            other => return (other, traceback),
        }
    }
}

/// Splits `"scripts/a.lua:12: text"` into its parts. The file part must end in `.lua` so a
/// message that merely contains a colon is not mistaken for a position.
fn split_position(text: &str) -> Option<(&str, u32, &str)> {
    let dot_lua = text.find(".lua:")? + ".lua".len();
    let (file, rest) = text.split_at(dot_lua);
    let rest = rest.strip_prefix(':')?;
    let digits_end = rest.find(|c: char| !c.is_ascii_digit())?;
    let line = rest[..digits_end].parse().ok()?;
    let message = rest[digits_end..].strip_prefix(':')?.trim_start();
    Some((file, line, message))
}

/// The first traceback frame of the form `file.lua:12: in ...`.
fn first_lua_frame(traceback: &str) -> Option<(&str, u32)> {
    traceback
        .lines()
        .filter_map(|l| split_position(l.trim()))
        .map(|(file, line, _)| (file, line))
        .next()
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_error_position_is_split_into_file_line_and_message() {
        let err = mlua::Error::RuntimeError(
            "scripts/auth.lua:12: boom\nstack traceback:\n\tscripts/auth.lua:12".into(),
        );
        let e = HookError::from_lua(
            "scripts/auth.lua",
            HookErrorKind::Error,
            &err,
            &Redactor::default(),
        );
        assert_eq!(e.script, "scripts/auth.lua");
        assert_eq!(e.line, Some(12));
        assert_eq!(e.message, "boom");
        assert_eq!(e.to_string(), "scripts/auth.lua:12: boom");
    }

    #[test]
    fn callback_error_takes_its_line_from_the_traceback() {
        let err = mlua::Error::CallbackError {
            traceback: "stack traceback:\n\t[C]: in ?\n\tscripts/a.lua:7: in function 'on_access'"
                .into(),
            cause: mlua::Error::RuntimeError("bad header name".into()).into(),
        };
        let e = HookError::from_lua(
            "scripts/a.lua",
            HookErrorKind::Error,
            &err,
            &Redactor::default(),
        );
        assert_eq!((e.line, e.message.as_str()), (Some(7), "bad header name"));
    }

    #[test]
    fn messages_are_redacted_before_they_are_cut() {
        let key = format!("cf_{}", "k".repeat(43));
        let err = mlua::Error::RuntimeError(format!("{} {key}", "x".repeat(MAX_MESSAGE_CHARS - 6)));
        let e = HookError::from_lua("a.lua", HookErrorKind::Error, &err, &Redactor::default());
        assert!(!e.message.contains("cf_k"), "{}", e.message);
        assert!(e.message.ends_with("[reda..."), "{}", e.message);
    }

    #[test]
    fn long_messages_are_truncated() {
        let err = mlua::Error::RuntimeError("x".repeat(1000));
        let e = HookError::from_lua("a.lua", HookErrorKind::Error, &err, &Redactor::default());
        assert_eq!(e.message.len(), MAX_MESSAGE_CHARS + 3);
        assert_eq!(e.line, None);
    }

    #[test]
    fn memory_errors_are_recognised_through_callback_wrappers() {
        let err = mlua::Error::CallbackError {
            traceback: String::new(),
            cause: mlua::Error::MemoryError("not enough memory".into()).into(),
        };
        assert!(is_memory_error(&err));
        assert!(!is_memory_error(&mlua::Error::RuntimeError("x".into())));
    }
}
