//! The gateway's life: `check`, reload by SIGHUP and by the admin API (under
//! load, and with a bad config), graceful shutdown, health and metrics.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn check_reports_every_error_with_its_key_path() {
    let out = check_config(&config(
        r#"
[[upstream]]
name = "backend"
targets = ["not-an-address"]

[[route]]
name = "api"
path_prefix = "/"
upstream = "no_such_upstream"
auth = "none"
"#,
    ));
    assert_eq!(out.code, Some(1), "{}", out.output());
    let output = out.output();
    let lines: Vec<&str> = output.lines().collect();
    let targets_line = lines.iter().position(|l| l.contains("targets"));
    let route_line = lines
        .iter()
        .position(|l| l.contains("route") && l.contains("upstream") && !l.contains("targets"));
    assert!(
        targets_line.is_some(),
        "no error names upstream targets:\n{output}"
    );
    assert!(
        route_line.is_some(),
        "no error names route upstream:\n{output}"
    );
}

#[test]
fn check_rejects_an_unknown_key() {
    let out = check_config(&config("[limits]\nmax_header_byte = 100\n"));
    assert_eq!(out.code, Some(1), "{}", out.output());
    assert!(out.output().contains("max_header_byte"), "{}", out.output());
}

#[test]
fn check_accepts_a_valid_config() {
    let out = check_config(&config(&proxy_config("127.0.0.1:9")));
    assert_eq!(out.code, Some(0), "{}", out.output());
}

#[test]
fn check_warns_about_a_literal_secret_without_printing_it() {
    let out = check_config(&config(&format!(
        "{}{}",
        upstream_toml(
            "backend",
            "127.0.0.1:9",
            r#"credential = { header = "authorization", value = "Bearer {secret}", secret = "sk-literal-abc123" }"#,
        ),
        route_toml("api", "/", "backend", ""),
    )));
    let output = out.output();
    assert_eq!(out.code, Some(0), "{output}");
    assert!(
        output.lines().any(|l| l.contains("warning")),
        "no warning line:\n{output}"
    );
    assert!(
        !output.contains("sk-literal-abc123"),
        "the secret was printed:\n{output}"
    );
}

/// Three echo upstreams `a`, `b`, `c` and a config routing `/` to one of them.
struct ThreeUpstreams {
    a: Upstream,
    b: Upstream,
    c: Upstream,
}

impl ThreeUpstreams {
    fn start() -> ThreeUpstreams {
        ThreeUpstreams {
            a: Upstream::echo("a"),
            b: Upstream::echo("b"),
            c: Upstream::echo("c"),
        }
    }

    /// The config with the route pointing at `target` and extra `rest`.
    fn config_routing_to(&self, target: &str, rest: &str) -> String {
        config(&format!(
            "{}{}{}{}{rest}",
            upstream_toml("a", &self.a.target(), ""),
            upstream_toml("b", &self.b.target(), ""),
            upstream_toml("c", &self.c.target(), ""),
            route_toml("svc", "/", target, ""),
        ))
    }
}

/// What the load threads saw.
#[derive(Default)]
struct LoadReport {
    ok: usize,
    failures: Vec<String>,
}

/// Client threads sending GETs in a loop on keep-alive connections, opening a
/// new connection every 20 requests, until stopped (or 60 s pass).
struct Load {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                let report = report.clone();
                std::thread::spawn(move || load_loop(addr, &stop, &report))
            })
            .collect();
        Load {
            stop,
            report,
            threads,
        }
    }

    fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().expect("load thread panicked");
        }
        std::mem::take(&mut *self.report.lock().unwrap())
    }
}

fn load_loop(addr: SocketAddr, stop: &AtomicBool, report: &Mutex<LoadReport>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let mut client = match Client::try_connect(addr) {
            Ok(client) => client,
            Err(e) => {
                report
                    .lock()
                    .unwrap()
                    .failures
                    .push(format!("connect: {e}"));
                continue;
            }
        };
        for _ in 0..20 {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let outcome = client
                .try_send(&get("/load"))
                .map_err(|e| format!("send: {e}"))
                .and_then(|()| client.try_read_final_response().map_err(|e| e.to_string()));
            let mut report = report.lock().unwrap();
            match outcome {
                Ok(response) if response.status == 200 => {
                    report.ok += 1;
                    if response.header_has_token("connection", "close") {
                        break;
                    }
                }
                Ok(response) => {
                    report
                        .failures
                        .push(format!("{} {}", response.status, response.text()));
                    break;
                }
                Err(e) => {
                    report.failures.push(e);
                    break;
                }
            }
        }
    }
}

