//! A private Redis per test: `redis-server` with persistence off (`--save ''
//! --appendonly no`), no TCP listener (`--port 0`), listening only on a Unix socket in a
//! temporary directory, and killed and deleted when the [`RedisServer`] is dropped, panics
//! included. No system-wide Redis service is used.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One private Redis server.
pub struct RedisServer {
    dir: PathBuf,
    child: Option<Child>,
    /// The password clients must give (`requirepass`), if any.
    password: Option<String>,
}

impl RedisServer {
    /// Starts a new server and waits until it answers `PING`. Panics with what to install
    /// when `redis-server` is missing, and with the server's log when it fails to start.
    pub fn start() -> RedisServer {
        RedisServer::launch(None)
    }

    /// Like [`RedisServer::start`], but clients must give `password` (kept across
    /// [`RedisServer::start_again`]); [`RedisServer::url`] carries it.
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::launch(Some(password.to_string()))
    }

    fn launch(password: Option<String>) -> RedisServer {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // Short: the socket path must fit in sun_path's 108 bytes.
        let dir = PathBuf::from(format!(
            "/tmp/cf-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the Redis directory");
        let mut server = RedisServer {
            dir,
            child: None,
            password,
        };
        server.start_again();
        server
    }

    /// The socket's path.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// The URL the cluster link takes: `redis+unix:///path/to.sock`, with `?pass=...` when
    /// the server has a password.
    pub fn url(&self) -> String {
        let url = format!("redis+unix://{}", self.socket().display());
        match &self.password {
            Some(password) => format!("{url}?pass={password}"),
            None => url,
        }
    }

    /// Kills the server at once (SIGKILL, like a crash): with persistence off, everything
    /// it held is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_file(self.socket());
    }

    /// Starts the server (again) on the same socket, with empty memory, and waits until it
    /// answers.
    pub fn start_again(&mut self) {
        if self.child.is_some() {
            return;
        }
        let log = self.dir.join("redis.log");
        let socket = self.socket();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(
                self.password
                    .iter()
                    .flat_map(|password| ["--requirepass", password.as_str()]),
            )
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): install Debian's `redis-server` package \
                     (scripts/test.sh does so when run as root)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + super::WAIT;
        while !ping(&socket, self.password.as_deref()) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "redis-server exited ({status}); log:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within {:?}; log:\n{}",
                super::WAIT,
                fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs `redis-cli` against the server with `args`; returns its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .arg("-s")
            .arg(self.socket())
            .args(
                self.password
                    .iter()
                    .flat_map(|password| ["--no-auth-warning", "-a", password.as_str()]),
            )
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(output.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// A connected client, for a test to inspect or tamper with.
    pub fn client(&self) -> ::redis::Connection {
        ::redis::Client::open(self.url())
            .and_then(|client| client.get_connection())
            .expect("connect to Redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether a server answers `PING` on `socket` (after `AUTH password`, when given).
fn ping(socket: &Path, password: Option<&str>) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if let Some(password) = password {
        let mut ok = [0u8; 5];
        let auth = format!("AUTH {password}\r\n");
        if stream.write_all(auth.as_bytes()).is_err()
            || stream.read_exact(&mut ok).is_err()
            || &ok != b"+OK\r\n"
        {
            return false;
        }
    }
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
