//! The HTTPS listener (`[server.tls]`): requests over TLS, and certificate
//! rotation by replacing the files and sending SIGHUP.

mod common;

use common::*;

/// A CA, the certificate files of a localhost leaf it signed, and a gateway
/// with an HTTPS listener using them in front of `upstream`.
struct TlsGateway {
    ca: TestCa,
    leaf: Leaf,
    files: TempDir,
    gw: Gateway,
}

impl TlsGateway {
    fn start(upstream: &Upstream, driver: Driver) -> TlsGateway {
        let ca = TestCa::new();
        let leaf = ca.issue(&["localhost"]);
        let files = TempDir::new("tls");
        leaf.write(&files.join("cert.pem"), &files.join("key.pem"));
        let cfg = config(&format!(
            "[server.tls]\nlisten = [\"127.0.0.1:0\"]\ncert = \"{}\"\nkey = \"{}\"\n{}",
            files.file("cert.pem"),
            files.file("key.pem"),
            proxy_config(&upstream.target())
        ));
        let gw = Gateway::start(&cfg, driver);
        TlsGateway {
            ca,
            leaf,
            files,
            gw,
        }
    }

    /// A TLS connection to the listener and the certificate it presented.
    fn connect(&self) -> (Client, Vec<u8>) {
        let (client, chain) =
            Client::connect_tls(self.gw.tls_addr(), self.ca.client_config(), "localhost");
        (client, chain[0].as_ref().to_vec())
    }
}

on_both_drivers! {
    fn https_request_through_the_tls_listener_is_proxied(driver) {
        let upstream = Upstream::echo("backend");
        let tls = TlsGateway::start(&upstream, driver);
        let (mut client, presented) = tls.connect();
        assert_eq!(presented, tls.leaf.cert_der.as_ref());
        client.send(&get("/secure/path"));
        let echo = Echo::of(&client.read_final_response());
        assert_eq!(echo.path, "/secure/path");
    }
}

on_both_drivers! {
    fn x_forwarded_proto_is_https_on_the_tls_listener(driver) {
        let upstream = Upstream::echo("backend");
        let tls = TlsGateway::start(&upstream, driver);
        let (mut client, _) = tls.connect();
        client.send(&get("/proto"));
        assert_eq!(client.read_final_response().status, 200);
        assert_eq!(
            upstream.last_request().header("x-forwarded-proto"),
            Some("https")
        );
    }
}

on_both_drivers! {
    fn sighup_after_replacing_the_certificate_files_serves_the_new_certificate(driver) {
        let upstream = Upstream::echo("backend");
        let tls = TlsGateway::start(&upstream, driver);
        assert_eq!(tls.connect().1, tls.leaf.cert_der.as_ref());

        let renewed = tls.ca.issue(&["localhost"]);
        // Both files are in place before the signal, so no reload sees a mixed pair.
        renewed.write(&tls.files.join("cert.new"), &tls.files.join("key.new"));
        std::fs::rename(tls.files.join("cert.new"), tls.files.join("cert.pem")).unwrap();
        std::fs::rename(tls.files.join("key.new"), tls.files.join("key.pem")).unwrap();
        tls.gw.reload_sighup();

        let rotated = wait_until(WAIT, || tls.connect().1 == renewed.cert_der.as_ref());
        assert!(rotated, "new handshakes still present the old certificate");
        let (mut client, _) = tls.connect();
        client.send(&get("/after-rotation"));
        assert_eq!(client.read_final_response().status, 200);
    }
}
