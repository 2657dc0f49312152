//! TLS toward the PostgreSQL store: what each libpq `sslmode` means here, and the rustls
//! configuration (ring provider, like the rest of the gateway) that carries it out.
//!
//! | `sslmode`          | encrypted                         | server certificate checked       |
//! |--------------------|-----------------------------------|----------------------------------|
//! | `disable`          | never                             | -                                |
//! | `prefer` (default) | if the server offers TLS          | no (chain, with `sslrootcert`)   |
//! | `require`          | always, or no connection          | no (chain, with `sslrootcert`)   |
//! | `verify-ca`        | always, or no connection          | chain to a trusted root          |
//! | `verify-full`      | always, or no connection          | chain, and the host name         |
//!
//! `prefer` differs from libpq in one way: libpq retries in plaintext when the TLS handshake
//! fails; we do not. Plaintext happens only when the server itself declines TLS, so a
//! certificate problem is reported instead of being papered over by a quieter downgrade.
//!
//! `require` keeps libpq's meaning: encrypted against a passive listener, but the server is
//! not authenticated, so an active man in the middle can still present its own certificate.
//! We accept that rather than silently upgrading `require`, because URLs written for libpq
//! must keep working; fleets crossing networks should use `verify-full`. As in libpq, naming
//! an `sslrootcert` makes `prefer` and `require` check the chain too (as `verify-ca` does).
//!
//! Trusted roots come from `sslrootcert=/path/ca.pem` (only the CAs in that file, as in
//! libpq), else from the webpki (Mozilla) roots; `sslrootcert=system` names those explicitly.
//! Client certificates (`sslcert`, `sslkey`) are not supported.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::error::{PgError, PgErrorKind};

/// The ALPN protocol PostgreSQL 17 expects (and requires for `sslnegotiation=direct`); older
/// servers ignore it.
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Largest `sslrootcert` file read, in bytes: a CA bundle is far smaller, and the path comes
/// from configuration that may point anywhere.
const MAX_ROOTCERT_BYTES: u64 = 1024 * 1024;

/// libpq's `sslmode`: whether the store connection uses TLS and what it checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// Plaintext.
    Disable,
    /// TLS when the server offers it; plaintext when it declines.
    Prefer,
    /// TLS or no connection; the certificate is not checked (see the module documentation).
    Require,
    /// TLS with the certificate chained to a trusted root; any host name.
    VerifyCa,
    /// TLS with the certificate chained to a trusted root and valid for the host name.
    VerifyFull,
}

impl SslMode {
    /// The mode named `value`, or `None` for anything else (including libpq's `allow`, which
    /// tries plaintext first and has no use for a store that may carry secrets).
    pub(crate) fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// What the client negotiates with the server: the verify modes insist on TLS like
    /// `require`; what they check is the certificate verifier's business.
    pub(crate) fn negotiation(self) -> ::postgres::config::SslMode {
        use ::postgres::config::SslMode as Negotiation;
        match self {
            SslMode::Disable => Negotiation::Disable,
            SslMode::Prefer => Negotiation::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Negotiation::Require,
        }
    }
}

/// What is checked of the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Only that the server holds the key of the certificate it presents (the handshake
    /// signature): encryption without authentication.
    KeyPossession,
    /// Also that the certificate chains to a trusted root.
    Chain,
    /// Also that the certificate is valid for the host name.
    ChainAndName,
}

impl Check {
    fn for_mode(mode: SslMode, rootcert_given: bool) -> Check {
        match mode {
            SslMode::VerifyFull => Check::ChainAndName,
            SslMode::VerifyCa => Check::Chain,
            SslMode::Disable | SslMode::Prefer | SslMode::Require if rootcert_given => Check::Chain,
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Check::KeyPossession,
        }
    }
}

/// The rustls configuration for a store connection in `mode`, trusting the CAs of
/// `rootcert` (a PEM file, or `system` for the webpki roots) or, without it, the webpki roots.
/// Errors name the file and what is wrong with it, never its contents.
pub(crate) fn client_config(
    mode: SslMode,
    rootcert: Option<&str>,
) -> Result<ClientConfig, PgError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match rootcert {
        None | Some("system") => {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            roots
        }
        Some(path) => load_roots(Path::new(path))?,
    };
    let verifier = StoreCertVerifier {
        check: Check::for_mode(mode, rootcert.is_some()),
        roots: Arc::new(roots),
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(config)
}

