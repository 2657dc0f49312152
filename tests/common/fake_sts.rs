//! A fake AWS STS answering `AssumeRole` over the Query API, as `sts.amazonaws.com` does,
//! for the gateway's STS credential source and the Bedrock fake that takes its credentials.
//!
//! - Every request's SigV4 signature is verified by recomputing it here ([`verify_sigv4`]),
//!   written from AWS's description independently of the gateway's signer, with the base
//!   secret the fake was started with; `tests/reference/botocore_sts.py` proves it agrees
//!   with botocore's own STS client. A bad signature is `SignatureDoesNotMatch` (403), whose
//!   message quotes the canonical request as AWS's services do (so it holds the base session
//!   token when one was signed: the gateway must not repeat it); an unknown key or a missing
//!   or wrong base session token is `InvalidClientTokenId` (403).
//! - `Action=AssumeRole&Version=2011-06-15&RoleArn&RoleSessionName&DurationSeconds` from the
//!   form body (or the query). An unknown role is `AccessDenied` (403). The answer is STS's
//!   XML with credentials of the fake's configured lifetime (below STS's 900 s minimum, for
//!   tests), a `Date` header, and the issued credentials remembered ([`StsBook`]), so a fake
//!   upstream can say whether an access key id / session token is currently valid.
//! - Failure modes ([`StsMode`]): down (the connection closed unanswered) and a forced error
//!   answer of any status and code.

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::fake_oauth::form_decode;
use super::fake_server::{status_line, unix_now, Conn, FakeServer, RecordedRequest};

type HmacSha256 = Hmac<Sha256>;

/// How far a request's `X-Amz-Date` may be from the fake's clock (AWS allows 15 minutes).
const MAX_CLOCK_SKEW_S: i64 = 15 * 60;

/// How the fake answers `AssumeRole`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StsMode {
    /// Credentials for signed requests naming a known role.
    Issue,
    /// The connection is closed without an answer.
    Down,
    /// This error answer to every request (after the signature check passes).
    Fail {
        status: u16,
        code: String,
        message: String,
    },
}

/// One AWS error answer (`ErrorResponse/Error/{Type,Code,Message}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl AwsError {
    fn new(status: u16, code: &str, message: impl Into<String>) -> AwsError {
        AwsError {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// One set of temporary credentials the fake issued.
#[derive(Debug, Clone)]
pub struct IssuedCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// `Expiration` as sent (ISO 8601).
    pub expiration: String,
    expires_at: Instant,
    revoked: bool,
}

/// Where a set of issued credentials stands, as an AWS service that receives them sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Issued, not expired, not revoked.
    Valid,
    /// Past its `Expiration` (AWS: `ExpiredTokenException`).
    Expired,
    /// Revoked before its expiry (AWS then no longer recognises the session token).
    Revoked,
}

/// The credentials issued so far, shared with upstream fakes that take them.
#[derive(Default)]
pub struct StsBook {
    issued: Mutex<Vec<IssuedCredentials>>,
}

impl StsBook {
    /// Whether `access_key_id` with `session_token` was issued and has not expired.
    pub fn is_valid(&self, access_key_id: &str, session_token: &str) -> bool {
        self.valid(access_key_id)
            .is_some_and(|c| c.session_token == session_token)
    }

    /// The unexpired, unrevoked credentials of `access_key_id`: an upstream fake verifies a
    /// signature with their secret.
    pub fn valid(&self, access_key_id: &str) -> Option<IssuedCredentials> {
        self.lookup(access_key_id)
            .filter(|(_, standing)| *standing == Standing::Valid)
            .map(|(c, _)| c)
    }

    /// The credentials issued as `access_key_id` and where they stand; `None` when the fake
    /// never issued that key.
    pub fn lookup(&self, access_key_id: &str) -> Option<(IssuedCredentials, Standing)> {
        let issued = self.issued.lock().unwrap();
        let c = issued.iter().find(|c| c.access_key_id == access_key_id)?;
        let standing = if c.revoked {
            Standing::Revoked
        } else if Instant::now() >= c.expires_at {
            Standing::Expired
        } else {
            Standing::Valid
        };
        Some((c.clone(), standing))
    }

    /// Makes every set issued so far expire now, earlier than its `Expiration` said (as a
    /// service whose clock runs ahead sees it).
    pub fn expire_all(&self) {
        let now = Instant::now();
        for c in self.issued.lock().unwrap().iter_mut() {
            c.expires_at = c.expires_at.min(now);
        }
    }

    /// Revokes every set issued so far (before its expiry), as revoking the role's sessions
    /// does.
    pub fn revoke_all(&self) {
        for c in self.issued.lock().unwrap().iter_mut() {
            c.revoked = true;
        }
    }

