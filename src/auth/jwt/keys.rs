//! Public keys for JWS signature checks, each bound to exactly one algorithm.
//!
//! A key's type decides the one algorithm it verifies (RFC 8725 §3.1: never let the token's
//! `alg` pick how a key is used). That is what makes the HS/RS confusion attack impossible:
//! an RSA public key is only ever used for RS256, never as an HMAC secret.
//!
//! Keys come from PEM text (`PUBLIC KEY`, `RSA PUBLIC KEY` or `CERTIFICATE` blocks) or from
//! JWKs (RFC 7517, RFC 7518 §6, RFC 8037 §2). The cryptography is ring's; this file only
//! takes the key bytes out of their containers.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::signature::{self, UnparsedPublicKey};
use serde::Deserialize;

/// The JWS algorithms accepted (RFC 7518 §3.1, RFC 8037 §3.1). `none` is deliberately not one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC with SHA-256, keyed by the route's `hs_secret`.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, RSA keys of 2048 to 8192 bits.
    Rs256,
    /// ECDSA on P-256 with SHA-256, signature as `r || s` (RFC 7518 §3.4).
    Es256,
    /// Ed25519 (RFC 8037 §3.1).
    EdDsa,
}

impl Algorithm {
    /// The algorithm named by a JOSE header's `alg`; `None` for everything else, `none`
    /// included. Names are case-sensitive (RFC 7515 §4.1.1).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "HS256" => Some(Algorithm::Hs256),
            "RS256" => Some(Algorithm::Rs256),
            "ES256" => Some(Algorithm::Es256),
            "EdDSA" => Some(Algorithm::EdDsa),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
        }
    }
}

/// RSA moduli ring accepts for RS256 verification (RFC 7518 §3.3 asks for 2048 bits or more).
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

/// The raw key bytes, in the form ring verifies with.
#[derive(Clone, PartialEq, Eq)]
enum Material {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed P-256 point, `04 || x || y`.
    EcP256 { point: Vec<u8> },
    /// The 32-byte Ed25519 public key.
    Ed25519 { public: Vec<u8> },
}

/// A public key and, through its type, the one algorithm it verifies.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The JWK `kid`; `None` for PEM keys (they match any `kid`).
    pub kid: Option<String>,
    material: Material,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.algorithm().name())
            .finish()
    }
}

