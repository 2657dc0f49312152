//! AWS STS `AssumeRole` as a credential source: the gateway signs an `AssumeRole` request
//! with its base keys and gets temporary credentials (an access key id, its secret and a
//! session token) for the role, which sign Bedrock requests until they expire.
//!
//! - The request is STS's Query API: `POST {sts_url}/` with the form
//!   `Action=AssumeRole&Version=2011-06-15&RoleArn=..&RoleSessionName=..&DurationSeconds=..`,
//!   SigV4-signed for service `sts` ([`super::sigv4`]). The region of the signature is
//!   `us-east-1` for the global endpoint (`sts.amazonaws.com`), the one in a regional host
//!   (`sts.{region}.amazonaws.com`), else the caller's fallback (a private endpoint, a test).
//!   Base keys that are themselves temporary send their session token as
//!   `X-Amz-Security-Token`, signed.
//! - `Accept: text/xml`: the Query API answers JSON to a client that asks for it, and the
//!   answer read here is the XML one every SDK reads
//!   (`AssumeRoleResponse/AssumeRoleResult/Credentials/{AccessKeyId,SecretAccessKey,
//!   SessionToken,Expiration}`).
//! - The XML is read by the small parser below rather than an XML crate: the answer is a
//!   dozen elements, and the parser refuses what such a crate would have to be configured
//!   against (a document type declaration, hence any entity beyond XML's five and character
//!   references), with bounds on depth and element count. The body itself is bounded by
//!   [`MAX_RESPONSE_BYTES`].
//! - The lifetime is `Expiration` minus the answer's `Date` (the server's clock, so a skewed
//!   local clock does not shorten or stretch it), or minus the local clock without a `Date`.
//! - An error answer (`ErrorResponse/Error/{Code,Message}`) is reported by its `Code` and the
//!   first sentence of its `Message`, bounded, and left out when it repeats any part of a
//!   secret that was sent (AWS's signature errors can quote the canonical request, which holds
//!   the base session token).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::http::{form_encode, Endpoint, Limits};
use super::sigv4::{Credentials, Payload, Request, Signer, SigningOptions};
use super::source::{CredentialSource, Fetch, FetchError, Fetched, Registry, SourceTiming};
use crate::config::{LiveSecret, SecretRef, SecretWatcher};

/// A source of temporary AWS credentials.
pub type AwsCredentialSource = CredentialSource<Credentials>;

/// Largest STS answer accepted; a real one is under 3 KiB (the session token is most of it).
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024;
/// Longest session token accepted: it goes into every signed request's head.
pub const MAX_SESSION_TOKEN_BYTES: usize = 8 * 1024;
/// Longest access key id accepted (IAM documents 128).
const MAX_ACCESS_KEY_ID_BYTES: usize = 128;
/// Longest secret access key accepted (real ones are 40 characters).
const MAX_SECRET_KEY_BYTES: usize = 256;
/// Longest lifetime believed: STS's own maximum (`DurationSeconds` up to 43200).
const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Longest error code reported.
const MAX_ERROR_CODE_BYTES: usize = 64;
/// Longest error message reported (its first sentence, cut here).
const MAX_ERROR_MESSAGE_BYTES: usize = 160;
/// A message sharing this many consecutive bytes with a secret that was sent is not reported.
const LEAK_WINDOW: usize = 12;

/// STS's API version of `AssumeRole`.
const API_VERSION: &str = "2011-06-15";
/// The request body's type, as the AWS SDKs send it.
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// The region of the global endpoint's signatures.
const GLOBAL_REGION: &str = "us-east-1";
/// `RoleSessionName` when the settings leave it empty (the contract's example value).
pub const DEFAULT_SESSION_NAME: &str = "credentialflow";
/// `DurationSeconds` when the settings leave it 0: STS's own default.
pub const DEFAULT_DURATION_S: u32 = 3600;
/// `DurationSeconds` bounds STS accepts.
const DURATION_RANGE: std::ops::RangeInclusive<u32> = 900..=43200;

/// The `assume_role = { role_arn, sts_url, session_name, duration_s }` settings, plus the
/// region to sign with when `sts_url`'s host names none. Holds no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumeRoleSettings {
    /// The STS endpoint, e.g. `https://sts.amazonaws.com`.
    pub sts_url: String,
    /// The role to assume, `arn:aws:iam::{account}:role/{name}`.
    pub role_arn: String,
    /// `RoleSessionName` (shown in the role's CloudTrail entries); empty = `credentialflow`.
    pub session_name: String,
    /// `DurationSeconds`, 900 to 43200; 0 = 3600.
    pub duration_s: u32,
    /// The signing region for an `sts_url` whose host is not an AWS STS host (the provider's
    /// region, typically).
    pub fallback_region: Option<String>,
}

/// The long-lived (or outer temporary) keys that sign the `AssumeRole` request, by reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseKeys {
    /// The access key id.
    pub access_key_id: SecretRef,
    /// Its secret access key.
    pub secret_access_key: SecretRef,
    /// The session token, when the base keys are themselves temporary.
    pub session_token: Option<SecretRef>,
}

