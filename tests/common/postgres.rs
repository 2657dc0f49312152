//! A private PostgreSQL per test: `initdb` into a temporary directory, listening only on a
//! Unix socket in that directory (no TCP port to collide on), started with `pg_ctl -w`, and
//! stopped (`-m immediate`) and deleted when the [`PgServer`] is dropped, panics included.
//!
//! [`PgServer::start_with_tls`] also listens on 127.0.0.1 with TLS, and its `pg_hba.conf`
//! admits TCP clients over TLS only (`hostssl`), so a plaintext TCP login is refused.
//!
//! PostgreSQL refuses to run as root, so under root every server command runs as `nobody`
//! (`runuser -u nobody`), which owns the directory. The binaries come from the newest
//! `/usr/lib/postgresql/*/bin` (Debian's layout), else from `PATH`.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::certs::TestCa;

/// The superuser the clusters are initialised with.
pub const SUPERUSER: &str = "postgres";

/// The unprivileged account servers run as when the tests run as root.
const SERVER_USER: &str = "nobody";

/// One private PostgreSQL server.
pub struct PgServer {
    root: PathBuf,
    bin: PathBuf,
    /// `Some((uid, gid))` when commands must drop from root to [`SERVER_USER`].
    run_as: Option<(u32, u32)>,
    running: bool,
    /// The port when it is not the default: the TCP port of a TLS server, which also names
    /// its Unix socket (`.s.PGSQL.<port>`).
    port: Option<u16>,
}

/// How many ports a TLS server tries before giving up: a port is picked by binding port 0
/// and closing it, so another process may take it before the server binds it.
const PORT_ATTEMPTS: usize = 5;

impl PgServer {
    /// Initialises and starts a new server. Panics with what to install when PostgreSQL is
    /// missing, and with the server's output when it fails to start.
    pub fn start() -> PgServer {
        let mut server = PgServer::initialised();
        server.start_again();
        server
    }

