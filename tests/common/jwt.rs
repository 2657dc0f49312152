//! Signing JSON Web Tokens in tests (RFC 7519, JWS compact form of RFC 7515
//! section 7.1) with ring, plus the test keys: an embedded RSA key (generated
//! once with `openssl genpkey -algorithm RSA`; ring cannot generate RSA keys)
//! and P-256 / Ed25519 keys generated per run with rcgen.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use serde_json::{json, Value};

/// A 2048-bit RSA test key (PKCS#8 PEM). Test-only: it guards nothing.
pub const RSA_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDTffqLmyqt0Cg+
hawhvf89O19N3gdsb2PF3EB+JRV/IHPrr/JM/uDYNtHMXMBtOLbQ4P33/G1tLQV5
7fF1b0wBO4dwWjM17GAL77ptC6DlJIJ6ISYbovPUA5j3Qaevth4WII6zC1oXldqk
HMOeYjTopvOzsMjJZxHtSr+tu5rhG7qVhwLplINAmNOtYA/q7zLFBQ+lNh+7w2UF
Q88NpG8KFY+ddJwdYc1WmWhJHUZqENmDmIHKKXJm/rYFuD0122X8vvCXNkv9nn1I
TzhWiTF5WlJAKxxgx5CIoeh6Y2Yx+vNkHTwgzxE4ZoDNuw8aQ89/+MAkyEygDKfE
qhhs0V2VAgMBAAECggEACKFGIT68a9nH3p9BQiI44VSEI88I0gOsmFUPu6YDPcwC
9u3Xzw0Ce0gnYPWy83ICQb1Al8cw5ujUpaBQP0jCmvVFJlBD8TIbTDlky9DS6K7H
9ThXj/6jAPaBnitLbqfZi/EZqZQvwbEfeh1jXRnoS0sOvDkdRFyklmB7uFjkrcVL
FCXfSyAkxIum2HeXTalLyis9gHzMMz0023GzQpUpoESWA5iQmvwm6oXLB+zr4fQZ
VmtC/8Ds5XXGZAPgit6UqinH+F8j8QzxW+8MdqAnhLd0WsYnA+wkPlnTgETT+UyG
Me6kiuMxohY0EDyqraGyNrhi0LuAmTVmwaE4wflk8QKBgQD+NndAqnVSoss2uvXx
dHrhQ9OoYxMWw/ZDtMNZ88v5W4yY/19P3fQYa5e0yjYoIMVMEfBDP0+Y/MWq4Pej
eFKi1aPADxYn5W2LbpWC2i8YHbUMrMlEilyo4TsSC0HxTpuCGyWxXDhL2PXcqlwL
/VIrJOAlzDioPVn0M31Z2SiO5QKBgQDU+p+3C+/7fkriH2/D1Qw+OAe4s20J37X0
bXpV0Zo3dyLd2r4881MCFPB3C/A09jqnEsgOxdOWtCHYBWZZATnU3OwgaTHkdxGH
3iNCNnu7y+OVcEwb8NLNL5d7RKr4Yc4zO9HmR+GCK0KU7FRe3Q7CEDo5UINz+ZbG
taxP/hH48QKBgQCH5eAMftOncIXIZVwzTzydjh/pZcV/pxTQjyLbxJwnWsynweVX
EeV65JG+QVeATjyK9RAHMyI/O+oD9q4MArfSevlGJAqJG3pbTqu4vyDr+H2gIAKc
lIcCdR2aANCoyogRnqeg0Bb8XSjaZWw9sJerntQBANLNBbc/+AKr9I5dDQKBgCyP
g3s49C0ab3CAQ1Il8TnTX0o1wEqgk+FgRohOIoYYVyMz8Tmvb16wIt/Fj6yFGCB8
vX7ZxTty1OHtv0xABWmUD5N4bwfuIazbvWTNIXZZYnSR2lq+OFzV6EvSQjNVw17U
1UXpJDWn93ZRPBXdColv+76iKd7KCdHpkPPrpLcBAoGAIRWZKL7E5pj9J56aCX76
OavdIKBxbQ/HfVzuLtHZ60R2l01w4oB3kzO8S+wxCD9usZmJsRhoAUWCJFVwSTqU
BLDLgTukrgOuoLgbTyBhckPPBdYeLUHxIxyXKCjDF/ouLZwZv1PaB2azEf1nEp8g
TufiNvZ6asRD9Cza+kVQ9Fc=
-----END PRIVATE KEY-----
";

/// The public half of [`RSA_PRIVATE_PEM`] (SubjectPublicKeyInfo PEM).
pub const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0336i5sqrdAoPoWsIb3/
PTtfTd4HbG9jxdxAfiUVfyBz66/yTP7g2DbRzFzAbTi20OD99/xtbS0Fee3xdW9M
ATuHcFozNexgC++6bQug5SSCeiEmG6Lz1AOY90Gnr7YeFiCOswtaF5XapBzDnmI0
6Kbzs7DIyWcR7Uq/rbua4Ru6lYcC6ZSDQJjTrWAP6u8yxQUPpTYfu8NlBUPPDaRv
ChWPnXScHWHNVploSR1GahDZg5iByilyZv62Bbg9Ndtl/L7wlzZL/Z59SE84Vokx
eVpSQCscYMeQiKHoemNmMfrzZB08IM8ROGaAzbsPGkPPf/jAJMhMoAynxKoYbNFd
lQIDAQAB
-----END PUBLIC KEY-----
";

