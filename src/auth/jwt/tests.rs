//! Tests of [`JwtVerifier`]: one per behaviour, with keys generated here (ring for EC and
//! Ed25519) or embedded (one RSA key made with `openssl genpkey`, used only by these tests).

use super::*;
use crate::config::{SecretRef, SecretWatcher};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A 2048-bit RSA test key (PKCS#8), generated once with openssl for these tests only.
const RSA_TEST_KEY: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC9W+eezdgkuIra
XQBlbOgc9tAhiwSVIQYf7JIb+lRdHGkiA/RJ+ho1fs/k9763HQu3AdqyJtN794oX
WX7u5L6w7ukc5gsnzQ63H4w5MEJhfJdwcD4CYnbgU30+PuhP5PAnFvlXSHTYOyB1
/mrX2YOTFnqn7flIXiZ6ifJyUSM7jEzTqTSdh046byZmtFy7lH9KJVfxIpZvY3MF
vf24P24quRsTdUqpMU0jNC5xHdDe137pFYCtluErOKAxv7q/5iSAk+nXatpBZ9zg
+LIyJLO4NmsLX5y2LozV/1ei9rWP5TYjLwkR8owbqfC6mk0YPnaV+Z0U4Ff1nGeH
5Sa72G5PAgMBAAECggEAUlMdEXUjxd83evUZAX+GMGV7mkGyxdUcMQ/se95rBCog
aQn4EJt7/or5/m1ZTIoDuFZFitOHeWtm7XzayyjG4OyVi5tV+UFU5vd/wrNBANom
its5klbVoPSbTE8UN/vsDsqVr8VQC1w1Yicws1QdOHr663xyNuy75OWJcvrkivPU
f498dYiBN3XLm55+uz+0+A+ni1h6Hbi//yar9vZeUn7JLLqF6jxt4yXfCr20qmC7
PiMPizoEAGRJL+AMQbImPI5KUlQnQlQmpNwQCzKQNDQpClr+iHC0UQaohiiC7Skn
x+1yJlrohBXHHcFHwywtR17O6IEtzkyQYcVgbu+16QKBgQD8500x07aG527IH0pr
yV30/IZkAsL+UtFPUt4eyY5jJHFiloa5xMnxYMIUNeYm9dmmwDXaxoQyn42H3k9i
pSNrggyjwx61dzOcLxg6ZbcAf5ajeXNNQxlqU35wlZvGMbkFfuxxBpsBCUXa7sED
mhfUvAM6Uj3fzN4LIuOeJddPuQKBgQC/rW4MOOQFmAXRJETO6x698zXFZzuHirQY
ekJ298NkWlPjmf763s2YeUn6opuoGC0hYfS5jelc8j7WEgb5NrH+VlY6Cd7rQFCb
6ukd4XBFR9BvRqp5ntGLT6d3Bs4R/B20/eZPZRPMgiMUAgz2jw5vwZFgPLurQ9fN
5rn8TsDiRwKBgFgrS35TkQ73IGgkgI2TZm5Cm5fCXrjLpq1A9q9FFZ761YzJba7W
LJE6am8hW1u52meIGz5qdywu8+iqWILLj82rSTzOiaY6KIQK5yd0zpgd4yaa8Ne+
zN2EvlAB2I0ASMDhvwyogOGbmf75vdDDqAtCgN2UTn33rnGzeCdqieYBAoGAJa9e
ZI7G3gaulhjwYlI9wBDSMJaEULjHgcx/xs4dn1xXA/eh9wbZGzI1hk50Fg9yyA5v
RBAPopOKISJ4NoU3Z47n8w8/wbbqYk1EOfi5zxU4eLhHChRclGw7u54d49FSseP9
ZPy1cM7hQKzKiatEplpDT82BBEIZasUDKgT9zT8CgYEA3PAjqYX5Ud75wzfmnhOn
n8KL68T/tu+o/iGdKTCq4tvMg2GBhxZ0hHGuHhM4GiHE29Ej006Hz5ThyXTTn56x
B1g7r/EVcVbrac5b4lFrkSBSHCsebhJjEOqVMGRYWUJ9frRSrO5yHoMngHZ53Kl2
90r+cm8dGMpc4DXP+3Qudq0=
-----END PRIVATE KEY-----
";

const HS_SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";
const NOW: i64 = 1_900_000_000;
const CANARY: &str = "canary-jwt-7f3a9c";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A way to sign tokens in tests.
enum Signer {
    Hmac(Vec<u8>),
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl Signer {
    fn hs() -> Signer {
        Signer::Hmac(HS_SECRET.as_bytes().to_vec())
    }

    fn rsa() -> Signer {
        let (_, der) = keys::pem_blocks(RSA_TEST_KEY).unwrap().remove(0);
        Signer::Rsa(RsaKeyPair::from_pkcs8(&der).unwrap())
    }

    fn ec() -> Signer {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        Signer::Ec(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
    }

    fn ed() -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Signer::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    fn alg(&self) -> &'static str {
        match self {
            Signer::Hmac(_) => "HS256",
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
            Signer::Ed(_) => "EdDSA",
        }
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Hmac(secret) => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
                hmac::sign(&key, input).as_ref().to_vec()
            }
            Signer::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig)
                    .unwrap();
                sig
            }
            Signer::Ec(pair) => pair.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::Ed(pair) => pair.sign(input).as_ref().to_vec(),
        }
    }

    /// The public key as SPKI PEM.
    fn public_pem(&self) -> String {
        match self {
            Signer::Hmac(_) => unreachable!("HMAC has no public key"),
            Signer::Rsa(_) => {
                "-----BEGIN PUBLIC KEY-----\n".to_string()
                    + &STANDARD_B64.encode(self.rsa_spki())
                    + "\n-----END PUBLIC KEY-----\n"
            }
            Signer::Ec(pair) => spki_pem(EC_SPKI_PREFIX, pair.public_key().as_ref()),
            Signer::Ed(pair) => spki_pem(ED_SPKI_PREFIX, pair.public_key().as_ref()),
        }
    }

    fn rsa_spki(&self) -> Vec<u8> {
        let Signer::Rsa(pair) = self else {
            unreachable!()
        };
        // SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING { RSAPublicKey } }
        let pkcs1 = pair.public().as_ref();
        let mut bits = vec![0u8];
        bits.extend_from_slice(pkcs1);
        let mut body = vec![
            0x30, 0x0D, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01, 0x05,
            0x00,
        ];
        body.extend(der_element(0x03, &bits));
        der_element(0x30, &body)
    }

    /// The public key as a JWK with `kid`.
    fn jwk(&self, kid: &str) -> Value {
        match self {
            Signer::Hmac(_) => unreachable!("HMAC keys never go in a JWKS"),
            Signer::Rsa(pair) => {
                let parts: signature::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
                json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                       "n": b64(&parts.n), "e": b64(&parts.e)})
            }
            Signer::Ec(pair) => {
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": kid,
                       "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
            Signer::Ed(pair) => json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                                       "x": b64(pair.public_key().as_ref())}),
        }
    }

    fn token(&self, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    /// A token with this signer's algorithm, optional `kid` and the given claims.
    fn token_with(&self, kid: Option<&str>, claims: Value) -> String {
        let mut header = json!({"alg": self.alg(), "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = kid.into();
        }
        self.token(header, claims)
    }
}

use base64::engine::general_purpose::STANDARD as STANDARD_B64;

/// DER prefixes of SubjectPublicKeyInfo for P-256 and Ed25519 keys (RFC 5480, RFC 8410).
const EC_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08, 0x2A,
    0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const ED_SPKI_PREFIX: &[u8] = &[
    0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00,
];

fn spki_pem(prefix: &[u8], key: &[u8]) -> String {
    let der = [prefix, key].concat();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD_B64.encode(der)
    )
}

