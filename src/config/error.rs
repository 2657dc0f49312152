//! What loading and checking a config report: errors and warnings, each naming a key path.

use std::fmt;

/// One problem in the config, located by key path (`route[2].upstream`) and, where known, by
/// line. Messages never contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, e.g. `server.listen[0]`; empty for a TOML syntax error.
    pub path: String,
    /// 1-based line in the config file, when known.
    pub line: Option<usize>,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(f, &self.path, self.line, &self.message)
    }
}

impl std::error::Error for ConfigError {}

/// `path (line N): message`, dropping whichever of path and line is unknown.
fn write_located(
    f: &mut fmt::Formatter<'_>,
    path: &str,
    line: Option<usize>,
    message: &str,
) -> fmt::Result {
    match (path.is_empty(), line) {
        (false, Some(line)) => write!(f, "{path} (line {line}): {message}"),
        (false, None) => write!(f, "{path}: {message}"),
        (true, Some(line)) => write!(f, "line {line}: {message}"),
        (true, None) => f.write_str(message),
    }
}

/// Every error found in one config, in file order where known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// A single error without a key path (e.g. the file cannot be read).
    pub fn single(message: impl Into<String>) -> ConfigErrors {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            line: None,
            message: message.into(),
        }])
    }
}

impl std::ops::Deref for ConfigErrors {
    type Target = [ConfigError];

    fn deref(&self) -> &[ConfigError] {
        &self.0
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// One error per line.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Something legal but unwise (a literal secret in the file, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Key path of the offending key.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is unwise and what to do instead.
    pub message: String,
}

/// `path (line N): message`, like [`ConfigError`]; `check` prefixes the line with `warning: `.
impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(f, &self.path, self.line, &self.message)
    }
}

/// The outcome of `check`: all errors and all warnings.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Problems that make the config unusable.
    pub errors: Vec<ConfigError>,
    /// Problems worth fixing that do not stop the gateway.
    pub warnings: Vec<ConfigWarning>,
}

impl CheckReport {
    /// True when there is no error (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// What `credentialflow check` prints: `error: ...` lines, then `warning: ...` lines (the
/// word `warning` on each is part of the contract).
impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for error in &self.errors {
            writeln!(f, "error: {error}")?;
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        Ok(())
    }
}

/// A serde type error (`invalid type: integer `5`, expected a sequence`, `invalid value:
/// integer `-1`, expected usize`) in the words of someone who wrote the file: `expected a
/// whole number, found -1`, `expected true or false, found a string`. Rust type names mean
/// nothing to an operator. Messages of any other shape come back as they are. Strings were
/// already left out of the message (they may be secrets in the wrong place).
pub(crate) fn in_plain_words(message: &str) -> String {
    let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    else {
        return message.to_string();
    };
    let Some((found, expected)) = rest.rsplit_once(", expected ") else {
        return message.to_string();
    };
    let found = plain_found(found);
    let expected = plain_expected(expected, &found).unwrap_or_else(|| expected.to_string());
    format!("expected {expected}, found {found}")
}

/// What the file holds, as serde's `Unexpected` names it, in TOML's words.
fn plain_found(found: &str) -> String {
    let quoted = |prefix: &str| {
        found
            .strip_prefix(prefix)
            .and_then(|v| v.strip_prefix('`'))
            .and_then(|v| v.strip_suffix('`'))
            .map(str::to_string)
    };
    if let Some(value) = quoted("integer ").or_else(|| quoted("floating point ")) {
        return value;
    }
    if let Some(value) = quoted("boolean ") {
        return value;
    }
    match found {
        "sequence" => "a list".to_string(),
        "map" => "a table".to_string(),
        "string" => "a string".to_string(),
        other => other.to_string(),
    }
}