    /// Every set issued, oldest first.
    pub fn issued(&self) -> Vec<IssuedCredentials> {
        self.issued.lock().unwrap().clone()
    }
}

/// The base keys the fake accepts, and what it answers.
struct Settings {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    region: String,
    roles: Vec<String>,
    lifetime_s: u64,
    mode: StsMode,
    last_form: Vec<(String, String)>,
}

/// A running fake STS; dereferences to its [`FakeServer`] (`request_count()` is its hit
/// counter, `requests()` what it received).
pub struct FakeSts {
    server: FakeServer,
    settings: Arc<Mutex<Settings>>,
    book: Arc<StsBook>,
}

impl Deref for FakeSts {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

/// The role the fake knows from the start.
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/credentialflow-gateway";

impl FakeSts {
    /// Accepts requests signed for `us-east-1` with `access_key_id` / `secret_access_key`
    /// (long-lived: no session token), lets them assume [`ROLE_ARN`], and issues credentials
    /// valid `lifetime_s` seconds.
    pub fn start(access_key_id: &str, secret_access_key: &str, lifetime_s: u64) -> FakeSts {
        let settings = Arc::new(Mutex::new(Settings {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            session_token: None,
            region: "us-east-1".to_string(),
            roles: vec![ROLE_ARN.to_string()],
            lifetime_s,
            mode: StsMode::Issue,
            last_form: Vec::new(),
        }));
        let book = Arc::new(StsBook::default());
        let server = {
            let settings = Arc::clone(&settings);
            let book = Arc::clone(&book);
            FakeServer::start(Box::new(move |conn, request, _, keep_alive| {
                answer(conn, request, &settings, &book, keep_alive)
            }))
        };
        FakeSts {
            server,
            settings,
            book,
        }
    }

    /// The endpoint URL (`sts_url`).
    pub fn url(&self) -> String {
        self.server.base_url()
    }

    /// Requires the base keys to be temporary, with this session token.
    pub fn require_base_session_token(&self, token: &str) {
        self.settings.lock().unwrap().session_token = Some(token.to_string());
    }

    /// Changes how the next requests are answered.
    pub fn set_mode(&self, mode: StsMode) {
        self.settings.lock().unwrap().mode = mode;
    }

    /// Changes the lifetime of the next credentials.
    pub fn set_lifetime(&self, lifetime_s: u64) {
        self.settings.lock().unwrap().lifetime_s = lifetime_s;
    }

    /// The last request's form fields (none of them secret).
    pub fn last_form(&self) -> Vec<(String, String)> {
        self.settings.lock().unwrap().last_form.clone()
    }

    /// The credentials issued, shared with an upstream fake.
    pub fn book(&self) -> Arc<StsBook> {
        Arc::clone(&self.book)
    }
}

fn form_fields(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(name), form_decode(value))
        })
        .collect()
}

fn answer(
    conn: &mut Conn,
    request: &RecordedRequest,
    settings: &Mutex<Settings>,
    book: &StsBook,
    keep_alive: bool,
) -> bool {
    let (key_id, secret, token, region, mode) = {
        let s = settings.lock().unwrap();
        (
            s.access_key_id.clone(),
            s.secret_access_key.clone(),
            s.session_token.clone(),
            s.region.clone(),
            s.mode.clone(),
        )
    };
    if mode == StsMode::Down {
        conn.close();
        return false;
    }
    let outcome = verify_sigv4(request, "sts", &region, |presented| {
        (presented == key_id).then(|| (secret.clone(), token.clone()))
    })
    .and_then(|_| assume_role(request, settings, book, mode));
    match outcome {
        Ok(xml) => send_xml(conn, 200, &xml, keep_alive),
        Err(error) => send_xml(conn, error.status, &error_xml(&error), keep_alive),
    }
}