/// The base keys as live values (a `file:` secret follows its file).
#[derive(Clone, Debug)]
struct LiveKeys {
    access_key_id: LiveSecret,
    secret_access_key: LiveSecret,
    session_token: Option<LiveSecret>,
}

/// One `AssumeRole` source's fetcher: checked settings and live base keys.
#[derive(Clone)]
pub struct AssumeRole {
    endpoint: Endpoint,
    region: String,
    role_arn: String,
    session_name: String,
    duration_s: u32,
    keys: LiveKeys,
    timeout: Duration,
}

impl std::fmt::Debug for AssumeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssumeRole")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("role_arn", &self.role_arn)
            .field("session_name", &self.session_name)
            .field("duration_s", &self.duration_s)
            .finish_non_exhaustive()
    }
}

impl Fetch for AssumeRole {
    type Credential = Credentials;

    fn fetch(&mut self) -> Result<Fetched<Credentials>, FetchError> {
        let key_id = self.keys.access_key_id.current();
        let secret = self.keys.secret_access_key.current();
        let token = self.keys.session_token.as_ref().map(LiveSecret::current);
        // The key id goes into the Authorization header: a rotated file holding anything
        // else is refused here, not sent.
        if !is_access_key_id(key_id.expose()) {
            return Err("the base access_key_id is not an AWS access key id".to_string());
        }
        let base = match &token {
            Some(token) => {
                if !is_header_safe(token.expose(), MAX_SESSION_TOKEN_BYTES) {
                    return Err("the base session_token cannot be sent in a header".to_string());
                }
                Credentials::with_session_token(key_id.expose(), secret.expose(), token.expose())
            }
            None => Credentials::new(key_id.expose(), secret.expose()),
        };
        let signer = Signer::new(base, &self.region, "sts", SigningOptions::default())
            .map_err(|e| e.to_string())?;
        let duration = self.duration_s.to_string();
        let body = form_encode(&[
            ("Action", "AssumeRole"),
            ("Version", API_VERSION),
            ("RoleArn", &self.role_arn),
            ("RoleSessionName", &self.session_name),
            ("DurationSeconds", &duration),
        ]);
        let url = self.endpoint.url();
        let path = url.request_target();
        let signed = [
            ("host", url.host_header()),
            ("content-type", FORM_CONTENT_TYPE),
        ];
        let signature = signer
            .sign(
                &Request {
                    method: "POST",
                    path: &path,
                    query: "",
                    headers: &signed,
                    payload: Payload::Body(body.as_bytes()),
                },
                crate::clock::unix_now_ms() / 1000,
            )
            .map_err(|e| e.to_string())?;
        let mut headers = vec![("Content-Type", FORM_CONTENT_TYPE), ("Accept", "text/xml")];
        headers.extend(signature.headers());
        let limits = Limits {
            timeout: self.timeout,
            max_body: MAX_RESPONSE_BYTES,
        };
        let response = self.endpoint.post(body.as_bytes(), &headers, limits)?;
        let sent: Vec<&str> = std::iter::once(secret.expose())
            .chain(token.as_ref().map(|t| t.expose()))
            .collect();
        credentials_from_response(
            response.status,
            &response.body,
            response.date.as_deref(),
            crate::clock::unix_now_ms() / 1000,
            &sent,
        )
    }

    fn describe(&self) -> String {
        format!(
            "sts AssumeRole {} at {}",
            self.role_arn,
            self.endpoint.url()
        )
    }
}

/// The temporary credentials in an STS answer, or why there are none. `date` is the answer's
/// `Date` header, `now_unix` the local clock (used without a usable `Date`); `sent` are the
/// secrets the request carried or was signed with, which no error message may repeat.
pub fn credentials_from_response(
    status: u16,
    body: &[u8],
    date: Option<&str>,
    now_unix: i64,
    sent: &[&str],
) -> Result<Fetched<Credentials>, FetchError> {
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(format!(
            "STS answered {status} with a body over {MAX_RESPONSE_BYTES} bytes"
        ));
    }
    if status != 200 {
        return Err(error_of(status, body, sent));
    }
    let leaves =
        xml::parse(body).map_err(|why| format!("STS answered 200 with unreadable XML: {why}"))?;
    const CREDENTIALS: &str = "AssumeRoleResponse/AssumeRoleResult/Credentials/";
    let field = |name: &str| {
        leaves
            .get(&format!("{CREDENTIALS}{name}"))
            .ok_or_else(|| format!("STS answered 200 without {name}"))
    };
    let access_key_id = field("AccessKeyId")?;
    let secret_access_key = field("SecretAccessKey")?;
    let session_token = field("SessionToken")?;
    let expiration = field("Expiration")?;
    if !is_access_key_id(access_key_id) {
        return Err("STS issued an AccessKeyId that is not an access key id".to_string());
    }
    if !is_header_safe(secret_access_key, MAX_SECRET_KEY_BYTES) {
        return Err(format!(
            "STS issued an unusable SecretAccessKey ({} bytes)",
            secret_access_key.len()
        ));
    }
    if !is_header_safe(session_token, MAX_SESSION_TOKEN_BYTES) {
        return Err(format!(
            "STS issued a SessionToken that cannot be sent in a header ({} bytes)",
            session_token.len()
        ));
    }
    let expires = expiration
        .trim()
        .parse::<jiff::Timestamp>()
        .map_err(|_| "STS sent an Expiration that is not an ISO 8601 time".to_string())?;
    let reference_ms = date
        .and_then(http_date_millis)
        .unwrap_or_else(|| now_unix.saturating_mul(1000));
    let left_ms = expires.as_millisecond().saturating_sub(reference_ms);
    if left_ms <= 0 {
        return Err(format!(
            "STS issued credentials that expired {}s before its answer",
            left_ms.unsigned_abs() / 1000
        ));
    }
    let lifetime = Duration::from_millis(left_ms.unsigned_abs()).min(MAX_LIFETIME);
    Ok(Fetched {
        credential: Credentials::with_session_token(
            access_key_id,
            secret_access_key,
            session_token,
        ),
        lifetime,
    })
}