/// Every certificate of the PEM file at `path`; at least one is required.
fn load_roots(path: &Path) -> Result<RootCertStore, PgError> {
    let named = |what: &str| config_error(format!("sslrootcert {}: {what}", path.display()));
    let file = File::open(path).map_err(|e| named(&e.to_string()))?;
    let mut pem = Vec::new();
    file.take(MAX_ROOTCERT_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| named(&e.to_string()))?;
    if pem.len() as u64 > MAX_ROOTCERT_BYTES {
        return Err(named(&format!(
            "larger than {MAX_ROOTCERT_BYTES} bytes; a CA bundle is far smaller"
        )));
    }
    let certs = rustls_pemfile::certs(&mut BufReader::new(pem.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| named("not a PEM file"))?;
    if certs.is_empty() {
        return Err(named("holds no CERTIFICATE block"));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| named(&format!("unusable CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn config_error(message: String) -> PgError {
    PgError::new(PgErrorKind::Config, message)
}

/// Checks the server's certificate as much as the `sslmode` asks, and the handshake
/// signatures always (so even unauthenticated TLS is bound to the presented key).
#[derive(Debug)]
struct StoreCertVerifier {
    check: Check,
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for StoreCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.check == Check::KeyPossession {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.check == Check::ChainAndName {
            verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_pki::{ScratchDir, TestPki};

    fn verifier(check: Check, pki: &TestPki) -> StoreCertVerifier {
        StoreCertVerifier {
            check,
            roots: Arc::new(load_roots(&pki.ca_cert).unwrap()),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    fn leaf(pki: &TestPki) -> CertificateDer<'static> {
        let pem = std::fs::read(&pki.leaf_cert).unwrap();
        let first = rustls_pemfile::certs(&mut pem.as_slice()).next();
        first.unwrap().unwrap()
    }

    fn name(text: &str) -> ServerName<'static> {
        ServerName::try_from(text.to_owned()).unwrap()
    }

    #[test]
    fn each_mode_checks_what_its_name_says() {
        assert_eq!(
            Check::for_mode(SslMode::Prefer, false),
            Check::KeyPossession
        );
        assert_eq!(
            Check::for_mode(SslMode::Require, false),
            Check::KeyPossession
        );
        assert_eq!(Check::for_mode(SslMode::Require, true), Check::Chain);
        assert_eq!(Check::for_mode(SslMode::VerifyCa, false), Check::Chain);
        assert_eq!(
            Check::for_mode(SslMode::VerifyFull, true),
            Check::ChainAndName
        );
        assert_eq!(SslMode::parse("verify-full"), Some(SslMode::VerifyFull));
        assert_eq!(SslMode::parse("allow"), None);
        assert_eq!(SslMode::parse("REQUIRE"), None);
    }

    #[test]
    fn verify_ca_ignores_the_name_and_verify_full_does_not() {
        let pki = TestPki::generate();
        let cert = leaf(&pki);
        let now = UnixTime::now();
        let check = |check: Check, host: &str| {
            verifier(check, &pki).verify_server_cert(&cert, &[], &name(host), &[], now)
        };
        assert!(check(Check::ChainAndName, "localhost").is_ok());
        assert!(check(Check::ChainAndName, "127.0.0.1").is_ok());
        let err = check(Check::ChainAndName, "db.example").unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
        assert!(check(Check::Chain, "db.example").is_ok());
    }

    #[test]
    fn a_certificate_from_another_ca_fails_the_chain_check() {
        let trusted = TestPki::generate();
        let other = TestPki::generate();
        let cert = leaf(&other);
        let now = UnixTime::now();
        for check in [Check::Chain, Check::ChainAndName] {
            let err = verifier(check, &trusted)
                .verify_server_cert(&cert, &[], &name("localhost"), &[], now)
                .unwrap_err();
            // Both test CAs have the same (empty) name, so webpki finds the issuer by name
            // and rejects the signature; a CA with another name gives UnknownIssuer.
            assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
        }
        // Unauthenticated modes take any certificate; only the handshake signature binds it.
        assert!(verifier(Check::KeyPossession, &trusted)
            .verify_server_cert(&cert, &[], &name("localhost"), &[], now)
            .is_ok());
    }

    #[test]
    fn a_bad_rootcert_file_is_named_without_its_contents() {
        let dir = ScratchDir::new("pg-roots");
        let missing = dir.path().join("missing.pem");
        let err = load_roots(&missing).unwrap_err();
        assert_eq!(err.kind(), PgErrorKind::Config);
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let key_only = dir.write(
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n",
        );
        let err = load_roots(&key_only).unwrap_err();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");

        let huge = dir.write("huge.pem", &"#".repeat(MAX_ROOTCERT_BYTES as usize + 1));
        let err = load_roots(&huge).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");

        let err = client_config(SslMode::VerifyFull, Some(path_str(&missing))).unwrap_err();
        assert!(err.to_string().contains("sslrootcert"), "{err}");
        assert!(client_config(SslMode::VerifyFull, Some("system")).is_ok());
    }

    fn path_str(path: &Path) -> &str {
        path.to_str().unwrap()
    }
}
