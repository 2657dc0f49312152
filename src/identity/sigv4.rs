//! AWS Signature Version 4 for HTTP requests, header-signed (the `Authorization` header), as
//! Bedrock and STS require.
//!
//! The steps are AWS's ("Create a signed AWS API request", SigV4): a canonical request (method,
//! canonical URI, canonical query string, canonical headers, signed header names, payload
//! hash), a string to sign over its SHA-256, and an HMAC-SHA256 of that string under a key
//! derived from the secret, the date, the region and the service. Proven against AWS's own
//! published test suite (`tests/sigv4_vectors.rs`) and against botocore's signer
//! (`tests/sigv4_reference.rs`).
//!
//! Choices and their reasons:
//! - The canonical URI is the request path *as sent on the wire* URI-encoded once more, which
//!   is AWS's double-encoding rule for every service but S3 (a `%3A` in a Bedrock model id
//!   becomes `%253A`). S3's single-encoding rule is not implemented: no provider here talks to
//!   S3.
//! - The signing key chain (four HMACs) depends only on the day, region and service, so a
//!   [`Signer`] derives it once per UTC day and keeps it; a request costs one SHA-256 of the
//!   canonical request, one HMAC and, when the body is hashed here, one SHA-256 of the body.
//! - Implemented on `hmac`/`sha2` (already dependencies) rather than the `aws-sigv4` crate,
//!   which would bring the AWS SDK's runtime types and HTTP abstractions for a few hundred
//!   lines of well-specified string building.
//! - Credentials and the derived key are zeroized on drop and never shown by `Debug`.
//!
//! Not wired into any provider yet: the `bedrock` provider and the STS source will use it.

use std::fmt;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

type HmacSha256 = Hmac<Sha256>;

/// The algorithm name in the string to sign and the `Authorization` header.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The payload hash AWS takes when the body is deliberately not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Headers the signer writes itself; a request that brings its own is refused rather than
/// signed twice or with a stale value.
const RESERVED_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Most headers one request may ask to sign: the gateway signs a handful, so a long list is a
/// bug upstream of here, and the canonical request stays small.
pub const MAX_SIGNED_HEADERS: usize = 64;

/// AWS credentials: an access key id, its secret and, for temporary credentials (STS), the
/// session token sent as `x-amz-security-token`. Cloned into each [`Signer`] made for them
/// (the copy is zeroized on drop like the original).
#[derive(Clone)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
}

impl Credentials {
    /// Long-lived credentials (an IAM user's access key).
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: Zeroizing::new(secret_access_key.into()),
            session_token: None,
        }
    }

    /// Temporary credentials: the same pair plus the session token STS issued with them.
    pub fn with_session_token(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: impl Into<String>,
    ) -> Self {
        Credentials {
            session_token: Some(Zeroizing::new(session_token.into())),
            ..Credentials::new(access_key_id, secret_access_key)
        }
    }

    /// The access key id (it appears in every `Authorization` header's `Credential=`).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// Whether these are temporary credentials carrying a session token.
    pub fn has_session_token(&self) -> bool {
        self.session_token.is_some()
    }

    /// The session token, for scrubbing it from anything a provider sends back (it goes on
    /// the wire, so an upstream could echo it).
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref().map(String::as_str)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// What the canonical request takes as the payload hash.
#[derive(Clone, Copy)]
pub enum Payload<'a> {
    /// The body itself, hashed here (SHA-256).
    Body(&'a [u8]),
    /// The body's SHA-256 in lowercase hex, computed by the caller (e.g. while the body was
    /// read).
    Sha256Hex(&'a str),
    /// `UNSIGNED-PAYLOAD`: the body is not covered by the signature.
    Unsigned,
}

/// One HTTP request to sign. Only the headers listed here are signed, and `host` must be one
/// of them (AWS requires it).
pub struct Request<'a> {
    /// The method, e.g. `POST`.
    pub method: &'a str,
    /// The path exactly as it goes on the wire (already percent-encoded), without the query.
    pub path: &'a str,
    /// The query string as it goes on the wire, without the `?`; empty for none.
    pub query: &'a str,
    /// The headers to sign, as (name, value) in the order they are sent; a name may repeat.
    pub headers: &'a [(&'a str, &'a str)],
    /// The payload hash source.
    pub payload: Payload<'a>,
}

