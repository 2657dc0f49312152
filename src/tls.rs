//! rustls configurations: the server side for `[server.tls]` listeners and the client side
//! toward TLS upstreams.
//!
//! Both use the `ring` crypto provider explicitly (`builder_with_provider`), so nothing depends
//! on a process-wide default provider being installed. Both offer only ALPN `http/1.1`: the data
//! plane speaks HTTP/1.1 on both sides (RFC 7301 section 3.1: the client lists the protocols it
//! can speak, the server picks one of them or answers without ALPN).
//!
//! Errors name the file they come from and what was wrong with it; they never include the
//! contents of a key file.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The one ALPN protocol we speak, on both the listener and the upstream side.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The crypto provider for every configuration we build.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the TLS configuration for HTTPS listeners from a PEM certificate chain (leaf first)
/// and a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
///
/// Fails, naming the file, when a file cannot be read, holds no certificate or no key, or when
/// the key does not belong to the leaf certificate.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = load_certs(cert)?;
    let key_der = load_private_key(key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("tls cert {} / key {}: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Builds the TLS configuration for connections to upstreams: the webpki (Mozilla) roots plus,
/// when given, every CA certificate in the PEM file `ca_file` (for private upstreams).
///
/// Certificate verification is always on; there is deliberately no way to turn it off.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for ca in load_certs(path)? {
            roots.add(ca).map_err(|e| {
                format!(
                    "tls ca_file {}: unusable CA certificate: {e}",
                    path.display()
                )
            })?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Reads every `CERTIFICATE` block of a PEM file; at least one is required.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = File::open(path).map_err(|e| format!("tls cert file {}: {e}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls cert file {}: invalid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls cert file {}: no PEM certificate found",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
///
/// The error never quotes the file: it may hold key material.
fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let file = File::open(path).map_err(|e| format!("tls key file {}: {e}", path.display()))?;
    match rustls_pemfile::private_key(&mut BufReader::new(file)) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(format!(
            "tls key file {}: no PEM private key (PKCS#8, RSA or SEC1) found",
            path.display()
        )),
        Err(_) => Err(format!("tls key file {}: invalid PEM", path.display())),
    }
}

/// Certificates for tests: a CA and a leaf for `localhost` / `127.0.0.1` signed by it, written
/// to a scratch directory that is removed on drop.
#[cfg(test)]
pub(crate) mod test_pki {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    /// A scratch directory under the system temp dir, unique per process and call.
    pub(crate) struct ScratchDir(PathBuf);

    impl ScratchDir {
        pub(crate) fn new(tag: &str) -> ScratchDir {
            static SEQ: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "cf-{tag}-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("create scratch dir");
            ScratchDir(dir)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }

        pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).expect("write scratch file");
            path
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A private CA and one leaf it signed, as files.
    pub(crate) struct TestPki {
        pub(crate) dir: ScratchDir,
        pub(crate) ca_cert: PathBuf,
        pub(crate) leaf_cert: PathBuf,
        pub(crate) leaf_key: PathBuf,
    }

    impl TestPki {
        /// A CA and a leaf valid for `localhost` and `127.0.0.1`.
        pub(crate) fn generate() -> TestPki {
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca_key = KeyPair::generate().expect("ca key");
            let ca = ca_params.self_signed(&ca_key).expect("ca cert");

            let leaf_params =
                CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                    .expect("leaf params");
            let leaf_key = KeyPair::generate().expect("leaf key");
            let leaf = leaf_params
                .signed_by(&leaf_key, &ca, &ca_key)
                .expect("leaf cert");

            let dir = ScratchDir::new("pki");
            let ca_cert = dir.write("ca.pem", &ca.pem());
            let leaf_cert = dir.write("leaf.pem", &leaf.pem());
            let leaf_key = dir.write("leaf.key", &leaf_key.serialize_pem());
            TestPki {
                dir,
                ca_cert,
                leaf_cert,
                leaf_key,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_pki::TestPki;
    use super::*;

    #[test]
    fn server_config_loads_chain_and_key_with_http11_alpn() {
        let pki = TestPki::generate();
        let config = server_config(&pki.leaf_cert, &pki.leaf_key).expect("server config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn client_config_loads_with_extra_ca_file() {
        let pki = TestPki::generate();
        let config = client_config(Some(&pki.ca_cert)).expect("client config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn client_config_loads_without_ca_file() {
        assert!(client_config(None).is_ok());
    }

    #[test]
    fn missing_cert_file_error_names_the_path() {
        let pki = TestPki::generate();
        let missing = pki.dir.path().join("nope.pem");
        let err = server_config(&missing, &pki.leaf_key).unwrap_err();
        assert!(err.contains(&*missing.to_string_lossy()), "{err}");
    }

    #[test]
    fn cert_file_without_certificate_error_names_the_path() {
        let pki = TestPki::generate();
        let empty = pki.dir.write("empty.pem", "not a certificate\n");
        let err = server_config(&empty, &pki.leaf_key).unwrap_err();
        assert!(err.contains(&*empty.to_string_lossy()), "{err}");
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn key_file_without_key_error_names_the_path() {
        let pki = TestPki::generate();
        // A certificate file given as the key: no private key block in it.
        let err = server_config(&pki.leaf_cert, &pki.leaf_cert).unwrap_err();
        assert!(err.contains(&*pki.leaf_cert.to_string_lossy()), "{err}");
        assert!(err.contains("no PEM private key"), "{err}");
    }

    #[test]
    fn key_not_matching_the_certificate_is_refused() {
        let pki = TestPki::generate();
        let other = TestPki::generate();
        let err = server_config(&pki.leaf_cert, &other.leaf_key).unwrap_err();
        assert!(err.contains(&*other.leaf_key.to_string_lossy()), "{err}");
    }

    #[test]
    fn key_error_never_quotes_key_material() {
        let pki = TestPki::generate();
        let key_pem = std::fs::read_to_string(&pki.leaf_key).unwrap();
        let other = TestPki::generate();
        let err = server_config(&other.leaf_cert, &pki.leaf_key).unwrap_err();
        let key_body = key_pem.lines().nth(1).expect("key body line");
        assert!(!err.contains(key_body), "{err}");
        assert!(!err.contains("PRIVATE KEY-----"), "{err}");
    }

    #[test]
    fn missing_ca_file_error_names_the_path() {
        let pki = TestPki::generate();
        let missing = pki.dir.path().join("ca-missing.pem");
        let err = client_config(Some(&missing)).unwrap_err();
        assert!(err.contains(&*missing.to_string_lossy()), "{err}");
    }
}