fn der_element(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(contents);
    out
}

fn good_claims() -> Value {
    json!({"sub": "alice", "team": "payments", "exp": NOW + 3600, "iat": NOW,
           "iss": "https://idp.test", "aud": "gateway", "scope": "read write",
           "cf_key": "key_abc"})
}

fn settings() -> JwtConfig {
    JwtConfig {
        issuer: "https://idp.test".to_string(),
        audience: "gateway".to_string(),
        ..JwtConfig::default()
    }
}

fn test_timing() -> JwksTiming {
    JwksTiming {
        min_refresh: Duration::from_millis(100),
        default_ttl: Duration::from_secs(300),
        max_ttl: Duration::from_secs(300),
        io_timeout: Duration::from_secs(2),
        startup_wait: Duration::from_secs(3),
    }
}

fn build(cfg: &JwtConfig) -> Result<Arc<JwtVerifier>, String> {
    build_with(cfg, test_timing())
}

fn build_with(cfg: &JwtConfig, timing: JwksTiming) -> Result<Arc<JwtVerifier>, String> {
    let watcher = SecretWatcher::with_poll_interval(Duration::from_secs(60));
    JwtVerifier::with_jwks_timing(cfg, &Config::default(), &watcher, timing)
}

fn verifier_for_pem(signer: &Signer) -> Arc<JwtVerifier> {
    build(&JwtConfig {
        public_key: signer.public_pem(),
        ..settings()
    })
    .unwrap()
}