impl PublicKey {
    /// The only algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        match self.material {
            Material::Rsa { .. } => Algorithm::Rs256,
            Material::EcP256 { .. } => Algorithm::Es256,
            Material::Ed25519 { .. } => Algorithm::EdDsa,
        }
    }

    /// Whether `signature` over `message` was made with this key's private half.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            Material::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            Material::EcP256 { point } => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            Material::Ed25519 { public } => UnparsedPublicKey::new(&signature::ED25519, public)
                .verify(message, signature)
                .is_ok(),
        }
    }

    fn rsa(kid: Option<String>, n: &[u8], e: &[u8]) -> Result<PublicKey, String> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = bit_length(n);
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(format!(
                "RSA key of {bits} bits; {RSA_MIN_BITS} to {RSA_MAX_BITS} bits are accepted"
            ));
        }
        if e.is_empty() || e.len() > 4 {
            return Err("RSA key has an unusable public exponent".to_string());
        }
        Ok(PublicKey {
            kid,
            material: Material::Rsa {
                n: n.to_vec(),
                e: e.to_vec(),
            },
        })
    }

    fn ec_p256(kid: Option<String>, point: Vec<u8>) -> Result<PublicKey, String> {
        // Only the uncompressed form is defined for JWKs and used by SPKI in practice.
        if point.len() != 65 || point[0] != 0x04 {
            return Err("P-256 key is not an uncompressed point".to_string());
        }
        Ok(PublicKey {
            kid,
            material: Material::EcP256 { point },
        })
    }

    fn ed25519(kid: Option<String>, public: Vec<u8>) -> Result<PublicKey, String> {
        if public.len() != 32 {
            return Err("Ed25519 key is not 32 bytes".to_string());
        }
        Ok(PublicKey {
            kid,
            material: Material::Ed25519 { public },
        })
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn bit_length(unsigned: &[u8]) -> usize {
    match unsigned.first() {
        None => 0,
        Some(&top) => (unsigned.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

// ---------------------------------------------------------------------------------------------
// PEM (RFC 7468) and DER

/// Every public key in PEM text: `PUBLIC KEY` (SPKI, RFC 5280 §4.1.2.7), `RSA PUBLIC KEY`
/// (PKCS#1, RFC 8017 §A.1.1) and `CERTIFICATE` (the certificate's key). A private key is an
/// error: the gateway never needs one, and holding it would widen what a leak exposes.
pub fn keys_from_pem(text: &str) -> Result<Vec<PublicKey>, String> {
    let mut keys = Vec::new();
    for (label, der) in pem_blocks(text)? {
        let key = match label.as_str() {
            "PUBLIC KEY" => from_spki(&der),
            "RSA PUBLIC KEY" => from_pkcs1_rsa(&der),
            "CERTIFICATE" => spki_of_certificate(&der).and_then(from_spki),
            other if other.contains("PRIVATE KEY") => {
                return Err(format!(
                    "found a {other} block; give the public key, never a private one"
                ))
            }
            other => return Err(format!("unsupported PEM block {other:?}")),
        };
        keys.push(key?);
    }
    if keys.is_empty() {
        return Err("no PEM public key found (expected -----BEGIN PUBLIC KEY-----)".to_string());
    }
    Ok(keys)
}

/// The `(label, DER)` of each PEM block. Text outside blocks is ignored (RFC 7468 §2).
pub(super) fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = pem_boundary(line, "-----BEGIN ") {
            open = Some((label.to_string(), String::new()));
        } else if let Some(label) = pem_boundary(line, "-----END ") {
            let Some((begin, body)) = open.take() else {
                return Err(format!("PEM END {label:?} without BEGIN"));
            };
            if begin != label {
                return Err(format!("PEM BEGIN {begin:?} closed by END {label:?}"));
            }
            let der = STANDARD
                .decode(body)
                .map_err(|_| format!("PEM block {label:?} is not valid base64"))?;
            blocks.push((label.to_string(), der));
        } else if let Some((_, body)) = open.as_mut() {
            body.push_str(line);
        }
    }
    if let Some((label, _)) = open {
        return Err(format!("PEM block {label:?} has no END line"));
    }
    Ok(blocks)
}

fn pem_boundary<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.strip_prefix(prefix)?.strip_suffix("-----")
}

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
/// `[0] EXPLICIT`, the optional certificate version (RFC 5280 §4.1).
const TAG_CONTEXT_0: u8 = 0xA0;

/// rsaEncryption, 1.2.840.113549.1.1.1 (RFC 8017 §A.1).
const OID_RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1 (RFC 5480 §2.1.1).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
/// secp256r1 / P-256, 1.2.840.10045.3.1.7 (RFC 5480 §2.1.1.1).
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// id-Ed25519, 1.3.101.112 (RFC 8410 §3).
const OID_ED25519: &[u8] = &[0x2B, 0x65, 0x70];

/// A forward-only reader of DER elements (X.690 §8, definite lengths only).
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Der<'a> {
        Der { rest: bytes }
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Reads one element with `tag`; returns `(whole element, contents)`.
    fn element(&mut self, tag: u8) -> Result<(&'a [u8], &'a [u8]), String> {
        let bad = || "malformed DER in key".to_string();
        let (&found, after_tag) = self.rest.split_first().ok_or_else(bad)?;
        if found != tag {
            return Err(bad());
        }
        let (&first, mut after_len) = after_tag.split_first().ok_or_else(bad)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7F);
            if count == 0 || count > 4 || after_len.len() < count {
                return Err(bad());
            }
            let (len_bytes, rest) = after_len.split_at(count);
            after_len = rest;
            len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if after_len.len() < len {
            return Err(bad());
        }
        let header = self.rest.len() - after_len.len();
        let whole = &self.rest[..header + len];
        let contents = &after_len[..len];
        self.rest = &after_len[len..];
        Ok((whole, contents))
    }

    fn contents(&mut self, tag: u8) -> Result<&'a [u8], String> {
        self.element(tag).map(|(_, contents)| contents)
    }
}

/// A SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) holding an RSA, P-256 or Ed25519 key.
fn from_spki(der: &[u8]) -> Result<PublicKey, String> {
    let mut spki = Der::new(Der::new(der).contents(TAG_SEQUENCE)?);
    let mut algorithm = Der::new(spki.contents(TAG_SEQUENCE)?);
    let bits = spki.contents(TAG_BIT_STRING)?;
    // The first content byte of a BIT STRING counts unused bits; a key uses whole bytes.
    let key = match bits.split_first() {
        Some((0, key)) => key,
        _ => return Err("malformed DER in key".to_string()),
    };
    let oid = algorithm.contents(TAG_OID)?;
    if oid == OID_RSA {
        from_pkcs1_rsa(key)
    } else if oid == OID_EC_PUBLIC_KEY {
        let curve = algorithm.contents(TAG_OID)?;
        if curve != OID_P256 {
            return Err("EC key is not on P-256 (only ES256 is supported)".to_string());
        }
        PublicKey::ec_p256(None, key.to_vec())
    } else if oid == OID_ED25519 {
        PublicKey::ed25519(None, key.to_vec())
    } else {
        Err("key type is not RSA, EC P-256 or Ed25519".to_string())
    }
}

