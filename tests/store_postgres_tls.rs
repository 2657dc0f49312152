//! The PostgreSQL store over TLS, against a private server that admits TCP clients over TLS
//! only (`common::postgres::PgServer::start_with_tls`): each `sslmode` connects or refuses
//! as documented, certificate failures say what was wrong, and no error shows the URL's
//! password.

mod common;

use common::postgres::PgServer;
use common::TestCa;
use credentialflow::store::postgres::{PgErrorKind, PgStore};
use credentialflow::store::{NewKey, Pepper, StoreError};

/// The fleet's pepper in these tests.
const PEPPER_HEX: &str = "5f1e0b9c2a7d4e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9011223344556677";

/// Given in every URL; the server trusts its clients, so it matters only to the errors.
const PASSWORD: &str = "tls-test-hunter2";

fn pepper() -> Pepper {
    Pepper::from_hex(PEPPER_HEX).unwrap()
}

/// `url` with [`PASSWORD`] in its user information.
fn with_password(url: &str) -> String {
    url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PASSWORD}@"),
        1,
    )
}

fn open(url: &str) -> Result<PgStore, StoreError> {
    PgStore::open(&with_password(url), pepper(), "edge-1")
}

/// The store's error for `url`, checked to be a PostgreSQL error without the password.
fn open_err(url: &str) -> (PgErrorKind, String) {
    match open(url) {
        Ok(_) => panic!("{url} connected"),
        Err(StoreError::Postgres(e)) => {
            let text = e.to_string();
            assert!(!text.contains(PASSWORD), "{text}");
            (e.kind(), text)
        }
        Err(other) => panic!("{url}: not a PostgreSQL error: {other}"),
    }
}

/// A key named `name` created through `store` reads back the same: the connection carries
/// real work.
fn create_and_read_back(store: &mut PgStore, name: &str) {
    let new = NewKey {
        name: name.into(),
        ..NewKey::default()
    };
    let (record, _secret) = store.create(new, "test").unwrap();
    assert_eq!(store.get(&record.id).unwrap(), Some(record));
}

fn verify_full(server: &PgServer, host: &str) -> String {
    let ca = server.ca_file();
    server.tls_url(
        host,
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    )
}

#[test]
fn verify_full_with_the_servers_ca_stores_and_reads_a_key() {
    let server = PgServer::start_with_tls();
    for host in ["localhost", "127.0.0.1"] {
        let mut store = open(&verify_full(&server, host)).unwrap();
        create_and_read_back(&mut store, &format!("via-{host}"));
    }
    // The same store seen over the Unix socket: the key went to this server.
    let count: i64 = server
        .client()
        .query_one("SELECT count(*) FROM keys WHERE name LIKE 'via-%'", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
}

#[test]
fn verify_full_refuses_a_certificate_for_another_host_name() {
    let server = PgServer::start_with_tls();
    // Dialled at 127.0.0.1 (hostaddr), checked against the name the URL gives.
    let (kind, text) = open_err(&verify_full(&server, "db.example"));
    assert_eq!(kind, PgErrorKind::Unreachable);
    assert!(text.contains("TLS"), "{text}");
    assert!(text.contains("not valid for name"), "{text}");
    assert!(text.contains("db.example"), "{text}");

    // verify-ca checks the chain only, so the same name passes.
    let ca = server.ca_file();
    let mut store = open(&server.tls_url(
        "db.example",
        "postgres",
        &format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
    ))
    .unwrap();
    create_and_read_back(&mut store, "verify-ca");
}

#[test]
fn verify_full_and_verify_ca_refuse_a_certificate_from_another_ca() {
    let server = PgServer::start_with_tls();
    let other_ca = server.ca_file().with_file_name("other-ca.pem");
    TestCa::new().write_pem(&other_ca);
    for mode in ["verify-full", "verify-ca"] {
        let (kind, text) = open_err(&server.tls_url(
            "localhost",
            "postgres",
            &format!("sslmode={mode}&sslrootcert={}", other_ca.display()),
        ));
        assert_eq!(kind, PgErrorKind::Unreachable, "{mode}");
        assert!(text.contains("invalid peer certificate"), "{mode}: {text}");
    }
    // Without sslrootcert the webpki roots are trusted, and they did not sign it either.
    let (_, text) = open_err(&server.tls_url("localhost", "postgres", "sslmode=verify-full"));
    assert!(text.contains("invalid peer certificate"), "{text}");
    // With sslrootcert, require checks the chain as libpq does.
    let (_, text) = open_err(&server.tls_url(
        "localhost",
        "postgres",
        &format!("sslmode=require&sslrootcert={}", other_ca.display()),
    ));
    assert!(text.contains("invalid peer certificate"), "{text}");
}

#[test]
fn plaintext_is_refused_by_a_tls_only_server() {
    let server = PgServer::start_with_tls();
    let (kind, text) = open_err(&server.tls_url("localhost", "postgres", "sslmode=disable"));
    assert_eq!(kind, PgErrorKind::Unreachable);
    assert!(text.contains("no pg_hba.conf entry"), "{text}");
    assert!(text.contains("no encryption"), "{text}");
}

#[test]
fn require_and_prefer_encrypt_without_checking_the_certificate() {
    let server = PgServer::start_with_tls();
    // The server is hostssl-only, so a connection at all proves it is encrypted; the
    // certificate is for localhost, so connecting as db.example proves it is not checked.
    for params in ["sslmode=require", "sslmode=prefer", "connect_timeout=5"] {
        let mut store = open(&server.tls_url("db.example", "postgres", params))
            .unwrap_or_else(|e| panic!("{params}: {e}"));
        create_and_read_back(&mut store, params);
    }
}

#[test]
fn sslmode_does_not_apply_to_unix_sockets() {
    let server = PgServer::start();
    // A plain server reached through its socket directory: libpq ignores sslmode on Unix
    // sockets, and so do we.
    let url = format!(
        "postgres://postgres@/postgres?host={}&sslmode=verify-full",
        server.socket_dir().display()
    );
    create_and_read_back(&mut open(&url).unwrap(), "over-socket");
}

/// The first message a client sent, and the start of the next (empty if none came).
type Received = (Vec<u8>, Vec<u8>);

/// What a server that declines TLS received from one connection: the 8-byte SSLRequest is
/// answered `N`, then the next message's first 8 bytes (a plaintext startup message) are read
/// if the client sends one before the socket closes.
fn declining_server() -> (u16, std::thread::JoinHandle<Received>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut request = vec![0; 8];
        socket.read_exact(&mut request).unwrap();
        socket.write_all(b"N").unwrap();
        let mut next = vec![0; 8];
        let read = socket.read(&mut next).unwrap_or(0);
        next.truncate(read);
        (request, next)
    });
    (port, handle)
}

/// The SSLRequest message: length 8, then the code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

#[test]
fn require_refuses_a_server_that_declines_tls_and_prefer_falls_back() {
    let (port, server) = declining_server();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require");
    let (kind, text) = open_err(&url);
    assert_eq!(kind, PgErrorKind::Unreachable);
    assert!(text.contains("server does not support TLS"), "{text}");
    let (request, next) = server.join().unwrap();
    assert_eq!(request, SSL_REQUEST);
    assert!(next.is_empty(), "require sent {next:?} in plaintext");

    // prefer continues in plaintext: the startup message (protocol 3.0) follows.
    let (port, server) = declining_server();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=prefer");
    open_err(&url);
    let (request, next) = server.join().unwrap();
    assert_eq!(request, SSL_REQUEST);
    assert_eq!(next.get(4..8), Some(&[0, 3, 0, 0][..]), "{next:?}");
}