/// What the key takes, for the expectations plain types give; `None` keeps serde's text
/// (a custom expectation is already written for people).
fn plain_expected(expected: &str, found: &str) -> Option<String> {
    let unsigned_max: Option<u128> = match expected {
        "u8" => Some(u8::MAX.into()),
        "u16" => Some(u16::MAX.into()),
        "u32" => Some(u32::MAX.into()),
        "u64" | "usize" => Some(u64::MAX.into()),
        _ => None,
    };
    if let Some(max) = unsigned_max {
        // A negative number or one past the type's range: say which bound it broke.
        let text = if found.starts_with('-') {
            "a whole number of 0 or more".to_string()
        } else if found.parse::<u128>().is_ok() && max < u64::MAX.into() {
            format!("a whole number up to {max}")
        } else {
            "a whole number".to_string()
        };
        return Some(text);
    }
    let text = match expected {
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" | "a character" => "a string",
        "a sequence" => "a list (`[...]`)",
        "a map" => "a table",
        other if other.starts_with("struct ") => "a table",
        _ => return None,
    };
    Some(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_speak_of_whole_numbers_strings_and_true_or_false() {
        for (serde, plain) in [
            (
                "invalid type: a string, expected usize",
                "expected a whole number, found a string",
            ),
            (
                "invalid type: floating point `1.5`, expected u64",
                "expected a whole number, found 1.5",
            ),
            (
                "invalid value: integer `-1`, expected usize",
                "expected a whole number of 0 or more, found -1",
            ),
            (
                "invalid value: integer `70000`, expected u16",
                "expected a whole number up to 65535, found 70000",
            ),
            (
                "invalid type: integer `5`, expected a string",
                "expected a string, found 5",
            ),
            (
                "invalid type: integer `1`, expected a boolean",
                "expected true or false, found 1",
            ),
            (
                "invalid type: integer `5`, expected a sequence",
                "expected a list (`[...]`), found 5",
            ),
            (
                "invalid type: boolean `true`, expected f64",
                "expected a number, found true",
            ),
            (
                "invalid type: integer `3`, expected struct RateLimitConfig",
                "expected a table, found 3",
            ),
        ] {
            let words = in_plain_words(serde);
            assert_eq!(words, plain, "{serde}");
            for rust in ["usize", "u64", "u16", "f64", "invalid type", "integer `"] {
                assert!(!words.contains(rust), "{words}");
            }
        }
    }

    #[test]
    fn other_messages_are_left_as_they_are() {
        for message in [
            "unknown field `workerz`, expected one of `listen`, `workers`",
            "missing field `name`",
            "unknown variant `apikey`, expected one of `none`, `api_key`",
            "invalid type: integer `5`, expected a secret reference like env:NAME",
        ] {
            let words = in_plain_words(message);
            assert!(!words.contains("invalid type"), "{words}");
            if !message.starts_with("invalid") {
                assert_eq!(words, message);
            }
        }
    }

    fn error(path: &str, line: Option<usize>) -> ConfigError {
        ConfigError {
            path: path.to_string(),
            line,
            message: "bad".to_string(),
        }
    }

    #[test]
    fn error_displays_path_line_and_message() {
        assert_eq!(
            error("route[2].upstream", Some(7)).to_string(),
            "route[2].upstream (line 7): bad"
        );
    }

    #[test]
    fn error_without_line_displays_path_and_message() {
        assert_eq!(
            error("server.listen[0]", None).to_string(),
            "server.listen[0]: bad"
        );
    }

    #[test]
    fn errors_display_one_per_line() {
        let errors = ConfigErrors(vec![error("a", None), error("b", Some(2))]);
        assert_eq!(errors.to_string(), "a: bad\nb (line 2): bad");
    }

    #[test]
    fn report_prefixes_errors_and_warnings() {
        let report = CheckReport {
            errors: vec![error("a", Some(1))],
            warnings: vec![ConfigWarning {
                path: "server.admin_token".to_string(),
                line: Some(3),
                message: "literal secret".to_string(),
            }],
        };
        assert_eq!(
            report.to_string(),
            "error: a (line 1): bad\nwarning: server.admin_token (line 3): literal secret\n"
        );
    }
}