fn hs_verifier() -> Arc<JwtVerifier> {
    build(&JwtConfig {
        hs_secret: Some(SecretRef::parse(HS_SECRET).unwrap()),
        ..settings()
    })
    .unwrap()
}

/// A JWKS endpoint on 127.0.0.1 whose document can be changed, counting its fetches.
struct JwksServer {
    url: String,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    fn start(keys: Vec<Value>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let body = Arc::new(Mutex::new(json!({ "keys": keys }).to_string()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (thread_body, thread_hits) = (Arc::clone(&body), Arc::clone(&hits));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&byte[..n]),
                    }
                }
                thread_hits.fetch_add(1, Ordering::SeqCst);
                let body = thread_body.lock().unwrap().clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: public, max-age=300\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            }
        });
        JwksServer { url, body, hits }
    }

    fn set_keys(&self, keys: Vec<Value>) {
        *self.body.lock().unwrap() = json!({ "keys": keys }).to_string();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn verifier(&self) -> Arc<JwtVerifier> {
        build(&JwtConfig {
            jwks_url: self.url.clone(),
            ..settings()
        })
        .unwrap()
    }
}

/// Retries `check` until it holds or 5 s pass.
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

// --- good tokens, one per algorithm -----------------------------------------------------------

#[test]
fn hs256_token_is_accepted_and_claims_are_mapped() {
    let token = Signer::hs().token_with(None, good_claims());
    let claims = hs_verifier().verify(&token, NOW).unwrap();
    assert_eq!(claims.subject, "alice");
    assert_eq!(claims.team, "payments");
    assert_eq!(claims.scopes, ["read", "write"]);
    assert_eq!(claims.key_id.as_deref(), Some("key_abc"));
    assert_eq!(claims.raw["iss"], "https://idp.test");
}

#[test]
fn rs256_token_is_accepted_with_pem_public_key() {
    let signer = Signer::rsa();
    let token = signer.token_with(None, good_claims());
    assert!(verifier_for_pem(&signer).verify(&token, NOW).is_ok());
}

#[test]
fn es256_token_is_accepted_with_pem_public_key() {
    let signer = Signer::ec();
    let token = signer.token_with(None, good_claims());
    assert!(verifier_for_pem(&signer).verify(&token, NOW).is_ok());
}

#[test]
fn eddsa_token_is_accepted_with_pem_public_key() {
    let signer = Signer::ed();
    let token = signer.token_with(None, good_claims());
    assert!(verifier_for_pem(&signer).verify(&token, NOW).is_ok());
}