/// How a [`Signer`] builds canonical requests.
#[derive(Clone, Copy, Debug)]
pub struct SigningOptions {
    /// Remove `.` and `..` segments and repeated slashes from the canonical path, as every
    /// AWS service but S3 expects.
    pub normalize_path: bool,
    /// Also send and sign `x-amz-content-sha256` (the payload hash as a header).
    pub content_sha256_header: bool,
}

impl Default for SigningOptions {
    fn default() -> Self {
        SigningOptions {
            normalize_path: true,
            content_sha256_header: false,
        }
    }
}

/// Why a request could not be signed. No variant carries a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigV4Error {
    /// The region or service is empty or holds characters a credential scope cannot.
    InvalidScope,
    /// The signing time is outside years 0000 to 9999.
    InvalidTime,
    /// A header name is empty or not an HTTP token.
    InvalidHeaderName(String),
    /// A header value holds CR, LF or NUL (it would split the request).
    InvalidHeaderValue(String),
    /// The request brings a header the signer writes itself.
    ReservedHeader(String),
    /// `host` is not among the signed headers.
    MissingHost,
    /// More than [`MAX_SIGNED_HEADERS`] headers.
    TooManyHeaders(usize),
    /// [`Payload::Sha256Hex`] is not 64 lowercase hex digits.
    InvalidPayloadHash,
}

impl fmt::Display for SigV4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigV4Error::InvalidScope => f.write_str("SigV4: region or service is not valid"),
            SigV4Error::InvalidTime => f.write_str("SigV4: signing time out of range"),
            SigV4Error::InvalidHeaderName(n) => write!(f, "SigV4: invalid header name {n:?}"),
            SigV4Error::InvalidHeaderValue(n) => {
                write!(f, "SigV4: header {n:?} has a CR, LF or NUL in its value")
            }
            SigV4Error::ReservedHeader(n) => {
                write!(f, "SigV4: header {n:?} is written by the signer")
            }
            SigV4Error::MissingHost => f.write_str("SigV4: host is not among the signed headers"),
            SigV4Error::TooManyHeaders(n) => write!(
                f,
                "SigV4: {n} headers to sign, more than {MAX_SIGNED_HEADERS}"
            ),
            SigV4Error::InvalidPayloadHash => {
                f.write_str("SigV4: payload hash is not 64 lowercase hex digits")
            }
        }
    }
}

impl std::error::Error for SigV4Error {}

/// The signing key of one day, kept so the HMAC chain runs once a day, not per request.
struct CachedKey {
    /// `YYYYMMDD`, the day it was derived for.
    date: [u8; 8],
    key: Zeroizing<[u8; 32]>,
}

/// Signs requests for one set of credentials, region and service. Cheap to share between
/// threads (`&self`); when credentials rotate (STS), build a new one.
pub struct Signer {
    credentials: Credentials,
    region: String,
    service: String,
    options: SigningOptions,
    /// The key of the last day signed for. Region and service are fixed per signer, so the
    /// day alone keys the cache.
    key: Mutex<Option<CachedKey>>,
    /// How many times the key chain ran: tests prove the cache with it.
    derivations: AtomicU64,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("credentials", &self.credentials)
            .field("region", &self.region)
            .field("service", &self.service)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A request's signature and the headers to send with it.
pub struct Signature<'s> {
    amz_date: String,
    content_sha256: Option<String>,
    security_token: Option<&'s str>,
    authorization: String,
    canonical_request: String,
    string_to_sign: String,
    signature: String,
}

impl<'s> Signature<'s> {
    /// The headers to add to the request, in the order to send them.
    pub fn headers(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![("x-amz-date", self.amz_date.as_str())];
        if let Some(hash) = &self.content_sha256 {
            out.push(("x-amz-content-sha256", hash.as_str()));
        }
        if let Some(token) = self.security_token {
            out.push(("x-amz-security-token", token));
        }
        out.push(("authorization", self.authorization.as_str()));
        out
    }

