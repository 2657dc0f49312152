//! Secret references (`env:NAME`, `file:PATH`, or a literal) and their resolved values.
//!
//! Rules that hold everywhere in this file: a secret value is never part of a `Debug`,
//! `Display`, `Serialize` or error string; values are zeroized when dropped; `file:` secrets
//! are trimmed of trailing whitespace (files written by `echo` end in a newline) and can be
//! watched so a rotated file takes effect without a restart.

use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Where a secret comes from, as written in the config file.
///
/// Deserializes from one string: `env:NAME`, `file:PATH` or anything else as a literal value.
/// Relative `file:` paths are made absolute against the config file's directory by the loader
/// (see [`SecretRef::anchor`]).
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// The value of an environment variable, read at resolve time.
    Env(String),
    /// The content of a file, trailing whitespace trimmed.
    File(PathBuf),
    /// A value written in the config file itself (accepted; `check` warns about it).
    Literal(Secret),
}

impl SecretRef {
    /// Parses the config-file spelling. Errors never contain the text (it may be a literal).
    pub fn parse(text: &str) -> Result<SecretRef, String> {
        if let Some(name) = text.strip_prefix("env:") {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err("env: needs a variable name, as in env:MY_TOKEN".to_string());
            }
            Ok(SecretRef::Env(name.to_string()))
        } else if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err("file: needs a path, as in file:/run/secrets/token".to_string());
            }
            Ok(SecretRef::File(PathBuf::from(path)))
        } else if text.is_empty() {
            Err("a secret must not be empty".to_string())
        } else {
            Ok(SecretRef::Literal(Secret::new(text)))
        }
    }

    /// True for a value written in the config file itself.
    pub fn is_literal(&self) -> bool {
        matches!(self, SecretRef::Literal(_))
    }

    /// Makes a relative `file:` path relative to `base_dir` (the config file's directory).
    pub fn anchor(&mut self, base_dir: &Path) {
        if let SecretRef::File(path) = self {
            if path.is_relative() {
                *path = base_dir.join(&*path);
            }
        }
    }

    /// Reads the current value. The error names the reference (`env:NAME` or `file:PATH`),
    /// never a value.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(value) if value.is_empty() => Err(format!("env:{name} is set but empty")),
                Ok(value) => Ok(Secret::new(value)),
                Err(std::env::VarError::NotPresent) => {
                    Err(format!("env:{name}: environment variable is not set"))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(format!("env:{name}: value is not valid UTF-8"))
                }
            },
            SecretRef::File(path) => read_secret_file(path),
            SecretRef::Literal(secret) => Ok(secret.clone()),
        }
    }
}

/// Reads and trims a secret file; errors name the path only.
fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let text = fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| format!("file:{}: cannot read: {e}", path.display()))?;
    let trimmed = text.trim_end();
    if trimmed.is_empty() {
        return Err(format!("file:{} is empty", path.display()));
    }
    Ok(Secret::new(trimmed))
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "SecretRef(env:{name})"),
            SecretRef::File(path) => write!(f, "SecretRef(file:{})", path.display()),
            SecretRef::Literal(_) => f.write_str("SecretRef(literal, redacted)"),
        }
    }
}

/// The reference as a user would write it; a literal shows as `literal (redacted)`.
impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
            SecretRef::Literal(_) => f.write_str("literal (redacted)"),
        }
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(deserializer)?);
        SecretRef::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Serializes `env:`/`file:` as written; a literal becomes `"<redacted>"` so a dumped config
/// never carries a secret (it does not round-trip, on purpose).
impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SecretRef::Literal(_) => serializer.serialize_str("<redacted>"),
            other => serializer.serialize_str(&other.to_string()),
        }
    }
}

/// For optional secret keys: an absent key or `""` (the contract's "unset" spelling, as in
/// `hs_secret = ""`) is `None`.
pub(crate) fn deserialize_optional<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretRef>, D::Error> {
    let text = Zeroizing::new(String::deserialize(deserializer)?);
    if text.is_empty() {
        return Ok(None);
    }
    SecretRef::parse(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A resolved secret value: zeroized on drop, redacted in `Debug`, no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(value.into()))
    }

    /// The value, for the one place that must use it (a header being written, a MAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` in time independent of where they differ, so a remote caller
    /// cannot find a token byte by byte from response times. (Length is not hidden.)
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        if mine.len() != candidate.len() {
            return false;
        }
        let diff = mine
            .iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // black_box keeps the optimiser from turning the fold into an early-exit compare.
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// A secret whose current value can be read on the hot path without a lock, and which a
/// [`SecretWatcher`] replaces when its file changes. Clones share the value.
#[derive(Clone)]
pub struct LiveSecret {
    current: Arc<ArcSwap<Secret>>,
}