/// The upstream that answered a GET on a new connection.
fn answering_upstream(gw: &Gateway) -> String {
    Echo::of(&http_get(gw.addr(), "/probe")).upstream
}

on_both_drivers! {
    /// Reloads by SIGHUP and by the admin API under load fail no request, and
    /// afterwards new requests go to the newly configured upstream.
    fn reload_under_load_fails_no_request_and_switches_upstream(driver) {
        let ups = ThreeUpstreams::start();
        let gw = Gateway::start(&ups.config_routing_to("a", ""), driver);
        let load = Load::start(gw.addr(), 2);
        assert!(ups.a.wait_for_requests(20, WAIT), "the load never got going");

        gw.write_config(&ups.config_routing_to("b", ""));
        gw.reload_sighup();
        let mut last = String::new();
        let switched = wait_until(WAIT, || {
            last = answering_upstream(&gw);
            last == "b"
        });
        assert!(switched, "SIGHUP never switched the route to b (still {last})");

        gw.write_config(&ups.config_routing_to("c", ""));
        let reload = gw.reload_admin();
        assert_eq!(reload.status, 200, "{}", reload.text());
        // 200 means live on every worker: every new connection now reaches c.
        for _ in 0..6 {
            assert_eq!(answering_upstream(&gw), "c");
        }
        let seen_by_c = ups.c.request_count();
        assert!(
            ups.c.wait_for_requests(seen_by_c + 20, WAIT),
            "the load never reached the new upstream"
        );

        let report = load.finish();
        assert!(report.failures.is_empty(), "failed requests: {:?}", report.failures);
        assert!(report.ok >= 20, "only {} requests succeeded", report.ok);

        // Both reloads are admin actions, so both are in the audit log with their actor.
        let audit = std::fs::read_to_string(gw.dir().join("data/audit.log")).unwrap_or_default();
        let reloads: Vec<&str> = audit.lines().filter(|l| l.contains("\"reload\"")).collect();
        assert!(reloads.iter().any(|l| l.contains("signal:SIGHUP")), "audit log: {audit}");
        assert!(reloads.iter().any(|l| l.contains("\"admin\"")), "audit log: {audit}");
    }
}

on_both_drivers! {
    fn invalid_config_on_admin_reload_is_400_with_the_errors_and_the_old_config_stays(driver) {
        let ups = ThreeUpstreams::start();
        let gw = Gateway::start(&ups.config_routing_to("a", ""), driver);
        assert_eq!(answering_upstream(&gw), "a");

        gw.write_config(&ups.config_routing_to("b", "\n[limits]\nbogus_limit = 1\n"));
        let reload = gw.reload_admin();
        assert_eq!(reload.status, 400, "{}", reload.text());
        assert!(
            reload.text().contains("bogus_limit"),
            "errors not named: {}",
            reload.text()
        );
        assert_eq!(answering_upstream(&gw), "a");
    }
}

on_both_drivers! {
    fn invalid_config_on_sighup_keeps_the_old_config(driver) {
        let ups = ThreeUpstreams::start();
        let gw = Gateway::start(&ups.config_routing_to("a", ""), driver);
        gw.write_config(&ups.config_routing_to("b", "\n[limits]\nbogus_limit = 1\n"));
        gw.reload_sighup();
        // The rejected reload is logged with its errors; that is the signal it ran.
        assert!(
            wait_until(WAIT, || gw.stderr().contains("bogus_limit")),
            "the failed reload was never reported; stderr:\n{}",
            gw.stderr()
        );
        assert_eq!(answering_upstream(&gw), "a");
    }
}

on_both_drivers! {
    fn admin_reload_without_the_admin_token_is_401(driver) {
        let upstream = Upstream::echo("backend");
        let gw = Gateway::start(&config(&proxy_config(&upstream.target())), driver);
        let raw = request("POST", "/admin/reload", &[("Connection", "close")], b"");
        roundtrip(gw.admin_addr(), &raw).assert_error(401, "authentication_error");
    }
}