/// An RSAPublicKey (RFC 8017 §A.1.1): `SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn from_pkcs1_rsa(der: &[u8]) -> Result<PublicKey, String> {
    let mut fields = Der::new(Der::new(der).contents(TAG_SEQUENCE)?);
    let n = fields.contents(TAG_INTEGER)?;
    let e = fields.contents(TAG_INTEGER)?;
    PublicKey::rsa(None, n, e)
}

/// The SubjectPublicKeyInfo element of an X.509 certificate (RFC 5280 §4.1). Nothing else of
/// the certificate (validity, issuer) is checked: it is only a container for the key here.
fn spki_of_certificate(der: &[u8]) -> Result<&[u8], String> {
    let mut certificate = Der::new(Der::new(der).contents(TAG_SEQUENCE)?);
    let mut tbs = Der::new(certificate.contents(TAG_SEQUENCE)?);
    if tbs.peek_tag() == Some(TAG_CONTEXT_0) {
        tbs.element(TAG_CONTEXT_0)?;
    }
    tbs.element(TAG_INTEGER)?; // serialNumber
    tbs.element(TAG_SEQUENCE)?; // signature algorithm
    tbs.element(TAG_SEQUENCE)?; // issuer
    tbs.element(TAG_SEQUENCE)?; // validity
    tbs.element(TAG_SEQUENCE)?; // subject
    tbs.element(TAG_SEQUENCE).map(|(whole, _)| whole)
}

// ---------------------------------------------------------------------------------------------
// JWK (RFC 7517)

/// The JWK members used here; others (`x5c`, `key_ops`, ...) are ignored.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// Most keys taken from one JWKS document; IdPs publish a handful.
pub const MAX_JWKS_KEYS: usize = 64;

/// The usable signing keys of a JWK Set (RFC 7517 §5) and how many were skipped, with why.
/// Symmetric (`oct`) keys are always skipped: an HMAC secret never comes from a URL.
pub fn keys_from_jwks(body: &[u8]) -> Result<(Vec<PublicKey>, Vec<String>), String> {
    #[derive(Deserialize)]
    struct JwkSet {
        keys: Vec<serde_json::Value>,
    }
    let set: JwkSet =
        serde_json::from_slice(body).map_err(|e| format!("not a JWK Set document: {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for value in set.keys {
        if keys.len() == MAX_JWKS_KEYS {
            skipped.push(format!(
                "more than {MAX_JWKS_KEYS} keys; the rest are ignored"
            ));
            break;
        }
        match key_from_jwk(value) {
            Ok(key) => keys.push(key),
            Err(why) => skipped.push(why),
        }
    }
    Ok((keys, skipped))
}

fn key_from_jwk(value: serde_json::Value) -> Result<PublicKey, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("JWK: {e}"))?;
    let name = jwk.kid.as_deref().unwrap_or("(no kid)").to_string();
    let skip = |why: &str| format!("JWK {name:?}: {why}");
    // RFC 7517 §4.2: a key marked for encryption must not verify signatures.
    if jwk.usage.as_deref().is_some_and(|u| u != "sig") {
        return Err(skip("use is not \"sig\""));
    }
    let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => {
            let n = b64url_member(&jwk.n, "n").map_err(|e| skip(&e))?;
            let e = b64url_member(&jwk.e, "e").map_err(|e| skip(&e))?;
            PublicKey::rsa(jwk.kid.clone(), &n, &e)
        }
        ("EC", Some("P-256")) => {
            let x = b64url_member(&jwk.x, "x").map_err(|e| skip(&e))?;
            let y = b64url_member(&jwk.y, "y").map_err(|e| skip(&e))?;
            // RFC 7518 §6.2.1.2/3: each coordinate is exactly the field size, 32 bytes.
            if x.len() != 32 || y.len() != 32 {
                return Err(skip("P-256 coordinates are not 32 bytes"));
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            PublicKey::ec_p256(jwk.kid.clone(), point)
        }
        ("OKP", Some("Ed25519")) => {
            let x = b64url_member(&jwk.x, "x").map_err(|e| skip(&e))?;
            PublicKey::ed25519(jwk.kid.clone(), x)
        }
        ("oct", _) => return Err(skip("symmetric keys are never taken from a JWKS")),
        (kty, crv) => {
            return Err(skip(&format!(
                "unsupported key type {kty}{}",
                crv.map(|c| format!("/{c}")).unwrap_or_default()
            )))
        }
    }
    .map_err(|e| skip(&e))?;
    // RFC 7517 §4.4: when the JWK names an algorithm, it must be the one its type gives.
    if let Some(alg) = &jwk.alg {
        if alg != key.algorithm().name() {
            return Err(skip(&format!("alg {alg:?} is not supported for this key")));
        }
    }
    Ok(key)
}