/// Milliseconds since the epoch of an HTTP `Date` (IMF-fixdate, RFC 9110 §5.6.7; RFC 2822's
/// grammar, which jiff parses, covers it).
fn http_date_millis(date: &str) -> Option<i64> {
    static PARSER: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    PARSER
        .parse_timestamp(date.trim())
        .ok()
        .map(|t| t.as_millisecond())
}

/// The log line of an error answer: the status, and the `Code` and a safe first sentence of
/// the `Message` when the body is AWS's error XML.
fn error_of(status: u16, body: &[u8], sent: &[&str]) -> String {
    let Ok(leaves) = xml::parse(body) else {
        return format!("STS answered {status}");
    };
    let Some(code) = leaves
        .get("ErrorResponse/Error/Code")
        .filter(|code| is_error_code(code))
    else {
        return format!("STS answered {status}");
    };
    match leaves
        .get("ErrorResponse/Error/Message")
        .and_then(|message| safe_message(message, sent))
    {
        Some(message) => format!("STS answered {status} {code}: {message}"),
        None => format!("STS answered {status} {code}"),
    }
}

/// AWS error codes are words like `SignatureDoesNotMatch`; anything else may be an echo.
fn is_error_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_ERROR_CODE_BYTES
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The message's first sentence or line, printable ASCII, at most [`MAX_ERROR_MESSAGE_BYTES`];
/// `None` when it repeats [`LEAK_WINDOW`] bytes of any secret that was sent (or all of a
/// shorter one).
fn safe_message(message: &str, sent: &[&str]) -> Option<String> {
    let first = message
        .trim()
        .split_inclusive(['\n', '\r'])
        .next()
        .unwrap_or_default();
    let first = match first.find(". ") {
        Some(end) => &first[..=end],
        None => first,
    };
    let mut out: String = first
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .collect();
    out = out.trim().to_string();
    if out.len() > MAX_ERROR_MESSAGE_BYTES {
        out.truncate(MAX_ERROR_MESSAGE_BYTES);
        out.push_str("...");
    }
    let leaks = sent.iter().filter(|s| !s.is_empty()).any(|secret| {
        if secret.len() <= LEAK_WINDOW {
            message.contains(*secret)
        } else {
            secret
                .as_bytes()
                .windows(LEAK_WINDOW)
                .any(|w| memchr::memmem::find(message.as_bytes(), w).is_some())
        }
    });
    (!out.is_empty() && !leaks).then_some(out)
}

/// Access key ids are upper-case letters and digits (`AKIA...`, `ASIA...`).
fn is_access_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ACCESS_KEY_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Visible ASCII, non-empty, at most `max` bytes: fit for a header value and a MAC key.
fn is_header_safe(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && text.bytes().all(|b| b.is_ascii_graphic())
}