on_both_drivers! {
    fn sigterm_lets_in_flight_requests_finish_refuses_new_connections_and_exits_0(driver) {
        let release = Gate::new();
        let upstream = Upstream::replying(
            "slow",
            Reply::Held(release.clone(), Box::new(Reply::text("done"))),
        );
        let mut gw = Gateway::start(&config(&proxy_config(&upstream.target())), driver);
        let mut in_flight: Vec<Client> = (0..3)
            .map(|i| {
                let mut client = Client::connect(gw.addr());
                client.send(&get(&format!("/slow/{i}")));
                client
            })
            .collect();
        assert!(
            upstream.wait_for_requests(3, WAIT),
            "requests never reached the upstream"
        );

        gw.signal(libc::SIGTERM);
        let addr = gw.addr();
        assert!(
            wait_until(WAIT, || TcpStream::connect(addr).is_err()),
            "the listener still accepts connections after SIGTERM"
        );

        release.open();
        for client in &mut in_flight {
            let response = client.read_final_response();
            assert_eq!(response.status, 200);
            assert_eq!(response.text(), "done");
        }
        let status = gw.wait_exit(Duration::from_secs(40));
        assert_eq!(status.code(), Some(0), "stderr:\n{}", gw.stderr());
    }
}

on_both_drivers! {
    fn sigint_stops_the_gateway_with_exit_code_0(driver) {
        let upstream = Upstream::echo("backend");
        let mut gw = Gateway::start(&config(&proxy_config(&upstream.target())), driver);
        assert_eq!(http_get(gw.addr(), "/before").status, 200);
        gw.signal(libc::SIGINT);
        let status = gw.wait_exit(Duration::from_secs(40));
        assert_eq!(status.code(), Some(0), "stderr:\n{}", gw.stderr());
    }
}

on_both_drivers! {
    fn healthz_answers_200_ok(driver) {
        let upstream = Upstream::echo("backend");
        let gw = Gateway::start(&config(&proxy_config(&upstream.target())), driver);
        let response = gw.admin_get("/healthz");
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["status"], "ok");
    }
}

/// The sum of `credentialflow_requests_total` samples labelled `route="api"`.
fn api_requests_total(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("credentialflow_requests_total{") && l.contains("route=\"api\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

on_both_drivers! {
    /// `/metrics` counts proxied requests by route and names the driver in use.
    fn metrics_count_requests_by_route_and_name_the_driver(driver) {
        let upstream = Upstream::echo("backend");
        let gw = Gateway::start(&config(&proxy_config(&upstream.target())), driver);
        for _ in 0..3 {
            assert_eq!(http_get(gw.addr(), "/counted").status, 200);
        }
        let mut metrics = String::new();
        let counted = wait_until(WAIT, || {
            let response = gw.admin_get("/metrics");
            metrics = response.text();
            response.status == 200 && api_requests_total(&metrics) >= 3.0
        });
        assert!(counted, "credentialflow_requests_total{{route=\"api\"}} < 3:\n{metrics}");
        let driver_label = format!("driver=\"{}\"", driver.as_str());
        assert!(metrics.contains(&driver_label), "no {driver_label} in /metrics:\n{metrics}");
    }
}

/// A listen address another process holds is a runtime failure: exit 2 with one clear line,
/// never a silent share of the port (SO_REUSEPORT alone would allow that).
#[test]
fn listen_address_in_use_exits_2() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind holder");
    let taken = holder.local_addr().unwrap();
    let dir = std::env::temp_dir().join(format!("cf-in-use-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("credentialflow.toml");
    let text = config("").replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"{taken}\"]"),
    );
    std::fs::write(&path, text.replace("@DIR@", &dir.to_string_lossy())).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_credentialflow"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("CF_ADMIN_TOKEN", "in-use-test-token")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run credentialflow serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(&taken.to_string()), "stderr: {stderr}");
    assert!(stderr.contains("in use"), "stderr: {stderr}");
    drop(holder);
    let _ = std::fs::remove_dir_all(dir);
}