#[test]
fn pem_key_matches_a_token_with_any_kid() {
    let signer = Signer::ec();
    let token = signer.token_with(Some("whatever"), good_claims());
    assert!(verifier_for_pem(&signer).verify(&token, NOW).is_ok());
}

#[test]
fn public_key_file_is_read_relative_to_the_config_dir() {
    let dir = std::env::temp_dir().join(format!("cf-jwt-pem-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let signer = Signer::ed();
    std::fs::write(dir.join("keys/idp.pem"), signer.public_pem()).unwrap();
    let config = Config {
        base_dir: dir.clone(),
        ..Config::default()
    };
    let cfg = JwtConfig {
        public_key: "keys/idp.pem".to_string(),
        ..settings()
    };
    let watcher = SecretWatcher::with_poll_interval(Duration::from_secs(60));
    let verifier = JwtVerifier::new(&cfg, &config, &watcher).unwrap();
    let token = signer.token_with(None, good_claims());
    assert!(verifier.verify(&token, NOW).is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_public_key_file_error_names_the_setting() {
    let err = build(&JwtConfig {
        public_key: "/nonexistent/cf/idp.pem".to_string(),
        ..settings()
    })
    .unwrap_err();
    assert!(
        err.starts_with("jwt.public_key: cannot read /nonexistent/cf/idp.pem"),
        "{err}"
    );
}

#[test]
fn private_key_as_public_key_is_refused_at_build() {
    let err = build(&JwtConfig {
        public_key: RSA_TEST_KEY.to_string(),
        ..settings()
    })
    .unwrap_err();
    assert!(err.contains("never a private one"), "{err}");
}

#[test]
fn hs_secret_shorter_than_32_bytes_is_refused_at_build() {
    let err = build(&JwtConfig {
        hs_secret: Some(SecretRef::parse("too-short").unwrap()),
        ..settings()
    })
    .unwrap_err();
    assert!(err.contains("at least 32 bytes"), "{err}");
    assert!(!err.contains("too-short"), "{err}");
}

#[test]
fn settings_without_any_key_are_refused_at_build() {
    assert!(build(&settings()).is_err());
}

// --- time claims ------------------------------------------------------------------------------

fn hs_token_with(changes: Value) -> String {
    let mut claims = good_claims();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    Signer::hs().token_with(None, claims)
}

#[test]
fn expired_token_is_rejected() {
    let token = hs_token_with(json!({"exp": NOW - 31}));
    assert_eq!(hs_verifier().verify(&token, NOW), Err(JwtError::Expired));
}

#[test]
fn token_expired_within_leeway_is_accepted() {
    let token = hs_token_with(json!({"exp": NOW - 29}));
    assert!(hs_verifier().verify(&token, NOW).is_ok());
}

#[test]
fn token_without_exp_is_rejected() {
    let token = hs_token_with(json!({"exp": null}));
    assert_eq!(
        hs_verifier().verify(&token, NOW),
        Err(JwtError::MissingExpiry)
    );
}

#[test]
fn exp_that_is_not_a_number_is_rejected() {
    let token = hs_token_with(json!({"exp": "99999999999"}));
    assert!(matches!(
        hs_verifier().verify(&token, NOW),
        Err(JwtError::InvalidClaim(_))
    ));
}

#[test]
fn fractional_exp_is_accepted() {
    let token = hs_token_with(json!({"exp": (NOW + 10) as f64 + 0.5}));
    assert!(hs_verifier().verify(&token, NOW).is_ok());
}

#[test]
fn not_yet_valid_token_is_rejected() {
    let token = hs_token_with(json!({"nbf": NOW + 31}));
    assert_eq!(
        hs_verifier().verify(&token, NOW),
        Err(JwtError::NotYetValid)
    );
}

#[test]
fn nbf_within_leeway_is_accepted() {
    let token = hs_token_with(json!({"nbf": NOW + 29}));
    assert!(hs_verifier().verify(&token, NOW).is_ok());
}

#[test]
fn nbf_that_is_not_a_number_is_rejected() {
    let token = hs_token_with(json!({"nbf": "99999999999"}));
    assert!(matches!(
        hs_verifier().verify(&token, NOW),
        Err(JwtError::InvalidClaim(_))
    ));
}

// --- issuer and audience ----------------------------------------------------------------------

#[test]
fn wrong_issuer_is_rejected() {
    let token = hs_token_with(json!({"iss": "https://evil.test"}));
    assert_eq!(
        hs_verifier().verify(&token, NOW),
        Err(JwtError::WrongIssuer)
    );
}

#[test]
fn missing_issuer_is_rejected_when_configured() {
    let token = hs_token_with(json!({"iss": null}));
    assert_eq!(
        hs_verifier().verify(&token, NOW),
        Err(JwtError::WrongIssuer)
    );
}

#[test]
fn wrong_audience_is_rejected() {
    let token = hs_token_with(json!({"aud": "someone-else"}));
    assert_eq!(
        hs_verifier().verify(&token, NOW),
        Err(JwtError::WrongAudience)
    );
}

#[test]
fn audience_in_an_array_is_accepted() {
    let token = hs_token_with(json!({"aud": ["other", "gateway"]}));
    assert!(hs_verifier().verify(&token, NOW).is_ok());
}

#[test]
fn issuer_and_audience_are_not_checked_when_not_configured() {
    let verifier = build(&JwtConfig {
        hs_secret: Some(SecretRef::parse(HS_SECRET).unwrap()),
        ..JwtConfig::default()
    })
    .unwrap();
    let token = hs_token_with(json!({"iss": "anyone", "aud": "anything"}));
    assert!(verifier.verify(&token, NOW).is_ok());
}

// --- claims mapping ---------------------------------------------------------------------------

#[test]
fn scopes_array_and_scp_claims_are_merged_without_duplicates() {
    let token = hs_token_with(json!({"scope": "read", "scopes": ["read", "admin"], "scp": "ops"}));
    let claims = hs_verifier().verify(&token, NOW).unwrap();
    assert_eq!(claims.scopes, ["read", "admin", "ops"]);
}

#[test]
fn subject_of_wrong_type_is_rejected() {
    let token = hs_token_with(json!({"sub": 42}));
    assert!(matches!(
        hs_verifier().verify(&token, NOW),
        Err(JwtError::InvalidClaim(_))
    ));
}

#[test]
fn absent_optional_claims_map_to_empty_values() {
    let token = hs_token_with(json!({"sub": null, "team": null, "scope": null, "cf_key": null}));
    let claims = hs_verifier().verify(&token, NOW).unwrap();
    assert_eq!((claims.subject.as_str(), claims.team.as_str()), ("", ""));
    assert!(claims.scopes.is_empty());
    assert_eq!(claims.key_id, None);
}

// --- signatures and algorithms ----------------------------------------------------------------

#[test]
fn token_signed_by_another_key_is_rejected() {
    let token = Signer::ec().token_with(None, good_claims());
    let verifier = verifier_for_pem(&Signer::ec());
    assert_eq!(verifier.verify(&token, NOW), Err(JwtError::BadSignature));
}

#[test]
fn hs256_token_signed_with_another_secret_is_rejected() {
    let token = Signer::Hmac(b"another-secret-of-at-least-32-bytes!".to_vec())
        .token_with(None, good_claims());
    assert_eq!(
        hs_verifier().verify(&token, NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn tampered_payload_is_rejected() {
    let token = Signer::hs().token_with(None, good_claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = b64(json!({"sub": "admin", "exp": NOW + 3600})
        .to_string()
        .as_bytes());
    parts[1] = &forged;
    assert_eq!(
        hs_verifier().verify(&parts.join("."), NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn alg_none_is_always_rejected() {
    let verifier = hs_verifier();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": alg}).to_string().as_bytes());
        let payload = b64(good_claims().to_string().as_bytes());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert!(verifier.verify(&token, NOW).is_err(), "{alg}");
        }
    }
}

#[test]
fn unsupported_algorithm_is_rejected() {
    let header = json!({"alg": "HS512"});
    let token = Signer::hs().token(header, good_claims());
    assert_eq!(
        hs_verifier().verify(&token, NOW),
        Err(JwtError::UnsupportedAlgorithm)
    );
}

#[test]
fn hs256_token_keyed_with_the_rsa_public_key_is_rejected() {
    // The classic confusion: the attacker HMACs with the (public) PEM bytes and says HS256.
    let rsa = Signer::rsa();
    let pem = rsa.public_pem();
    let forged = Signer::Hmac(pem.clone().into_bytes()).token_with(None, good_claims());
    assert_eq!(
        verifier_for_pem(&rsa).verify(&forged, NOW),
        Err(JwtError::NoKeyForAlgorithm)
    );
    // Even with an HMAC secret configured too, only that secret keys HS256.
    let both = build(&JwtConfig {
        public_key: pem,
        hs_secret: Some(SecretRef::parse(HS_SECRET).unwrap()),
        ..settings()
    })
    .unwrap();
    assert_eq!(both.verify(&forged, NOW), Err(JwtError::BadSignature));
}

#[test]
fn rs256_header_with_an_hmac_signature_is_rejected() {
    let rsa = Signer::rsa();
    let header = json!({"alg": "RS256"});
    let forged = Signer::Hmac(rsa.public_pem().into_bytes()).token(header, good_claims());
    assert_eq!(
        verifier_for_pem(&rsa).verify(&forged, NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn es256_token_is_not_checked_against_an_rsa_key() {
    let token = Signer::ec().token_with(None, good_claims());
    assert_eq!(
        verifier_for_pem(&Signer::rsa()).verify(&token, NOW),
        Err(JwtError::NoKeyForAlgorithm)
    );
}

#[test]
fn crit_header_is_rejected() {
    let header = json!({"alg": "HS256", "crit": ["exp"]});
    let token = Signer::hs().token(header, good_claims());
    assert_eq!(
        hs_verifier().verify(&token, NOW),
        Err(JwtError::UnsupportedHeader)
    );
}

#[test]
fn malformed_tokens_are_rejected() {
    let good = Signer::hs().token_with(None, good_claims());
    let verifier = hs_verifier();
    let padded = format!("{good}=");
    let four_parts = format!("{good}.x");
    let not_json = format!("{}.{}.", b64(b"not json"), b64(b"{}"));
    let array_payload = Signer::hs().token(json!({"alg": "HS256"}), json!([1, 2]));
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    for token in [
        "",
        "abc",
        "a.b",
        &padded,
        &four_parts,
        &not_json,
        &array_payload,
        &huge,
    ] {
        assert_eq!(
            verifier.verify(token, NOW),
            Err(JwtError::Malformed),
            "{token:.40}"
        );
    }
}

// --- JWKS -------------------------------------------------------------------------------------

#[test]
fn jwks_from_a_local_server_verifies_each_key_type() {
    let (rsa, ec, ed) = (Signer::rsa(), Signer::ec(), Signer::ed());
    let server = JwksServer::start(vec![rsa.jwk("r1"), ec.jwk("e1"), ed.jwk("d1")]);
    let verifier = server.verifier();
    assert_eq!(server.hits(), 1);
    for (signer, kid) in [(&rsa, "r1"), (&ec, "e1"), (&ed, "d1")] {
        let token = signer.token_with(Some(kid), good_claims());
        assert!(verifier.verify(&token, NOW).is_ok(), "{kid}");
    }
}

#[test]
fn jwks_key_is_chosen_by_kid() {
    let (a, b) = (Signer::ec(), Signer::ec());
    let server = JwksServer::start(vec![a.jwk("a"), b.jwk("b")]);
    let verifier = server.verifier();
    let token_b = b.token_with(Some("b"), good_claims());
    assert!(verifier.verify(&token_b, NOW).is_ok());
    let mislabelled = b.token_with(Some("a"), good_claims());
    assert_eq!(
        verifier.verify(&mislabelled, NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn unknown_kid_triggers_a_refresh_and_then_succeeds() {
    let (old, new) = (Signer::ec(), Signer::ec());
    let server = JwksServer::start(vec![old.jwk("old")]);
    let verifier = server.verifier();
    let token = new.token_with(Some("new"), good_claims());
    assert_eq!(verifier.verify(&token, NOW), Err(JwtError::UnknownKeyId));

    // The IdP rotates; max-age is 300 s, so only the unknown kid can cause a refetch.
    server.set_keys(vec![old.jwk("old"), new.jwk("new")]);
    assert!(eventually(|| verifier.verify(&token, NOW).is_ok()));
    assert!(server.hits() >= 2);
}

#[test]
fn unknown_kid_refreshes_at_most_once_per_interval() {
    let signer = Signer::ec();
    let server = JwksServer::start(vec![]);
    let timing = JwksTiming {
        min_refresh: Duration::from_secs(10),
        ..test_timing()
    };
    let verifier = build_with(
        &JwtConfig {
            jwks_url: server.url.clone(),
            ..settings()
        },
        timing,
    )
    .unwrap();
    assert_eq!(server.hits(), 1);
    for i in 0..500 {
        let token = signer.token_with(Some(&format!("made-up-{i}")), good_claims());
        assert_eq!(verifier.verify(&token, NOW), Err(JwtError::UnknownKeyId));
    }
    // One refetch for the whole flood, none more within the interval.
    assert!(eventually(|| server.hits() == 2));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.hits(), 2);
}

#[test]
fn unreachable_jwks_does_not_fail_the_build_and_rejects_tokens() {
    // Bind then drop a listener so the port is (very likely) closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let verifier = build(&JwtConfig {
        jwks_url: format!("http://127.0.0.1:{port}/jwks"),
        ..settings()
    })
    .unwrap();
    let token = Signer::ec().token_with(Some("k"), good_claims());
    assert_eq!(verifier.verify(&token, NOW), Err(JwtError::UnknownKeyId));
}

#[test]
fn hmac_key_in_a_jwks_is_never_used() {
    let server = JwksServer::start(vec![
        json!({"kty": "oct", "kid": "h", "k": b64(HS_SECRET.as_bytes())}),
    ]);
    let verifier = server.verifier();
    let token = Signer::hs().token_with(Some("h"), good_claims());
    assert_eq!(
        verifier.verify(&token, NOW),
        Err(JwtError::NoKeyForAlgorithm)
    );
}

// --- nothing leaks --------------------------------------------------------------------------

#[test]
fn errors_and_debug_output_never_contain_token_or_secret() {
    let verifier = hs_verifier();
    let shown = format!("{verifier:?}");
    assert!(!shown.contains(HS_SECRET), "{shown}");
    let cases = [
        json!({"sub": CANARY, "exp": NOW - 100}),
        json!({"sub": CANARY, "exp": CANARY}),
        json!({"sub": CANARY, "iss": CANARY, "exp": NOW + 100}),
        json!({"sub": CANARY, "scope": 7, "exp": NOW + 100, "iss": "https://idp.test", "aud": "gateway"}),
    ];
    for claims in cases {
        let token = Signer::hs().token_with(Some(CANARY), claims);
        let err = verifier.verify(&token, NOW).unwrap_err();
        for text in [
            err.to_string(),
            format!("{err:?}"),
            err.reason().to_string(),
        ] {
            assert!(!text.contains(CANARY) && !text.contains(&token), "{text}");
        }
        assert_eq!(err.status(), 401);
    }
}

#[test]
fn verifier_can_be_shared_across_worker_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<JwtVerifier>();
    let verifier = hs_verifier();
    let token = Signer::hs().token_with(None, good_claims());
    let worker = {
        let verifier = Arc::clone(&verifier);
        let token = token.clone();
        std::thread::spawn(move || verifier.verify(&token, NOW).is_ok())
    };
    assert!(worker.join().unwrap());
    assert!(verifier.verify(&token, NOW).is_ok());
}
