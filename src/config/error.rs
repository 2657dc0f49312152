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

#[cfg(test)]
mod tests {
    use super::*;

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