    /// Like [`PgServer::start`], but also listening on 127.0.0.1 with `ssl = on`, presenting
    /// a certificate for `localhost` and `127.0.0.1` signed by a new CA (see
    /// [`PgServer::ca_file`]). TCP clients must use TLS (`hostssl` only); the Unix socket
    /// stays open without it, for [`PgServer::client`].
    pub fn start_with_tls() -> PgServer {
        let mut server = PgServer::initialised();
        let data = server.data_dir();
        let ca = TestCa::new();
        ca.write_pem(&server.ca_file());
        let leaf = ca.issue(&["localhost", "127.0.0.1"]);
        let (cert, key) = (data.join("server.crt"), data.join("server.key"));
        leaf.write(&cert, &key);
        // The server refuses a key others can read, or one it does not own.
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        if let Some((uid, gid)) = server.run_as {
            for file in [&cert, &key] {
                std::os::unix::fs::chown(file, Some(uid), Some(gid)).expect("chown TLS files");
            }
        }
        fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("write pg_hba.conf");
        server.append_conf(
            "listen_addresses = '127.0.0.1'\nssl = on\nssl_cert_file = 'server.crt'\n\
             ssl_key_file = 'server.key'\n",
        );
        let mut failures = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("pick a free port")
                .port();
            // A later `port` line overrides the one of an attempt that lost its port.
            server.append_conf(&format!("port = {port}\n"));
            server.port = Some(port);
            match server.try_start() {
                Ok(()) => return server,
                Err(log) if log.contains("could not bind") => failures.push_str(&log),
                Err(log) => panic!("PostgreSQL with TLS did not start:\n{log}"),
            }
        }
        panic!("PostgreSQL with TLS found no free port in {PORT_ATTEMPTS} attempts:\n{failures}");
    }

    /// The TCP port of a server started with [`PgServer::start_with_tls`].
    pub fn tls_port(&self) -> u16 {
        self.port.expect("a server started with start_with_tls")
    }

    /// The PEM file of the CA that signed a TLS server's certificate (for `sslrootcert`).
    pub fn ca_file(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// A `postgres://` URL to database `dbname` of a TLS server over TCP, reaching the server
    /// as `host` (a name or address; 127.0.0.1 is dialled either way), with the query
    /// `params` (`sslmode=...&sslrootcert=...`).
    pub fn tls_url(&self, host: &str, dbname: &str, params: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@{host}:{}/{dbname}?hostaddr=127.0.0.1&{params}",
            self.tls_port()
        )
    }

    /// A new cluster in a fresh directory, configured but not started.
    fn initialised() -> PgServer {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let bin = find_bin_dir();
        // Short: the socket path (`<root>/.s.PGSQL.5432`) must fit in sun_path's 108 bytes.
        let root = PathBuf::from(format!(
            "/tmp/cf-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("create the PostgreSQL directory");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        let run_as = if unsafe { libc::geteuid() } == 0 {
            let ids = user_ids(SERVER_USER);
            std::os::unix::fs::chown(&root, Some(ids.0), Some(ids.1))
                .expect("give the PostgreSQL directory to the server user");
            Some(ids)
        } else {
            None
        };
        let server = PgServer {
            root,
            bin,
            run_as,
            running: false,
            port: None,
        };
        let data = server.data_dir();
        server.run_checked(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        use std::io::Write;
        // Throwaway clusters: no TCP, little memory, so many can run at once. No fsync (a
        // server crash is simulated by killing the process, and the OS keeps what was
        // written), but commits still write their WAL before answering
        // (synchronous_commit stays on): a committed row survives `stop` and `start_again`.
        write!(
            conf,
            "\nlisten_addresses = ''\nunix_socket_directories = '{}'\nfsync = off\n\
             full_page_writes = off\nshared_buffers = 16MB\nmax_connections = 50\n",
            server.root.display()
        )
        .unwrap();
        server
    }

    /// Appends `settings` to `postgresql.conf` (where a later line overrides an earlier one).
    fn append_conf(&self, settings: &str) {
        use std::io::Write;
        fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir().join("postgresql.conf"))
            .and_then(|mut conf| conf.write_all(settings.as_bytes()))
            .expect("append to postgresql.conf");
    }

    /// The directory holding the socket (the client's `host`).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// A key=value connection string for database `dbname` as the superuser.
    pub fn url_for(&self, dbname: &str) -> String {
        let port = self.port.map(|p| format!(" port={p}")).unwrap_or_default();
        format!(
            "host={} user={SUPERUSER} dbname={dbname}{port}",
            self.root.display()
        )
    }

    /// The same connection as a `postgres://` URL, the form `[store] url` takes: the socket
    /// directory is the `host` query parameter, and `password` (if any) is in the user info.
    pub fn postgres_url(&self, dbname: &str, password: Option<&str>) -> String {
        let password = password.map(|p| format!(":{p}")).unwrap_or_default();
        let port = self.port.map(|p| format!("&port={p}")).unwrap_or_default();
        format!(
            "postgres://{SUPERUSER}{password}@/{dbname}?host={}{port}",
            self.root.display()
        )
    }

    /// The connection string of the default database.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// A connected client on the default database, for a test to inspect or tamper with.
    pub fn client(&self) -> ::postgres::Client {
        ::postgres::Client::connect(&self.url(), ::postgres::NoTls).expect("connect to PostgreSQL")
    }

    /// Creates database `name` and returns its connection string.
    pub fn create_database(&self, name: &str) -> String {
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        self.client()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        self.url_for(name)
    }

    /// Stops the server at once (`-m immediate`, like a crash or a cut cable); the data stays
    /// for [`PgServer::start_again`].
    pub fn stop(&mut self) {
        if self.running {
            let data = self.data_dir();
            self.run_checked(
                "pg_ctl",
                &["-D", path_str(&data), "-m", "immediate", "-w", "stop"],
            );
            self.running = false;
        }
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_again(&mut self) {
        if let Err(log) = self.try_start() {
            panic!("PostgreSQL did not start: {log}");
        }
    }

    /// Starts the server unless it runs; on failure, `pg_ctl`'s output and the server log.
    fn try_start(&mut self) -> Result<(), String> {
        if self.running {
            return Ok(());
        }
        let data = self.data_dir();
        let log = self.root.join("server.log");
        let started = self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        if !started.status.success() {
            return Err(format!(
                "{}{}\nserver log:\n{}",
                String::from_utf8_lossy(&started.stdout),
                String::from_utf8_lossy(&started.stderr),
                fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        self.running = true;
        Ok(())
    }

    /// Gives the superuser `password` and makes the server demand it (SCRAM) on every
    /// connection from now on; restarts the server to apply it.
    pub fn require_password(&mut self, password: &str) {
        let escaped = password.replace('\'', "''");
        self.client()
            .batch_execute(&format!("ALTER ROLE {SUPERUSER} PASSWORD '{escaped}'"))
            .expect("set the password");
        fs::write(
            self.data_dir().join("pg_hba.conf"),
            "local all all scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        self.stop();
        self.start_again();
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program);
        let mut command = match self.run_as {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", SERVER_USER, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        command
            .args(args)
            // The server user's home may not exist; libpq and initdb look there.
            .env("HOME", &self.root)
            .current_dir(&self.root)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
    }

    fn run_checked(&self, program: &str, args: &[&str]) {
        let output = self.run(program, args);
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let data = self.data_dir();
            // Not run_checked: a panic while unwinding would abort the test binary.
            let _ = self.run(
                "pg_ctl",
                &["-D", path_str(&data), "-m", "immediate", "-w", "stop"],
            );
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`, else the directory of `initdb` on `PATH`.
fn find_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no initdb and \
             pg_ctl on PATH): install Debian's `postgresql` package (scripts/test.sh does so \
             when run as root)"
        )
    })
}

/// The uid and gid of `user`, from `/etc/passwd`.
fn user_ids(user: &str) -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&user) && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .unwrap_or_else(|| panic!("no user {user:?} to run PostgreSQL as (it refuses root)"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}