/// What a signed request asks, answered.
fn assume_role(
    request: &RecordedRequest,
    settings: &Mutex<Settings>,
    book: &StsBook,
    mode: StsMode,
) -> Result<String, AwsError> {
    let mut fields = form_fields(&String::from_utf8_lossy(&request.body));
    fields.extend(form_fields(&request.query));
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let (roles, lifetime_s) = {
        let mut s = settings.lock().unwrap();
        s.last_form = fields.clone();
        (s.roles.clone(), s.lifetime_s)
    };
    if field("Action") != Some("AssumeRole") || field("Version") != Some("2011-06-15") {
        return Err(AwsError::new(
            400,
            "InvalidAction",
            "Could not find operation for this version",
        ));
    }
    let role = field("RoleArn").unwrap_or_default();
    let session = field("RoleSessionName").unwrap_or_default();
    let duration_ok = field("DurationSeconds")
        .is_none_or(|d| d.parse::<u32>().is_ok_and(|d| (900..=43200).contains(&d)));
    if !(2..=64).contains(&session.len()) || !duration_ok {
        return Err(AwsError::new(
            400,
            "ValidationError",
            "1 validation error detected: RoleSessionName or DurationSeconds",
        ));
    }
    if !roles.iter().any(|r| r == role) {
        return Err(AwsError::new(
            403,
            "AccessDenied",
            format!(
                "User: arn:aws:iam::123456789012:user/gateway is not authorized to perform: \
                 sts:AssumeRole on resource: {role}"
            ),
        ));
    }
    if let StsMode::Fail {
        status,
        code,
        message,
    } = mode
    {
        return Err(AwsError::new(status, &code, message));
    }
    let issued_at = unix_now();
    let expiration = timestamp(issued_at + lifetime_s).to_string();
    let issued = IssuedCredentials {
        access_key_id: format!(
            "ASIA{}",
            random_chars(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        ),
        secret_access_key: random_chars(
            40,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        ),
        session_token: format!(
            "IQoJb3JpZ2luX2Vj{}==",
            random_chars(
                320,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
            )
        ),
        expiration: expiration.clone(),
        expires_at: Instant::now() + Duration::from_secs(lifetime_s),
        revoked: false,
    };
    let xml = format!(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n\
         \x20 <AssumeRoleResult>\n\
         \x20   <AssumedRoleUser>\n\
         \x20     <AssumedRoleId>AROA3XFRBF535PLBIFPI4:{session}</AssumedRoleId>\n\
         \x20     <Arn>{arn}/{session}</Arn>\n\
         \x20   </AssumedRoleUser>\n\
         \x20   <Credentials>\n\
         \x20     <AccessKeyId>{}</AccessKeyId>\n\
         \x20     <SecretAccessKey>{}</SecretAccessKey>\n\
         \x20     <SessionToken>{}</SessionToken>\n\
         \x20     <Expiration>{expiration}</Expiration>\n\
         \x20   </Credentials>\n\
         \x20 </AssumeRoleResult>\n\
         \x20 <ResponseMetadata>\n\
         \x20   <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n\
         \x20 </ResponseMetadata>\n\
         </AssumeRoleResponse>\n",
        escape(&issued.access_key_id),
        escape(&issued.secret_access_key),
        escape(&issued.session_token),
        session = escape(session),
        arn = escape(
            &role
                .replace(":iam::", ":sts::")
                .replace(":role/", ":assumed-role/")
        ),
    );
    book.issued.lock().unwrap().push(issued);
    Ok(xml)
}

fn timestamp(unix: u64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(unix as i64).expect("a time in range")
}

fn error_xml(error: &AwsError) -> String {
    let kind = if error.status >= 500 {
        "Receiver"
    } else {
        "Sender"
    };
    format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n\
         \x20 <Error>\n\
         \x20   <Type>{kind}</Type>\n\
         \x20   <Code>{}</Code>\n\
         \x20   <Message>{}</Message>\n\
         \x20 </Error>\n\
         \x20 <RequestId>f2a1c3e4-0000-4000-8000-000000000000</RequestId>\n\
         </ErrorResponse>\n",
        escape(&error.code),
        escape(&error.message)
    )
}

/// Writes an XML answer with a `Date` header (IMF-fixdate), as STS does.
fn send_xml(conn: &mut Conn, status: u16, xml: &str, keep_alive: bool) -> bool {
    static PRINTER: jiff::fmt::rfc2822::DateTimePrinter =
        jiff::fmt::rfc2822::DateTimePrinter::new();
    let date = PRINTER
        .timestamp_to_rfc9110_string(&timestamp(unix_now()))
        .expect("an HTTP date");
    let head = format!(
        "{}x-amzn-RequestId: c6104cbe-af31-11e0-8154-cbc7ccf896c7\r\nContent-Type: text/xml\r\n\
         Date: {date}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        status_line(status),
        xml.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    conn.send(head.as_bytes()) && conn.send(xml.as_bytes())
}

/// XML character data with `&`, `<`, `>`, `"` escaped.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn random_chars(n: usize, alphabet: &[u8]) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).expect("random bytes");
    bytes
        .iter()
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect()
}