    /// The `x-amz-date` value, `YYYYMMDDTHHMMSSZ`.
    pub fn amz_date(&self) -> &str {
        &self.amz_date
    }

    /// The `Authorization` header value.
    pub fn authorization(&self) -> &str {
        &self.authorization
    }

    /// The canonical request that was signed (holds the session token when there is one: not
    /// for logs).
    pub fn canonical_request(&self) -> &str {
        &self.canonical_request
    }

    /// The string to sign.
    pub fn string_to_sign(&self) -> &str {
        &self.string_to_sign
    }

    /// The signature, 64 lowercase hex digits.
    pub fn signature(&self) -> &str {
        &self.signature
    }
}

impl fmt::Debug for Signature<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signature")
            .field("amz_date", &self.amz_date)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `region` and `service` (e.g. `us-east-1`, `bedrock`).
    pub fn new(
        credentials: Credentials,
        region: &str,
        service: &str,
        options: SigningOptions,
    ) -> Result<Signer, SigV4Error> {
        // Both go verbatim into the credential scope, which `/` separates.
        let scope_part_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        };
        if !scope_part_ok(region) || !scope_part_ok(service) {
            return Err(SigV4Error::InvalidScope);
        }
        Ok(Signer {
            credentials,
            region: region.to_string(),
            service: service.to_string(),
            options,
            key: Mutex::new(None),
            derivations: AtomicU64::new(0),
        })
    }

    /// The credentials this signer signs with.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// How many times the signing key has been derived (once per UTC day signed for).
    pub fn key_derivations(&self) -> u64 {
        self.derivations.load(Ordering::Relaxed)
    }

    /// Signs `request` as made at `unix_seconds` (UTC).
    pub fn sign(
        &self,
        request: &Request<'_>,
        unix_seconds: i64,
    ) -> Result<Signature<'_>, SigV4Error> {
        let amz_date = amz_date(unix_seconds)?;
        let date = &amz_date[..8];

        let payload_hash = match request.payload {
            Payload::Body(body) => hex(&Sha256::digest(body)),
            Payload::Sha256Hex(hash) => {
                let ok = hash.len() == 64
                    && hash
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !ok {
                    return Err(SigV4Error::InvalidPayloadHash);
                }
                hash.to_string()
            }
            Payload::Unsigned => UNSIGNED_PAYLOAD.to_string(),
        };
        let security_token = self
            .credentials
            .session_token
            .as_deref()
            .map(String::as_str);

        let mut headers = canonical_headers(request.headers)?;
        headers.push(("x-amz-date".to_string(), amz_date.clone()));
        if self.options.content_sha256_header {
            headers.push(("x-amz-content-sha256".to_string(), payload_hash.clone()));
        }
        if let Some(token) = security_token {
            headers.push(("x-amz-security-token".to_string(), token.to_string()));
        }
        // Stable: values of a repeated name stay in the order they are sent.
        headers.sort_by(|a, b| a.0.cmp(&b.0));

        let mut canonical = String::with_capacity(256 + request.path.len());
        canonical.push_str(request.method);
        canonical.push('\n');
        canonical_uri(request.path, self.options.normalize_path, &mut canonical);
        canonical.push('\n');
        canonical_query(request.query, &mut canonical);
        canonical.push('\n');
        let mut signed_headers = String::with_capacity(64);
        let mut i = 0;
        while i < headers.len() {
            let name = &headers[i].0;
            canonical.push_str(name);
            canonical.push(':');
            canonical.push_str(&headers[i].1);
            let mut j = i + 1;
            while j < headers.len() && headers[j].0 == *name {
                canonical.push(',');
                canonical.push_str(&headers[j].1);
                j += 1;
            }
            canonical.push('\n');
            if !signed_headers.is_empty() {
                signed_headers.push(';');
            }
            signed_headers.push_str(name);
            i = j;
        }
        canonical.push('\n');
        canonical.push_str(&signed_headers);
        canonical.push('\n');
        canonical.push_str(&payload_hash);

        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );

        let mut mac = self.keyed_mac(date);
        mac.update(string_to_sign.as_bytes());
        let signature = hex(&mac.finalize().into_bytes());

        let authorization = format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.credentials.access_key_id
        );
        Ok(Signature {
            amz_date,
            content_sha256: self.options.content_sha256_header.then_some(payload_hash),
            security_token,
            authorization,
            canonical_request: canonical,
            string_to_sign,
            signature,
        })
    }

    /// An HMAC keyed with the signing key of `date` (`YYYYMMDD`), deriving and caching it on
    /// the first request of the day.
    fn keyed_mac(&self, date: &str) -> HmacSha256 {
        let date_bytes: [u8; 8] = date
            .as_bytes()
            .try_into()
            .expect("amz_date has 8 date digits");
        let mut cached = self.key.lock();
        let fresh = match cached.as_ref() {
            Some(entry) if entry.date == date_bytes => None,
            _ => Some(self.derive_key(date)),
        };
        if let Some(key) = fresh {
            *cached = Some(CachedKey {
                date: date_bytes,
                key,
            });
        }
        let key = &cached.as_ref().expect("key cached above").key;
        HmacSha256::new_from_slice(&key[..]).expect("HMAC takes any key length")
    }

    /// The key chain: kDate, kRegion, kService, kSigning.
    fn derive_key(&self, date: &str) -> Zeroizing<[u8; 32]> {
        self.derivations.fetch_add(1, Ordering::Relaxed);
        let mut seed = Zeroizing::new(Vec::with_capacity(
            4 + self.credentials.secret_access_key.len(),
        ));
        seed.extend_from_slice(b"AWS4");
        seed.extend_from_slice(self.credentials.secret_access_key.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        *key = hmac(&seed, date.as_bytes());
        for part in [
            self.region.as_bytes(),
            self.service.as_bytes(),
            b"aws4_request".as_slice(),
        ] {
            let mut next = hmac(&key[..], part);
            key.copy_from_slice(&next);
            next.zeroize();
        }
        key
    }
}