/// The region STS signatures for `host` are scoped to: `us-east-1` for the global endpoint,
/// the region of `sts.{region}.amazonaws.com` (and `sts-fips.`, and `.amazonaws.com.cn`),
/// else `fallback`.
pub fn region_for(host: &str, fallback: Option<&str>) -> Result<String, String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "sts.amazonaws.com" {
        return Ok(GLOBAL_REGION.to_string());
    }
    let regional = ["sts.", "sts-fips."]
        .iter()
        .find_map(|prefix| host.strip_prefix(prefix))
        .and_then(|rest| {
            rest.strip_suffix(".amazonaws.com")
                .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))
        })
        .filter(|region| is_region(region));
    match (regional, fallback.map(str::trim).filter(|r| !r.is_empty())) {
        (Some(region), _) => Ok(region.to_string()),
        (None, Some(region)) if is_region(region) => Ok(region.to_string()),
        (None, Some(_)) => Err("the region is not an AWS region name".to_string()),
        (None, None) => Err(format!(
            "{host} is not an AWS STS host, so the signing region must be given"
        )),
    }
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`: lower-case letters, digits and dashes.
fn is_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-')
}

/// Checks the settings alone (nothing resolved, nothing contacted): the endpoint and its
/// signing region, the role ARN, the session name and the duration. Returns the endpoint,
/// region, session name and duration to use.
fn checked(cfg: &AssumeRoleSettings) -> Result<(Endpoint, String, String, u32), String> {
    let endpoint = Endpoint::new(cfg.sts_url.trim()).map_err(|e| format!("sts_url: {e}"))?;
    if endpoint.url().query().is_some() {
        return Err("sts_url: must not have a query".to_string());
    }
    let region = region_for(endpoint.url().host(), cfg.fallback_region.as_deref())
        .map_err(|e| format!("sts_url: {e}"))?;
    let arn = cfg.role_arn.trim();
    // IAM: 20 to 2048 characters; `arn:partition:iam::account:role/name`.
    let arn_ok = (20..=2048).contains(&arn.len())
        && arn.starts_with("arn:")
        && arn.split(':').count() >= 6
        && arn.bytes().all(|b| b.is_ascii_graphic());
    if !arn_ok {
        return Err(
            "role_arn: must be a role ARN, as in arn:aws:iam::123456789012:role/name".into(),
        );
    }
    let session_name = match cfg.session_name.trim() {
        "" => DEFAULT_SESSION_NAME,
        name => name,
    };
    // STS: 2 to 64 characters of [\w+=,.@-].
    let name_ok = (2..=64).contains(&session_name.len())
        && session_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
    if !name_ok {
        return Err("session_name: 2 to 64 letters, digits or _+=,.@-".to_string());
    }
    let duration_s = match cfg.duration_s {
        0 => DEFAULT_DURATION_S,
        d => d,
    };
    if !DURATION_RANGE.contains(&duration_s) {
        return Err(format!(
            "duration_s: STS accepts {} to {} seconds",
            DURATION_RANGE.start(),
            DURATION_RANGE.end()
        ));
    }
    Ok((endpoint, region, session_name.to_string(), duration_s))
}

/// Checks `cfg` without resolving a secret or contacting anything (`credentialflow check`).
pub fn check(cfg: &AssumeRoleSettings) -> Result<(), String> {
    checked(cfg).map(|_| ())
}

/// An `AssumeRole` fetcher for `cfg`, signing with `base` (resolved and watched now).
pub fn settings(
    cfg: &AssumeRoleSettings,
    base: &BaseKeys,
    secrets: &SecretWatcher,
    timing: &SourceTiming,
) -> Result<AssumeRole, String> {
    let (endpoint, region, session_name, duration_s) = checked(cfg)?;
    let keys = LiveKeys {
        access_key_id: secrets
            .watch(&base.access_key_id)
            .map_err(|e| format!("access_key_id: {e}"))?,
        secret_access_key: secrets
            .watch(&base.secret_access_key)
            .map_err(|e| format!("secret_access_key: {e}"))?,
        session_token: base
            .session_token
            .as_ref()
            .map(|token| {
                secrets
                    .watch(token)
                    .map_err(|e| format!("session_token: {e}"))
            })
            .transpose()?,
    };
    if !is_access_key_id(keys.access_key_id.current().expose()) {
        return Err("access_key_id: is not an AWS access key id".to_string());
    }
    Ok(AssumeRole {
        endpoint,
        region,
        role_arn: cfg.role_arn.trim().to_string(),
        session_name,
        duration_s,
        keys,
        timeout: timing.fetch_timeout,
    })
}

/// What makes two sources the same: every setting, secrets by reference (a literal by a
/// digest of its value), hashed, so the key holds no secret.
pub fn settings_key(cfg: &AssumeRoleSettings, base: &BaseKeys) -> String {
    fn reference(secret: Option<&SecretRef>) -> String {
        match secret {
            None => "none".to_string(),
            Some(SecretRef::Env(name)) => format!("env:{name}"),
            Some(SecretRef::File(path)) => format!("file:{}", path.display()),
            Some(SecretRef::Literal(value)) => format!("literal:{}", value.expose()),
        }
    }
    let duration = cfg.duration_s.to_string();
    let mut digest = Sha256::new();
    for field in [
        "sts",
        cfg.sts_url.trim(),
        cfg.role_arn.trim(),
        cfg.session_name.trim(),
        &duration,
        cfg.fallback_region.as_deref().unwrap_or(""),
        &reference(Some(&base.access_key_id)),
        &reference(Some(&base.secret_access_key)),
        &reference(base.session_token.as_ref()),
    ] {
        // Length-prefixed, so no two different settings hash the same input.
        digest.update((field.len() as u64).to_be_bytes());
        digest.update(field.as_bytes());
    }
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The process's STS sources, shared by settings.
pub fn registry() -> &'static Registry<Credentials> {
    static REGISTRY: OnceLock<Registry<Credentials>> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// The running STS source for `cfg` and `base`, started on first use and shared with every
/// other holder of the same settings; `name` (the provider's) labels its metrics and logs.
pub fn shared_source(
    name: &str,
    cfg: &AssumeRoleSettings,
    base: &BaseKeys,
    secrets: &SecretWatcher,
    timing: SourceTiming,
) -> Result<Arc<AwsCredentialSource>, String> {
    let fetcher = settings(cfg, base, secrets, &timing)?;
    registry().get_or_start(settings_key(cfg, base), || {
        let stats = crate::metrics::global().credentials().register(name);
        CredentialSource::start(name, fetcher, timing, stats)
    })
}

/// A small XML reader for STS's answers: the text of every element without child elements,
/// by its path of local names (`AssumeRoleResponse/AssumeRoleResult/...`). Comments,
/// processing instructions and CDATA are understood; a document type declaration is refused
/// (with it, any entity expansion), as are entities other than XML's five and character
/// references.
mod xml {
    /// Deepest nesting accepted (STS's answers nest four deep).
    pub const MAX_DEPTH: usize = 16;
    /// Most elements accepted (an answer has about a dozen).
    pub const MAX_ELEMENTS: usize = 512;

    /// Leaf elements' texts, in document order.
    pub struct Leaves(Vec<(String, String)>);

    impl Leaves {
        /// The text of the first leaf at `path`.
        pub fn get(&self, path: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, text)| text.as_str())
        }
    }

    struct Open {
        name: String,
        text: String,
        has_children: bool,
    }

    /// Parses `doc`; the error says why in a few words, never quoting the document.
    pub fn parse(doc: &[u8]) -> Result<Leaves, &'static str> {
        let doc = std::str::from_utf8(doc).map_err(|_| "not UTF-8")?;
        let mut rest = doc.strip_prefix('\u{feff}').unwrap_or(doc);
        let mut stack: Vec<Open> = Vec::new();
        let mut leaves = Vec::new();
        let (mut elements, mut roots) = (0usize, 0usize);
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("<?") {
                rest = skip_past(after, "?>")?;
            } else if let Some(after) = rest.strip_prefix("<!--") {
                rest = skip_past(after, "-->")?;
            } else if let Some(after) = rest.strip_prefix("<![CDATA[") {
                let end = after.find("]]>").ok_or("unterminated CDATA")?;
                let open = stack.last_mut().ok_or("text outside the root element")?;
                open.text.push_str(&after[..end]);
                rest = &after[end + 3..];
            } else if rest.starts_with("<!") {
                return Err("document type declarations are refused");
            } else if let Some(after) = rest.strip_prefix("</") {
                let end = after.find('>').ok_or("unterminated end tag")?;
                let name = local(after[..end].trim_end());
                let open = stack.pop().ok_or("end tag without a start tag")?;
                if open.name != name {
                    return Err("mismatched end tag");
                }
                if !open.has_children {
                    leaves.push((path(&stack, &open.name), open.text));
                }
                rest = &after[end + 1..];
            } else if let Some(after) = rest.strip_prefix('<') {
                let (name, self_closing, after_tag) = start_tag(after)?;
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err("too many elements");
                }
                match stack.last_mut() {
                    Some(parent) => parent.has_children = true,
                    None => {
                        roots += 1;
                        if roots > 1 {
                            return Err("more than one root element");
                        }
                    }
                }
                if self_closing {
                    leaves.push((path(&stack, name), String::new()));
                } else {
                    if stack.len() >= MAX_DEPTH {
                        return Err("nested too deep");
                    }
                    stack.push(Open {
                        name: name.to_string(),
                        text: String::new(),
                        has_children: false,
                    });
                }
                rest = after_tag;
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                let text = &rest[..end];
                match stack.last_mut() {
                    Some(open) => decode_into(text, &mut open.text)?,
                    None if text.trim().is_empty() => {}
                    None => return Err("text outside the root element"),
                }
                rest = &rest[end..];
            }
        }
        if !stack.is_empty() {
            return Err("unclosed element");
        }
        if roots == 0 {
            return Err("no root element");
        }
        Ok(Leaves(leaves))
    }

    fn skip_past<'a>(text: &'a str, end: &str) -> Result<&'a str, &'static str> {
        text.find(end)
            .map(|at| &text[at + end.len()..])
            .ok_or("unterminated markup")
    }

    /// `name attr="v" ...>` or `.../>`: the name, whether it closes itself, and what follows.
    fn start_tag(text: &str) -> Result<(&str, bool, &str), &'static str> {
        let name_end = text
            .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
            .ok_or("unterminated start tag")?;
        let name = local(&text[..name_end]);
        if name.is_empty() {
            return Err("start tag without a name");
        }
        // Attributes are skipped, quotes honoured (a `>` may sit inside a value).
        let mut quote = None;
        for (i, c) in text[name_end..].char_indices() {
            let at = name_end + i;
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '<') => return Err("`<` inside a start tag"),
                (None, '>') => {
                    let self_closing = text[..at].ends_with('/');
                    return Ok((name, self_closing, &text[at + 1..]));
                }
                (None, _) => {}
            }
        }
        Err("unterminated start tag")
    }

    /// The name without its namespace prefix.
    fn local(name: &str) -> &str {
        name.rsplit(':').next().unwrap_or(name)
    }

    fn path(stack: &[Open], leaf: &str) -> String {
        let mut out = String::new();
        for open in stack {
            out.push_str(&open.name);
            out.push('/');
        }
        out.push_str(leaf);
        out
    }

    /// Appends `text` with its entity and character references decoded.
    fn decode_into(text: &str, out: &mut String) -> Result<(), &'static str> {
        let mut rest = text;
        while let Some(amp) = rest.find('&') {
            out.push_str(&rest[..amp]);
            let after = &rest[amp + 1..];
            let end = after
                .find(';')
                .filter(|&e| e <= 10)
                .ok_or("bad reference")?;
            let name = &after[..end];
            let c = match name {
                "lt" => '<',
                "gt" => '>',
                "amp" => '&',
                "quot" => '"',
                "apos" => '\'',
                _ => {
                    let code = if let Some(hex) = name.strip_prefix("#x") {
                        u32::from_str_radix(hex, 16).ok()
                    } else if let Some(dec) = name.strip_prefix('#') {
                        dec.parse::<u32>().ok()
                    } else {
                        return Err("entity other than XML's five");
                    };
                    code.and_then(char::from_u32)
                        .filter(|&c| c != '\0')
                        .ok_or("bad character reference")?
                }
            };
            out.push(c);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_ID: &str = "ASIAFAKEEXAMPLE12345";
    const SECRET: &str = "tmpSecret/K7MDENG+bPxRfiCYEXAMPLEKEY0001";
    const TOKEN: &str = "FwoGZXIvYXdzEXAMPLE//////////wEaDFAKE+token=";
    /// 2024-01-10T10:34:45Z.
    const DATE: &str = "Wed, 10 Jan 2024 10:34:45 GMT";
    const DATE_UNIX: i64 = 1_704_882_885;

    fn answer(credentials: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser>
      <AssumedRoleId>AROA3XFRBF535PLBIFPI4:credentialflow</AssumedRoleId>
      <Arn>arn:aws:sts::123456789012:assumed-role/gateway/credentialflow</Arn>
    </AssumedRoleUser>
    <Credentials>{credentials}</Credentials>
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleResponse>"#
        )
    }

    fn credentials_xml(expiration: &str) -> String {
        format!(
            "<AccessKeyId>{KEY_ID}</AccessKeyId><SecretAccessKey>{SECRET}</SecretAccessKey>\
             <SessionToken>{TOKEN}</SessionToken><Expiration>{expiration}</Expiration>"
        )
    }

    fn parse(body: &str, date: Option<&str>, now: i64) -> Result<Fetched<Credentials>, FetchError> {
        credentials_from_response(200, body.as_bytes(), date, now, &[])
    }

    #[test]
    fn an_answer_gives_its_credentials_with_the_lifetime_against_the_date_header() {
        let body = answer(&credentials_xml("2024-01-10T11:34:45Z"));
        // The local clock is 10 minutes behind the server's: the Date header wins.
        let fetched = parse(&body, Some(DATE), DATE_UNIX - 600).unwrap();
        assert_eq!(fetched.lifetime, Duration::from_secs(3600));
        assert_eq!(fetched.credential.access_key_id(), KEY_ID);
        assert!(fetched.credential.has_session_token());
        // Without a (usable) Date, the local clock.
        let fetched = parse(&body, None, DATE_UNIX - 600).unwrap();
        assert_eq!(fetched.lifetime, Duration::from_secs(4200));
        let fetched = parse(&body, Some("yesterday"), DATE_UNIX).unwrap();
        assert_eq!(fetched.lifetime, Duration::from_secs(3600));
        // Fractional seconds and a numeric offset are ISO 8601 too.
        let body = answer(&credentials_xml("2024-01-10T11:34:46.500+01:00"));
        let fetched = parse(&body, Some(DATE), 0).unwrap();
        assert_eq!(fetched.lifetime, Duration::from_millis(1500));
    }

    #[test]
    fn expired_or_overlong_lifetimes_are_refused_or_clamped() {
        let body = answer(&credentials_xml("2024-01-10T10:34:45Z"));
        let err = parse(&body, Some(DATE), 0).unwrap_err();
        assert!(err.contains("expired"), "{err}");
        let body = answer(&credentials_xml("2030-01-01T00:00:00Z"));
        assert_eq!(parse(&body, Some(DATE), 0).unwrap().lifetime, MAX_LIFETIME);
        let body = answer(&credentials_xml("in an hour"));
        let err = parse(&body, Some(DATE), 0).unwrap_err();
        assert!(err.contains("ISO 8601"), "{err}");
    }

    #[test]
    fn the_credentials_debug_shows_no_secret() {
        let body = answer(&credentials_xml("2024-01-10T11:34:45Z"));
        let fetched = parse(&body, Some(DATE), 0).unwrap();
        let shown = format!("{fetched:?}");
        assert!(!shown.contains(SECRET) && !shown.contains(TOKEN), "{shown}");
    }

    #[test]
    fn entities_and_cdata_are_decoded() {
        let leaves = xml::parse(
            b"<r:a xmlns:r='x'><b>a&amp;b&#x2B;c&#61;<![CDATA[d<e]]></b><c>x &lt;&gt;&quot;&apos; &#65;<!-- c --></c></r:a>",
        )
        .unwrap();
        assert_eq!(leaves.get("a/b"), Some("a&b+c=d<e"));
        assert_eq!(leaves.get("a/c"), Some("x <>\"' A"));
        // In an answer, a decoded key id is checked like any other.
        let xml = credentials_xml("2024-01-10T11:34:45Z").replace(KEY_ID, "ASIA&#65;&#x42;");
        let fetched = parse(&answer(&xml), Some(DATE), 0).unwrap();
        assert_eq!(fetched.credential.access_key_id(), "ASIAAB");
    }

    #[test]
    fn doctypes_unknown_entities_and_broken_documents_are_refused() {
        let bomb = format!(
            "<!DOCTYPE r [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]>{}",
            answer(&credentials_xml("2024-01-10T11:34:45Z")).replace(KEY_ID, "&b;")
        );
        for (body, why) in [
            (bomb.as_str(), "document type"),
            ("<a>&b;</a>", "entity"),
            ("<a>&#0;</a>", "character reference"),
            ("<a>&#xD800;</a>", "character reference"),
            ("<a>&amp</a>", "reference"),
            ("<a><b></a></b>", "mismatched"),
            ("<a>", "unclosed"),
            ("<a/><b/>", "more than one root"),
            ("text", "outside"),
            ("", "no root"),
            ("<a x='>'", "unterminated"),
        ] {
            let err = xml::parse(body.as_bytes())
                .err()
                .unwrap_or_else(|| panic!("{body}"));
            assert!(err.contains(why), "{body}: {err}");
        }
        let deep = "<a>".repeat(xml::MAX_DEPTH + 1) + &"</a>".repeat(xml::MAX_DEPTH + 1);
        assert_eq!(xml::parse(deep.as_bytes()).err(), Some("nested too deep"));
        let wide = format!("<a>{}</a>", "<b/>".repeat(xml::MAX_ELEMENTS));
        assert_eq!(xml::parse(wide.as_bytes()).err(), Some("too many elements"));
        assert_eq!(xml::parse(b"<a>\xff</a>").err(), Some("not UTF-8"));
    }

    #[test]
    fn missing_or_unusable_fields_are_refused_by_name() {
        let full = credentials_xml("2024-01-10T11:34:45Z");
        for field in [
            "AccessKeyId",
            "SecretAccessKey",
            "SessionToken",
            "Expiration",
        ] {
            let start = full.find(&format!("<{field}>")).unwrap();
            let end = full.find(&format!("</{field}>")).unwrap() + field.len() + 3;
            let without = format!("{}{}", &full[..start], &full[end..]);
            let err = parse(&answer(&without), Some(DATE), 0).unwrap_err();
            assert!(err.contains(field), "{field}: {err}");
        }
        for (from, to) in [(KEY_ID, "ASIA KEY"), (TOKEN, "tok en"), (SECRET, "")] {
            let body = answer(&full.replace(from, to));
            assert!(parse(&body, Some(DATE), 0).is_err(), "{to:?}");
        }
        let long_token = "t".repeat(MAX_SESSION_TOKEN_BYTES + 1);
        let body = answer(&full.replace(TOKEN, &long_token));
        let err = parse(&body, Some(DATE), 0).unwrap_err();
        assert!(
            err.contains("SessionToken") && !err.contains("ttt"),
            "{err}"
        );
        // Another answer shape (e.g. JSON) is not taken for credentials.
        let err = parse(r#"{"AssumeRoleResponse":{}}"#, Some(DATE), 0).unwrap_err();
        assert!(err.contains("XML"), "{err}");
    }

    #[test]
    fn an_oversized_body_is_refused_before_it_is_parsed() {
        let body = answer(&credentials_xml("2024-01-10T11:34:45Z"));
        let padded = format!("{body}{}", " ".repeat(MAX_RESPONSE_BYTES));
        let err = parse(&padded, Some(DATE), 0).unwrap_err();
        assert!(err.contains("over"), "{err}");
    }

    fn error_body(code: &str, message: &str) -> String {
        format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>1</RequestId></ErrorResponse>"
        )
    }

    #[test]
    fn an_error_answer_gives_its_code_and_a_safe_first_sentence() {
        let err = credentials_from_response(
            403,
            error_body(
                "AccessDenied",
                "User: arn:aws:iam::1:user/gw is not authorized to perform: sts:AssumeRole. More.",
            )
            .as_bytes(),
            None,
            0,
            &[SECRET],
        )
        .unwrap_err();
        assert_eq!(
            err,
            "STS answered 403 AccessDenied: User: arn:aws:iam::1:user/gw is not authorized to perform: sts:AssumeRole."
        );
        // A message quoting the canonical request (and in it the base session token) is
        // dropped, even when only a fragment of the token is quoted.
        let echo = format!(
            "Signature mismatch. Canonical: x-amz-security-token:{}",
            &TOKEN[..20]
        );
        let err = credentials_from_response(
            403,
            error_body("SignatureDoesNotMatch", &echo).as_bytes(),
            None,
            0,
            &[SECRET, TOKEN],
        )
        .unwrap_err();
        assert_eq!(err, "STS answered 403 SignatureDoesNotMatch");
        // A code that is not a code, an HTML page: the status only.
        let err = credentials_from_response(400, error_body(TOKEN, "x").as_bytes(), None, 0, &[])
            .unwrap_err();
        assert_eq!(err, "STS answered 400");
        let err = credentials_from_response(500, b"<html>oops", None, 0, &[]).unwrap_err();
        assert_eq!(err, "STS answered 500");
        // A long message is cut.
        let err = credentials_from_response(
            400,
            error_body("ValidationError", &"x".repeat(1000)).as_bytes(),
            None,
            0,
            &[],
        )
        .unwrap_err();
        assert!(err.len() < 260, "{err}");
    }

    #[test]
    fn the_signing_region_comes_from_the_host_or_the_fallback() {
        assert_eq!(
            region_for("sts.amazonaws.com", Some("eu-west-1")).unwrap(),
            "us-east-1"
        );
        assert_eq!(
            region_for("STS.eu-west-3.amazonaws.com", None).unwrap(),
            "eu-west-3"
        );
        assert_eq!(
            region_for("sts-fips.us-gov-west-1.amazonaws.com", None).unwrap(),
            "us-gov-west-1"
        );
        assert_eq!(
            region_for("sts.cn-north-1.amazonaws.com.cn", None).unwrap(),
            "cn-north-1"
        );
        assert_eq!(
            region_for("127.0.0.1", Some("us-west-2")).unwrap(),
            "us-west-2"
        );
        assert!(region_for("127.0.0.1", None).is_err());
        assert!(region_for("vpce.example", Some("us/west")).is_err());
    }

    fn cfg() -> AssumeRoleSettings {
        AssumeRoleSettings {
            sts_url: "https://sts.amazonaws.com".into(),
            role_arn: "arn:aws:iam::123456789012:role/gateway".into(),
            session_name: String::new(),
            duration_s: 0,
            fallback_region: None,
        }
    }

    #[test]
    fn settings_are_checked_and_defaulted_without_contacting_anything() {
        let (endpoint, region, name, duration) = checked(&cfg()).unwrap();
        assert_eq!(endpoint.url().request_target(), "/");
        assert_eq!(
            (region.as_str(), name.as_str(), duration),
            ("us-east-1", DEFAULT_SESSION_NAME, DEFAULT_DURATION_S)
        );
        let bad = [
            AssumeRoleSettings {
                sts_url: "ftp://sts.amazonaws.com".into(),
                ..cfg()
            },
            AssumeRoleSettings {
                sts_url: "https://sts.amazonaws.com/?Action=x".into(),
                ..cfg()
            },
            AssumeRoleSettings {
                sts_url: "http://127.0.0.1:9".into(),
                ..cfg()
            },
            AssumeRoleSettings {
                role_arn: "gateway".into(),
                ..cfg()
            },
            AssumeRoleSettings {
                session_name: "has space".into(),
                ..cfg()
            },
            AssumeRoleSettings {
                session_name: "x".repeat(65),
                ..cfg()
            },
            AssumeRoleSettings {
                duration_s: 60,
                ..cfg()
            },
            AssumeRoleSettings {
                duration_s: 43201,
                ..cfg()
            },
        ];
        for settings in bad {
            assert!(check(&settings).is_err(), "{settings:?}");
        }
    }

    #[test]
    fn settings_key_tells_settings_apart_without_holding_a_secret() {
        let base = |secret: &str| BaseKeys {
            access_key_id: SecretRef::parse("env:AWS_ACCESS_KEY_ID").unwrap(),
            secret_access_key: SecretRef::parse(secret).unwrap(),
            session_token: None,
        };
        let a = settings_key(&cfg(), &base("literal-secret-one"));
        assert_eq!(a, settings_key(&cfg(), &base("literal-secret-one")));
        assert_ne!(a, settings_key(&cfg(), &base("literal-secret-two")));
        let other_role = AssumeRoleSettings {
            role_arn: "arn:aws:iam::123456789012:role/other".into(),
            ..cfg()
        };
        assert_ne!(a, settings_key(&other_role, &base("literal-secret-one")));
        let with_token = BaseKeys {
            session_token: Some(SecretRef::parse("env:T").unwrap()),
            ..base("literal-secret-one")
        };
        assert_ne!(a, settings_key(&cfg(), &with_token));
        assert!(!a.contains("literal-secret-one"));
        assert!(!format!("{:?}", base("literal-secret-one")).contains("literal-secret-one"));
    }
}