/// The modulus of [`RSA_PRIVATE_PEM`], base64url without padding, for a JWK
/// (RFC 7518 section 6.3.1.1).
pub const RSA_MODULUS_B64: &str = "0336i5sqrdAoPoWsIb3_PTtfTd4HbG9jxdxAfiUVfyBz66_yTP7g2DbRzFzAbTi20OD99_xtbS0Fee3xdW9MATuHcFozNexgC--6bQug5SSCeiEmG6Lz1AOY90Gnr7YeFiCOswtaF5XapBzDnmI06Kbzs7DIyWcR7Uq_rbua4Ru6lYcC6ZSDQJjTrWAP6u8yxQUPpTYfu8NlBUPPDaRvChWPnXScHWHNVploSR1GahDZg5iByilyZv62Bbg9Ndtl_L7wlzZL_Z59SE84VokxeVpSQCscYMeQiKHoemNmMfrzZB08IM8ROGaAzbsPGkPPf_jAJMhMoAynxKoYbNFdlQ";

/// The public exponent 65537 as a JWK `e`.
pub const RSA_EXPONENT_B64: &str = "AQAB";

/// The current unix time in seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// base64url without padding (RFC 4648 section 5, as JWS requires in RFC
/// 7515 section 2).
pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = group.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The DER inside the first PEM block of `pem`.
fn pem_der(pem: &str) -> Vec<u8> {
    let item = rustls_pemfile::read_one_from_slice(pem.as_bytes())
        .expect("parse PEM")
        .expect("a PEM block")
        .0;
    match item {
        rustls_pemfile::Item::Pkcs8Key(key) => key.secret_pkcs8_der().to_vec(),
        other => panic!("expected a PKCS#8 key, got {other:?}"),
    }
}

/// How a token is signed: the JWS `alg` and the key.
pub enum Signer {
    /// HMAC-SHA256 with this secret (`HS256`).
    Hs256(Vec<u8>),
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`RS256`).
    Rs256(RsaKeyPair),
    /// ECDSA P-256 with SHA-256, r||s signature (`ES256`, RFC 7518 section 3.4).
    Es256(EcdsaKeyPair),
    /// Ed25519 (`EdDSA`, RFC 8037 section 3.1).
    EdDsa(Ed25519KeyPair),
    /// No signature at all (`alg: none`, RFC 7518 section 3.6).
    Unsigned,
}

impl Signer {
    /// An HS256 signer.
    pub fn hs256(secret: &[u8]) -> Signer {
        Signer::Hs256(secret.to_vec())
    }

    /// An RS256 signer with the embedded RSA test key.
    pub fn rs256() -> Signer {
        let der = pem_der(RSA_PRIVATE_PEM);
        Signer::Rs256(RsaKeyPair::from_pkcs8(&der).expect("load RSA test key"))
    }

    /// The JWS `alg` name.
    pub fn alg(&self) -> &'static str {
        match self {
            Signer::Hs256(_) => "HS256",
            Signer::Rs256(_) => "RS256",
            Signer::Es256(_) => "ES256",
            Signer::EdDsa(_) => "EdDSA",
            Signer::Unsigned => "none",
        }
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Hs256(secret) => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                ring::hmac::sign(&key, input).as_ref().to_vec()
            }
            Signer::Rs256(key) => {
                let mut sig = vec![0u8; key.public().modulus_len()];
                key.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig)
                    .expect("RSA sign");
                sig
            }
            Signer::Es256(key) => key.sign(&rng, input).expect("ECDSA sign").as_ref().to_vec(),
            Signer::EdDsa(key) => key.sign(input).as_ref().to_vec(),
            Signer::Unsigned => Vec::new(),
        }
    }
}

/// A generated asymmetric key: its signer and its public key PEM.
pub struct GeneratedKey {
    /// Signs tokens with the private half.
    pub signer: Signer,
    /// The public half as SubjectPublicKeyInfo PEM, for `jwt.public_key`.
    pub public_pem: String,
}

/// A fresh P-256 key for ES256.
pub fn generate_es256() -> GeneratedKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let signer = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &pair.serialize_der(),
        &SystemRandom::new(),
    )
    .expect("load P-256 key");
    GeneratedKey {
        signer: Signer::Es256(signer),
        public_pem: pair.public_key_pem(),
    }
}

/// A fresh Ed25519 key for EdDSA.
pub fn generate_ed25519() -> GeneratedKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
    let signer = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pair.serialize_der())
        .expect("load Ed25519 key");
    GeneratedKey {
        signer: Signer::EdDsa(signer),
        public_pem: pair.public_key_pem(),
    }
}

/// A compact JWS: `header.claims.signature`. `header` gets `alg` (unless it
/// sets its own) and `typ`.
pub fn sign(signer: &Signer, mut header: Value, claims: &Value) -> String {
    let fields = header.as_object_mut().expect("header is a JSON object");
    fields
        .entry("alg")
        .or_insert_with(|| Value::from(signer.alg()));
    fields.entry("typ").or_insert_with(|| Value::from("JWT"));
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = signer.sign(input.as_bytes());
    format!("{input}.{}", b64url(&signature))
}

/// A token with no `kid` in its header.
pub fn token(signer: &Signer, claims: &Value) -> String {
    sign(signer, json!({}), claims)
}

/// The JWKS (RFC 7517 section 5) holding the embedded RSA key under `kid`.
pub fn rsa_jwks(kid: &str) -> Value {
    json!({
        "keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": RSA_MODULUS_B64,
            "e": RSA_EXPONENT_B64,
        }]
    })
}

/// `s` as a single-line TOML basic string (quotes, backslashes and newlines escaped).
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