/// HMAC-SHA256 of `data` under `key`.
fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `YYYYMMDDTHHMMSSZ` for unix seconds, UTC.
fn amz_date(unix_seconds: i64) -> Result<String, SigV4Error> {
    let at = jiff::Timestamp::from_second(unix_seconds).map_err(|_| SigV4Error::InvalidTime)?;
    let t = jiff::tz::Offset::UTC.to_datetime(at);
    if t.year() < 0 {
        return Err(SigV4Error::InvalidTime);
    }
    Ok(format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    out
}

/// RFC 7230 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The caller's headers as (lowercase name, trimmed value with whitespace runs collapsed),
/// unsorted.
fn canonical_headers(headers: &[(&str, &str)]) -> Result<Vec<(String, String)>, SigV4Error> {
    if headers.len() > MAX_SIGNED_HEADERS {
        return Err(SigV4Error::TooManyHeaders(headers.len()));
    }
    let mut out = Vec::with_capacity(headers.len() + 3);
    let mut has_host = false;
    for (name, value) in headers {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(SigV4Error::InvalidHeaderName(name.to_string()));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(SigV4Error::ReservedHeader(lower));
        }
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(SigV4Error::InvalidHeaderValue(lower));
        }
        has_host |= lower == "host";
        // AWS's Trimall: no leading or trailing blanks, sequential blanks as one space.
        let mut trimmed = String::with_capacity(value.len());
        for word in value.split([' ', '\t']).filter(|w| !w.is_empty()) {
            if !trimmed.is_empty() {
                trimmed.push(' ');
            }
            trimmed.push_str(word);
        }
        out.push((lower, trimmed));
    }
    if !has_host {
        return Err(SigV4Error::MissingHost);
    }
    Ok(out)
}

