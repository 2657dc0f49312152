//! The worker's in-process seam: [`serve`] on a port-0 listener, driven like the binary
//! drives it, with a real upstream on loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::{block_on, serve, Driver};
use crate::accesslog::AccessLog;
use crate::auth::CredentialCache;
use crate::config::{self, SecretWatcher};
use crate::limits::{Admission, BudgetTable};
use crate::snapshot::{Carried, Services, Shared, Snapshot};
use crate::store::sqlite_settings;
use crate::store::usage::UsageSender;

/// Bounds every wait, so a broken worker fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

/// A fresh, empty folder under the system temp dir for the key store.
fn data_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cf-worker-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An upstream that answers one request with `hello` and reports its request line.
fn one_shot_upstream() -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let _ = seen_tx.send(head.lines().next().unwrap_or_default().to_string());
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            .unwrap();
    });
    (addr, seen)
}

/// Shared state for one gateway process proxying every path to `upstream`.
fn shared_for(upstream: SocketAddr, data_dir: &std::path::Path) -> Arc<Shared> {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
         data_dir = \"{}\"\naccess_log = \"\"\nworkers = 1\n\n\
         [[upstream]]\nname = \"backend\"\ntargets = [\"{upstream}\"]\n\n\
         [[route]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"backend\"\nauth = \"none\"\n",
        data_dir.display()
    );
    let config = config::parse(&text, data_dir).expect("the test config parses");
    let secrets = SecretWatcher::start();
    let admission = Arc::new(Admission::default());
    let carried = Arc::new(Carried::default());
    let snapshot =
        Snapshot::build(config, &secrets, &admission, &carried).expect("the test config builds");
    let services = Services {
        credentials: CredentialCache::start(&sqlite_settings(data_dir)).unwrap(),
        admission,
        budgets: Arc::new(BudgetTable::new()),
        usage: UsageSender::disconnected(),
        carried,
    };
    Arc::new(Shared::new(snapshot, None, secrets, services, 1))
}

#[test]
fn a_worker_on_a_port_zero_listener_proxies_a_request_and_stops_on_shutdown() {
    let (upstream, seen) = one_shot_upstream();
    let dir = data_dir();
    let shared = shared_for(upstream, &dir);

    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let (serving_tx, serving) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let worker_shared = shared.clone();
    std::thread::spawn(move || {
        let ran = block_on(Driver::Epoll, move || async move {
            let listener = monoio::net::TcpListener::from_std(listener).unwrap();
            serve(
                0,
                worker_shared,
                AccessLog::Off,
                vec![(listener, false)],
                || {
                    let _ = serving_tx.send(());
                },
            )
            .await
        });
        let _ = done_tx.send(ran.is_ok());
    });
    serving
        .recv_timeout(PATIENCE)
        .expect("the worker starts serving");
    assert!(shared.all_serving(), "the worker counts itself as serving");

    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client
        .write_all(b"GET /hello HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    client.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(response.ends_with("\r\n\r\nhello"), "{response}");
    assert_eq!(
        seen.recv_timeout(PATIENCE).unwrap(),
        "GET /hello HTTP/1.1",
        "the upstream got the proxied request"
    );

    shared.begin_shutdown();
    assert_eq!(
        done.recv_timeout(PATIENCE),
        Ok(true),
        "serve returns once shutdown begins"
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener is closed once the worker has stopped"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