impl LiveSecret {
    /// A value that never changes (an `env:` or literal secret, or a test).
    pub fn fixed(secret: Secret) -> LiveSecret {
        LiveSecret {
            current: Arc::new(ArcSwap::from_pointee(secret)),
        }
    }

    /// The current value; lock-free, wait-free in the common case.
    pub fn current(&self) -> arc_swap::Guard<Arc<Secret>> {
        self.current.load()
    }
}

impl fmt::Debug for LiveSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LiveSecret(redacted)")
    }
}

/// How often the watcher looks at `file:` secrets by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What identifies one version of a file without reading it. The inode is part of it because
/// rotation by rename (and Kubernetes' symlink swap) can keep size and even mtime.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = fs::metadata(path).ok()?;
    Some(Fingerprint {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// One watched file and the value slot that readers share.
struct WatchedFile {
    path: PathBuf,
    seen: Option<Fingerprint>,
    target: Weak<ArcSwap<Secret>>,
}

impl WatchedFile {
    /// Re-reads the file if it changed; keeps the old value when the new one is unreadable
    /// (a rotation in progress must not take the gateway's credential away).
    fn refresh(&mut self, target: &ArcSwap<Secret>) {
        let now = fingerprint(&self.path);
        if now == self.seen {
            return;
        }
        self.seen = now;
        if now.is_none() {
            log::warn!(
                "secret file:{} disappeared; keeping its last value",
                self.path.display()
            );
            return;
        }
        match read_secret_file(&self.path) {
            Ok(secret) => {
                target.store(Arc::new(secret));
                log::info!("secret file:{} reloaded", self.path.display());
            }
            Err(e) => log::warn!("{e}; keeping the last value"),
        }
    }
}

/// Owns one background thread that polls every registered `file:` secret and swaps new
/// values into the [`LiveSecret`]s handed out by [`SecretWatcher::watch`]. Dropping the
/// watcher stops the thread; handed-out `LiveSecret`s keep their last value.
pub struct SecretWatcher {
    files: Arc<Mutex<Vec<WatchedFile>>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SecretWatcher {
    /// Starts the watcher thread with [`DEFAULT_POLL_INTERVAL`].
    pub fn start() -> SecretWatcher {
        SecretWatcher::with_poll_interval(DEFAULT_POLL_INTERVAL)
    }

    /// Starts the watcher thread polling every `interval`.
    pub fn with_poll_interval(interval: Duration) -> SecretWatcher {
        let files: Arc<Mutex<Vec<WatchedFile>>> = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread_files = Arc::clone(&files);
        let thread = std::thread::Builder::new()
            .name("cf-secret-watch".to_string())
            .spawn(move || loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => poll_once(&thread_files),
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            })
            .expect("spawn secret watcher thread");
        SecretWatcher {
            files,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Resolves `secret` now and returns a live handle to it. `file:` secrets are re-read
    /// whenever the file changes; watching the same file twice shares one value.
    pub fn watch(&self, secret: &SecretRef) -> Result<LiveSecret, String> {
        let SecretRef::File(path) = secret else {
            return secret.resolve().map(LiveSecret::fixed);
        };
        let mut files = self.files.lock();
        if let Some(current) = files
            .iter()
            .filter(|w| w.path == *path)
            .find_map(|w| w.target.upgrade())
        {
            return Ok(LiveSecret { current });
        }
        // Fingerprint before reading: a change that lands in between is seen by the next poll.
        let seen = fingerprint(path);
        let live = LiveSecret::fixed(read_secret_file(path)?);
        files.push(WatchedFile {
            path: path.clone(),
            seen,
            target: Arc::downgrade(&live.current),
        });
        Ok(live)
    }
}

/// One pass over the watched files: drop those nobody holds, refresh the rest.
fn poll_once(files: &Mutex<Vec<WatchedFile>>) {
    let mut files = files.lock();
    files.retain_mut(|watched| match watched.target.upgrade() {
        Some(target) => {
            watched.refresh(&target);
            true
        }
        None => false,
    });
}

impl Drop for SecretWatcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for SecretWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretWatcher")
            .field("files", &self.files.lock().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const VALUE: &str = "s3cr3t-value-never-printed";

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cf-secret-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn env_prefix_parses_as_env_reference() {
        assert_eq!(
            SecretRef::parse("env:CF_TOKEN").unwrap(),
            SecretRef::Env("CF_TOKEN".into())
        );
    }

    #[test]
    fn file_prefix_parses_as_file_reference() {
        assert_eq!(
            SecretRef::parse("file:tok.txt").unwrap(),
            SecretRef::File("tok.txt".into())
        );
    }

    #[test]
    fn other_text_parses_as_literal() {
        let parsed = SecretRef::parse(VALUE).unwrap();
        assert!(parsed.is_literal());
        assert_eq!(parsed.resolve().unwrap().expose(), VALUE);
    }

    #[test]
    fn empty_env_name_is_rejected() {
        assert!(SecretRef::parse("env:").is_err());
    }

    #[test]
    fn env_secret_resolves_from_environment() {
        std::env::set_var("CF_TEST_SECRET_ENV_OK", VALUE);
        let secret = SecretRef::Env("CF_TEST_SECRET_ENV_OK".into())
            .resolve()
            .unwrap();
        assert_eq!(secret.expose(), VALUE);
    }

    #[test]
    fn missing_env_var_error_names_the_variable() {
        let err = SecretRef::Env("CF_TEST_SECRET_SURELY_UNSET".into())
            .resolve()
            .unwrap_err();
        assert!(err.contains("env:CF_TEST_SECRET_SURELY_UNSET"), "{err}");
    }

    #[test]
    fn file_secret_is_trimmed_of_trailing_whitespace() {
        let dir = temp_dir("trim");
        let path = dir.join("token");
        fs::write(&path, format!("{VALUE}  \n\n")).unwrap();
        let secret = SecretRef::File(path).resolve().unwrap();
        assert_eq!(secret.expose(), VALUE);
    }

    #[test]
    fn unreadable_file_error_names_the_path_not_a_value() {
        let err = SecretRef::File("/nonexistent/cf/token".into())
            .resolve()
            .unwrap_err();
        assert!(err.contains("file:/nonexistent/cf/token"), "{err}");
    }

    #[test]
    fn relative_file_reference_is_anchored_at_the_config_dir() {
        let mut secret = SecretRef::File("tok".into());
        secret.anchor(Path::new("/etc/cf"));
        assert_eq!(secret, SecretRef::File("/etc/cf/tok".into()));
    }

    #[test]
    fn debug_of_literal_reference_hides_the_value() {
        let shown = format!("{:?}", SecretRef::parse(VALUE).unwrap());
        assert_eq!(shown, "SecretRef(literal, redacted)");
    }

    #[test]
    fn display_and_serialize_of_literal_hide_the_value() {
        let literal = SecretRef::parse(VALUE).unwrap();
        assert!(!literal.to_string().contains(VALUE));
        assert_eq!(serde_json::to_string(&literal).unwrap(), "\"<redacted>\"");
    }

    #[test]
    fn debug_of_secret_hides_the_value() {
        let secret = Secret::new(VALUE);
        assert_eq!(format!("{secret:?}"), "Secret(redacted)");
        assert!(!format!("{:?}", LiveSecret::fixed(secret)).contains(VALUE));
    }

    #[test]
    fn matches_compares_whole_value() {
        let secret = Secret::new("abc");
        assert!(secret.matches(b"abc"));
        assert!(!secret.matches(b"abd"));
        assert!(!secret.matches(b"ab"));
    }

    #[test]
    fn live_secret_sees_new_file_content_after_change() {
        let dir = temp_dir("live");
        let path = dir.join("token");
        fs::write(&path, "first\n").unwrap();
        let watcher = SecretWatcher::with_poll_interval(Duration::from_millis(20));
        let live = watcher.watch(&SecretRef::File(path.clone())).unwrap();
        assert_eq!(live.current().expose(), "first");

        fs::write(&path, "second-and-longer\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while live.current().expose() != "second-and-longer" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(live.current().expose(), "second-and-longer");
    }

    #[test]
    fn live_secret_keeps_last_value_when_file_is_removed() {
        let dir = temp_dir("removed");
        let path = dir.join("token");
        fs::write(&path, "kept").unwrap();
        let watcher = SecretWatcher::with_poll_interval(Duration::from_millis(10));
        let live = watcher.watch(&SecretRef::File(path.clone())).unwrap();
        fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(live.current().expose(), "kept");
    }

    #[test]
    fn watching_the_same_file_twice_shares_one_value() {
        let dir = temp_dir("shared");
        let path = dir.join("token");
        fs::write(&path, "one").unwrap();
        let watcher = SecretWatcher::with_poll_interval(Duration::from_secs(60));
        let a = watcher.watch(&SecretRef::File(path.clone())).unwrap();
        let b = watcher.watch(&SecretRef::File(path)).unwrap();
        assert!(Arc::ptr_eq(&a.current, &b.current));
    }

    #[test]
    fn watching_env_secret_gives_fixed_value() {
        std::env::set_var("CF_TEST_SECRET_WATCH_ENV", "from-env");
        let watcher = SecretWatcher::with_poll_interval(Duration::from_secs(60));
        let live = watcher
            .watch(&SecretRef::Env("CF_TEST_SECRET_WATCH_ENV".into()))
            .unwrap();
        assert_eq!(live.current().expose(), "from-env");
    }
}