/// Bytes left as they are by AWS's URI encoding (RFC 3986 unreserved).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Appends `bytes` URI-encoded the AWS way (uppercase hex), keeping `/` when `keep_slash`.
fn uri_encode(bytes: &[u8], keep_slash: bool, out: &mut String) {
    for &b in bytes {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Appends the canonical URI: the wire path, normalized when asked, encoded once more.
fn canonical_uri(path: &str, normalize: bool, out: &mut String) {
    if path.is_empty() {
        out.push('/');
        return;
    }
    if !normalize {
        uri_encode(path.as_bytes(), true, out);
        return;
    }
    // RFC 3986 §5.2.4 dot-segment removal, and empty segments (repeated slashes) dropped as
    // AWS services expect.
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    if path.starts_with('/') {
        out.push('/');
    }
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        uri_encode(segment.as_bytes(), false, out);
    }
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
}

/// `%XY` decoding; a `%` not followed by two hex digits is kept as it is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hi = (bytes[i + 1] as char).to_digit(16);
            let lo = (bytes[i + 2] as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Appends the canonical query string: each `name=value` decoded and re-encoded the AWS way,
/// sorted by encoded name then value. `+` is taken as a literal plus, not a space.
fn canonical_query(query: &str, out: &mut String) {
    if query.is_empty() {
        return;
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let mut n = String::with_capacity(name.len());
            uri_encode(&percent_decode(name), false, &mut n);
            let mut v = String::with_capacity(value.len());
            uri_encode(&percent_decode(value), false, &mut v);
            (n, v)
        })
        .collect();
    pairs.sort();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documentation example credentials (not a real key).
    fn example_signer(options: SigningOptions) -> Signer {
        Signer::new(
            Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            "us-east-1",
            "service",
            options,
        )
        .unwrap()
    }

    /// 2015-08-30T12:36:00Z, the test suite's time.
    const SUITE_TIME: i64 = 1_440_938_160;

    fn get_vanilla() -> Request<'static> {
        Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &[("Host", "example.amazonaws.com")],
            payload: Payload::Body(b""),
        }
    }

    #[test]
    fn amz_date_is_utc_basic_format() {
        assert_eq!(amz_date(SUITE_TIME).unwrap(), "20150830T123600Z");
        assert_eq!(amz_date(0).unwrap(), "19700101T000000Z");
        assert_eq!(amz_date(i64::MAX), Err(SigV4Error::InvalidTime));
    }

    #[test]
    fn signing_key_is_derived_once_per_day() {
        let signer = example_signer(SigningOptions::default());
        let first = signer.sign(&get_vanilla(), SUITE_TIME).unwrap();
        let again = signer.sign(&get_vanilla(), SUITE_TIME + 3600).unwrap();
        assert_eq!(signer.key_derivations(), 1);
        // Same day, different time: a different signature from the same cached key.
        assert_ne!(first.signature(), again.signature());
        let next_day = signer.sign(&get_vanilla(), SUITE_TIME + 86_400).unwrap();
        assert_eq!(signer.key_derivations(), 2);
        assert!(next_day
            .authorization()
            .contains("/20150831/us-east-1/service/"));
        // The cached key gives what a fresh signer (fresh derivation) gives.
        let fresh = example_signer(SigningOptions::default());
        let fresh_sig = fresh.sign(&get_vanilla(), SUITE_TIME + 3600).unwrap();
        assert_eq!(fresh_sig.signature(), again.signature());
    }

    #[test]
    fn signature_matches_the_published_get_vanilla_vector() {
        // aws-c-auth's get-vanilla: header-signature.txt.
        let signer = example_signer(SigningOptions::default());
        let sig = signer.sign(&get_vanilla(), SUITE_TIME).unwrap();
        assert_eq!(
            sig.signature(),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(
            sig.headers(),
            vec![
                ("x-amz-date", "20150830T123600Z"),
                ("authorization", sig.authorization()),
            ]
        );
    }

    #[test]
    fn secrets_never_in_debug_output() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let token = "FQoGZXIvYXdzEXAMPLESESSIONTOKEN";
        let signer = Signer::new(
            Credentials::with_session_token("AKIDEXAMPLE", secret, token),
            "us-east-1",
            "bedrock",
            SigningOptions::default(),
        )
        .unwrap();
        let sig = signer.sign(&get_vanilla(), SUITE_TIME).unwrap();
        for shown in [format!("{signer:?}"), format!("{sig:?}")] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains(token), "{shown}");
            assert!(!shown.contains(sig.signature()), "{shown}");
        }
        // The token is sent (and signed) as x-amz-security-token.
        assert!(sig.headers().contains(&("x-amz-security-token", token)));
        assert!(sig
            .canonical_request()
            .contains(&format!("x-amz-security-token:{token}\n")));
    }

    #[test]
    fn path_is_encoded_once_more_than_on_the_wire() {
        let mut out = String::new();
        canonical_uri("/model/anthropic.claude-v2%3A1/converse", true, &mut out);
        assert_eq!(out, "/model/anthropic.claude-v2%253A1/converse");
        out.clear();
        canonical_uri("/a/./b/../c//d/", true, &mut out);
        assert_eq!(out, "/a/c/d/");
        out.clear();
        canonical_uri("/a/./b/../c//d/", false, &mut out);
        assert_eq!(out, "/a/./b/../c//d/");
    }

    #[test]
    fn query_is_decoded_reencoded_and_sorted() {
        let mut out = String::new();
        canonical_query("b=2&a=%7e%2f&a=1&c&%e1%88%B4=x+y", &mut out);
        assert_eq!(out, "%E1%88%B4=x%2By&a=1&a=~%2F&b=2&c=");
        out.clear();
        canonical_query("bad=%zz%4", &mut out);
        assert_eq!(out, "bad=%25zz%254");
    }

    #[test]
    fn bad_requests_are_refused_with_clear_errors() {
        let signer = example_signer(SigningOptions::default());
        let sign = |headers: &[(&str, &str)], payload| {
            signer
                .sign(
                    &Request {
                        method: "GET",
                        path: "/",
                        query: "",
                        headers,
                        payload,
                    },
                    SUITE_TIME,
                )
                .map(|_| ())
        };
        assert_eq!(sign(&[], Payload::Unsigned), Err(SigV4Error::MissingHost));
        assert_eq!(
            sign(&[("host", "h"), ("X-Amz-Date", "x")], Payload::Unsigned),
            Err(SigV4Error::ReservedHeader("x-amz-date".into()))
        );
        assert_eq!(
            sign(&[("host", "h"), ("bad name", "x")], Payload::Unsigned),
            Err(SigV4Error::InvalidHeaderName("bad name".into()))
        );
        assert_eq!(
            sign(&[("host", "h"), ("x-a", "1\r\nx-b: 2")], Payload::Unsigned),
            Err(SigV4Error::InvalidHeaderValue("x-a".into()))
        );
        assert_eq!(
            sign(&[("host", "h")], Payload::Sha256Hex("ABC")),
            Err(SigV4Error::InvalidPayloadHash)
        );
        let many: Vec<(String, &str)> = (0..=MAX_SIGNED_HEADERS)
            .map(|i| (format!("x-h{i}"), "v"))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(
            sign(&many, Payload::Unsigned),
            Err(SigV4Error::TooManyHeaders(MAX_SIGNED_HEADERS + 1))
        );
        assert!(matches!(
            Signer::new(
                Credentials::new("a", "b"),
                "us/east",
                "s",
                SigningOptions::default()
            ),
            Err(SigV4Error::InvalidScope)
        ));
    }

    #[test]
    fn unsigned_and_precomputed_payloads() {
        let signer = example_signer(SigningOptions {
            content_sha256_header: true,
            ..SigningOptions::default()
        });
        let mut request = get_vanilla();
        request.payload = Payload::Unsigned;
        let sig = signer.sign(&request, SUITE_TIME).unwrap();
        assert!(sig.canonical_request().ends_with("\nUNSIGNED-PAYLOAD"));
        assert!(sig
            .headers()
            .contains(&("x-amz-content-sha256", UNSIGNED_PAYLOAD)));
        let body_hash = hex(&Sha256::digest(b"{}"));
        request.payload = Payload::Body(b"{}");
        let hashed = signer.sign(&request, SUITE_TIME).unwrap();
        request.payload = Payload::Sha256Hex(&body_hash);
        let given = signer.sign(&request, SUITE_TIME).unwrap();
        assert_eq!(hashed.signature(), given.signature());
    }
}