fn b64url_member(value: &Option<String>, member: &str) -> Result<Vec<u8>, String> {
    let text = value
        .as_deref()
        .ok_or_else(|| format!("member {member} is missing"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("member {member} is not base64url"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    fn ec_pkcs8() -> Vec<u8> {
        EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .unwrap()
        .as_ref()
        .to_vec()
    }

    fn spki_pem_of(pkcs8: &[u8]) -> String {
        rcgen::KeyPair::try_from(pkcs8).unwrap().public_key_pem()
    }

    #[test]
    fn algorithm_names_round_trip_and_none_is_unknown() {
        for alg in [
            Algorithm::Hs256,
            Algorithm::Rs256,
            Algorithm::Es256,
            Algorithm::EdDsa,
        ] {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
        assert_eq!(Algorithm::from_name("none"), None);
        assert_eq!(Algorithm::from_name("hs256"), None);
    }

    #[test]
    fn ec_spki_pem_gives_an_es256_key() {
        let keys = keys_from_pem(&spki_pem_of(&ec_pkcs8())).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].algorithm(), Algorithm::Es256);
    }

    #[test]
    fn ed25519_spki_pem_gives_an_eddsa_key() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let keys = keys_from_pem(&spki_pem_of(pkcs8.as_ref())).unwrap();
        assert_eq!(keys[0].algorithm(), Algorithm::EdDsa);
    }

    #[test]
    fn certificate_pem_gives_its_public_key() {
        let pkcs8 = ec_pkcs8();
        let pair = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["idp.test".to_string()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        let from_cert = keys_from_pem(&cert.pem()).unwrap();
        let from_spki = keys_from_pem(&pair.public_key_pem()).unwrap();
        assert_eq!(from_cert, from_spki);
    }

    #[test]
    fn private_key_pem_is_refused() {
        let pem = rcgen::KeyPair::try_from(ec_pkcs8().as_slice())
            .unwrap()
            .serialize_pem();
        let err = keys_from_pem(&pem).unwrap_err();
        assert!(err.contains("never a private one"), "{err}");
    }

    #[test]
    fn text_without_pem_block_is_refused() {
        assert!(keys_from_pem("just some text").is_err());
    }

    #[test]
    fn pem_with_mismatched_end_is_refused() {
        let err = pem_blocks("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap_err();
        assert!(err.contains("closed by END"), "{err}");
    }

    #[test]
    fn short_rsa_modulus_is_refused() {
        let err = PublicKey::rsa(None, &[0xC0; 128], &[1, 0, 1]).unwrap_err();
        assert!(err.contains("1024 bits"), "{err}");
    }

    #[test]
    fn rsa_modulus_leading_zero_is_ignored() {
        let mut n = vec![0u8];
        n.extend_from_slice(&[0xC1; 256]);
        let key = PublicKey::rsa(None, &n, &[1, 0, 1]).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Rs256);
    }

    fn jwks(keys: serde_json::Value) -> (Vec<PublicKey>, Vec<String>) {
        keys_from_jwks(serde_json::json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    fn ec_jwk(kid: &str) -> serde_json::Value {
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &ec_pkcs8(),
            &SystemRandom::new(),
        )
        .unwrap();
        let point = pair.public_key().as_ref();
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        })
    }

    #[test]
    fn jwks_ec_key_keeps_its_kid() {
        let (keys, skipped) = jwks(serde_json::json!([ec_jwk("k1")]));
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(keys[0].kid.as_deref(), Some("k1"));
        assert_eq!(keys[0].algorithm(), Algorithm::Es256);
    }

    #[test]
    fn jwks_symmetric_key_is_skipped() {
        let (keys, skipped) = jwks(serde_json::json!([{ "kty": "oct", "k": "c2VjcmV0" }]));
        assert!(keys.is_empty());
        assert!(skipped[0].contains("symmetric"), "{skipped:?}");
    }

    #[test]
    fn jwks_encryption_key_is_skipped() {
        let mut jwk = ec_jwk("enc");
        jwk["use"] = "enc".into();
        let (keys, skipped) = jwks(serde_json::json!([jwk]));
        assert!(keys.is_empty());
        assert_eq!(skipped.len(), 1);
    }

    #[test]
    fn jwks_key_with_other_alg_is_skipped() {
        let mut jwk = ec_jwk("es512");
        jwk["alg"] = "ES512".into();
        let (keys, _) = jwks(serde_json::json!([jwk]));
        assert!(keys.is_empty());
    }

    #[test]
    fn jwks_bad_key_does_not_hide_good_ones() {
        let (keys, skipped) = jwks(serde_json::json!([{ "kty": "RSA", "n": "!!" }, ec_jwk("ok")]));
        assert_eq!(keys.len(), 1);
        assert_eq!(skipped.len(), 1);
    }

    #[test]
    fn document_without_keys_array_is_an_error() {
        assert!(keys_from_jwks(b"{\"nokeys\":[]}").is_err());
    }
}