/// Verifies `request`'s SigV4 `Authorization` header for `service` in `region` by
/// recomputing the signature, with the secret (and the session token the request must carry,
/// if any) that `keys` gives for the presented access key id. Returns that access key id, or
/// the error AWS would answer.
///
/// The canonical request follows AWS's description ("Create a signed AWS API request"): the
/// path as received, URI-encoded once more (every service but S3); the query's parameters
/// decoded, re-encoded and sorted; each signed header's values trimmed, inner whitespace runs
/// collapsed and joined by commas; the payload's SHA-256 (or `X-Amz-Content-Sha256`).
pub fn verify_sigv4(
    request: &RecordedRequest,
    service: &str,
    region: &str,
    keys: impl Fn(&str) -> Option<(String, Option<String>)>,
) -> Result<String, AwsError> {
    let incomplete = |why: &str| {
        AwsError::new(
            400,
            "IncompleteSignature",
            format!("Authorization header requires {why}"),
        )
    };
    let Some(authorization) = request.header("authorization") else {
        return Err(AwsError::new(
            403,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        ));
    };
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| incomplete("the AWS4-HMAC-SHA256 algorithm"))?;
    let part = |name: &str| {
        rest.split(',')
            .map(str::trim)
            .find_map(|p| p.strip_prefix(name))
            .map(str::to_string)
    };
    let credential = part("Credential=").ok_or_else(|| incomplete("'Credential' parameter"))?;
    let signed = part("SignedHeaders=").ok_or_else(|| incomplete("'SignedHeaders' parameter"))?;
    let signature = part("Signature=").ok_or_else(|| incomplete("'Signature' parameter"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, scope_region, scope_service, "aws4_request"] = scope[..] else {
        return Err(incomplete("a Credential of five parts"));
    };
    let amz_date = request
        .header("x-amz-date")
        .ok_or_else(|| incomplete("an X-Amz-Date header"))?;
    let mismatch = |message: String| AwsError::new(403, "SignatureDoesNotMatch", message);
    if scope_region != region || scope_service != service {
        return Err(mismatch(format!(
            "Credential should be scoped to a valid region and service ({region}/{service})."
        )));
    }
    if !amz_date.starts_with(date) {
        return Err(mismatch(
            "Date in Credential scope does not match X-Amz-Date.".to_string(),
        ));
    }
    let signed_at = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", amz_date)
        .ok()
        .and_then(|t| jiff::tz::Offset::UTC.to_timestamp(t).ok())
        .map(|t| t.as_second())
        .ok_or_else(|| incomplete("an X-Amz-Date in the basic format"))?;
    if (signed_at - unix_now() as i64).abs() > MAX_CLOCK_SKEW_S {
        return Err(mismatch(format!("Signature expired: {amz_date}.")));
    }
    let invalid_token = || {
        AwsError::new(
            403,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        )
    };
    let (secret, required_token) = keys(key_id).ok_or_else(invalid_token)?;
    let names: Vec<&str> = signed.split(';').collect();
    let presented_token = request.header("x-amz-security-token");
    match (&required_token, presented_token) {
        (Some(required), Some(presented))
            if required == presented && names.contains(&"x-amz-security-token") => {}
        (None, None) => {}
        _ => return Err(invalid_token()),
    }
    if !names.contains(&"host") {
        return Err(incomplete("the host header to be signed"));
    }

    let mut canonical = format!(
        "{}\n{}\n{}\n",
        request.method,
        if request.path.is_empty() {
            "/".to_string()
        } else {
            uri_encode(&request.path, false)
        },
        canonical_query(&request.query)
    );
    for name in &names {
        let values = request.headers_named(name);
        if values.is_empty() {
            return Err(mismatch(format!("Signed header {name} is missing.")));
        }
        let joined: Vec<String> = values
            .iter()
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical.push_str(&format!("{name}:{}\n", joined.join(",")));
    }
    let payload_hash = match request.header("x-amz-content-sha256") {
        Some(hash) => hash.to_string(),
        None => hex(&Sha256::digest(&request.body)),
    };
    canonical.push_str(&format!("\n{signed}\n{payload_hash}"));
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex(&hmac(&key, string_to_sign.as_bytes()));
    if expected != signature {
        return Err(mismatch(format!(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.\n\nThe Canonical String for this request should have \
             been\n'{canonical}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n"
        )));
    }
    Ok(key_id.to_string())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// AWS's URI encoding: unreserved characters as they are, every other byte `%XX` (upper
/// case); `/` kept in paths.
fn uri_encode(text: &str, encode_slash: bool) -> String {
    let mut out = String::new();
    for &b in text.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The query's parameters decoded (percent-decoding only: `+` is a literal plus in a URI),
/// re-encoded and sorted by name, then value.
fn canonical_query(query: &str) -> String {
    let decode = |text: &str| form_decode(&text.replace('+', "%2B"));
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                uri_encode(&decode(name), true),
                uri_encode(&decode(value), true),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}
