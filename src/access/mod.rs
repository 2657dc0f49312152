//! Just-in-time access: requests for a key, their approval (by a person or a policy), and
//! the one-time claim of the key they mint (README, "Just-in-time access").
//!
//! - [`AccessRequest`]: one request as stored, its [`AccessStatus`] and its bounds
//!   ([`NewAccessRequest::check`]: every field a requester controls is bounded here).
//! - [`policy`]: `[[access_policy]]`, which refuses a ttl beyond a team's `max_ttl` and
//!   approves requests inside its `auto_approve` envelope at once.
//! - [`flow`]: the steps (submit, approve, deny, claim, expire) over any
//!   [`crate::store::KeyBackend`], shared by the admin API and the CLI.
//!
//! How the secret is shown exactly once and never stored: approval mints the key at once
//! (so it is listed, revocable, and expires `ttl` after approval whether claimed or not), and
//! the secret drawn at creation is discarded unseen. The claim then rotates the key with no
//! grace: the store draws a fresh secret, keeps only its hash, and the claim answer carries
//! the secret, once. The claim token itself is kept only as an HMAC under the store's
//! pepper, compared in constant time; the request moves to `claimed` before the secret is
//! drawn, so a second claim (or two racing ones) finds it gone.

pub mod flow;
pub mod policy;

use serde::{Deserialize, Serialize};

use crate::clock::parse_duration;
use crate::store::ids::new_secret;
use crate::store::{NewKey, Pepper};

/// Longest `reason` or `note`, in bytes: a sentence or two, not a document.
pub const MAX_REASON: usize = 1024;
/// Most entries in a request's `models`, `routes` or `scopes`.
pub const MAX_LIST: usize = 64;
/// Longest name, team, glob or scope, in bytes (the key store's own bound).
pub const MAX_TEXT: usize = 256;
/// Longest ttl any request may ask for, whatever the policy: a just-in-time key is short-lived.
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(90 * 86_400);
/// Most requests one requester may have pending at once: a self-service key cannot fill
/// the store with requests.
pub const MAX_PENDING_PER_REQUESTER: usize = 20;
/// How long a request waits for a decision before it expires: a week covers a weekend and
/// an approver's days off, and a request nobody decided on in that time is stale (its
/// reason no longer current), so it no longer counts against its requester's pending ones
/// and can no longer be approved. Expired lazily, whenever requests are listed or decided.
pub const PENDING_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// Where a request is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessStatus {
    /// Waiting for a decision.
    Pending,
    /// Approved: its key is minted and waits to be claimed.
    Approved,
    /// Refused; nothing was minted.
    Denied,
    /// Its key's secret has been handed out (once).
    Claimed,
    /// Approved but not claimed before its key expired, or pending and not decided within
    /// [`PENDING_TTL`].
    Expired,
}

impl AccessStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessStatus::Pending => "pending",
            AccessStatus::Approved => "approved",
            AccessStatus::Denied => "denied",
            AccessStatus::Claimed => "claimed",
            AccessStatus::Expired => "expired",
        }
    }

    /// The status named `text`, if it is one.
    pub fn parse(text: &str) -> Option<AccessStatus> {
        [
            AccessStatus::Pending,
            AccessStatus::Approved,
            AccessStatus::Denied,
            AccessStatus::Claimed,
            AccessStatus::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// The limits a request asks its key to carry, as `NewKey` has them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyLimits {
    pub rps: Option<f64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrency: Option<u32>,
    pub budget_usd: Option<f64>,
    pub budget_tokens: Option<u64>,
    /// `day`, `month` or `total`.
    pub budget_period: Option<String>,
}

/// What a requester asks for (the body of `POST /admin/access-requests`, the flags of
/// `access request`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewAccessRequest {
    /// The minted key's name.
    pub name: String,
    pub team: String,
    pub models: Vec<String>,
    pub routes: Vec<String>,
    pub scopes: Vec<String>,
    /// Globs of the exposed MCP tools the key may use (empty = all), bounded as a key's.
    /// A request naming any waits for a person: no policy envelope bounds tools.
    pub mcp_tools: Vec<String>,
    pub limits: KeyLimits,
    /// How long the key lives after approval (`8h`).
    pub ttl: String,
    /// Why the access is needed; shown to the approver and kept in the record.
    pub reason: String,
}

/// A field a requester sent that is out of bounds: the field, as the API names it, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    fn new(field: &'static str, message: impl Into<String>) -> FieldError {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl NewAccessRequest {
    /// Checks every field against its bound and returns the ttl. Errors name the field.
    pub fn check(&self) -> Result<std::time::Duration, FieldError> {
        if self.name.trim().is_empty() {
            return Err(FieldError::new("name", "is required"));
        }
        check_text("name", &self.name, MAX_TEXT)?;
        check_text("team", &self.team, MAX_TEXT)?;
        for (field, list) in [
            ("models", &self.models),
            ("routes", &self.routes),
            ("scopes", &self.scopes),
        ] {
            if list.len() > MAX_LIST {
                return Err(FieldError::new(
                    field,
                    format!("at most {MAX_LIST} entries"),
                ));
            }
            for item in list {
                if item.trim().is_empty() {
                    return Err(FieldError::new(field, "entries must not be empty"));
                }
                check_text(field, item, MAX_TEXT)?;
            }
        }
        crate::store::rules::check_mcp_tools(&self.mcp_tools)
            .map_err(|message| FieldError::new("mcp_tools", message))?;
        let limits = &self.limits;
        for (field, value) in [("rps", limits.rps), ("budget_usd", limits.budget_usd)] {
            if value.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err(FieldError::new(field, "must be a number >= 0"));
            }
        }
        for (field, value) in [
            ("rpm", limits.rpm),
            ("tpm", limits.tpm),
            ("budget_tokens", limits.budget_tokens),
        ] {
            if value.is_some_and(|v| v > i64::MAX as u64) {
                return Err(FieldError::new(field, "is too large"));
            }
        }
        if let Some(period) = &limits.budget_period {
            if !matches!(period.as_str(), "day" | "month" | "total") {
                return Err(FieldError::new(
                    "budget_period",
                    "must be \"day\", \"month\" or \"total\"",
                ));
            }
        }
        if self.reason.trim().is_empty() {
            return Err(FieldError::new(
                "reason",
                "is required: say why access is needed",
            ));
        }
        check_text("reason", &self.reason, MAX_REASON)?;
        if self.ttl.trim().is_empty() {
            return Err(FieldError::new(
                "ttl",
                "is required (a duration like \"8h\")",
            ));
        }
        let ttl = parse_duration(&self.ttl).map_err(|e| FieldError::new("ttl", e))?;
        if ttl < std::time::Duration::from_secs(1) {
            return Err(FieldError::new("ttl", "must be at least 1s"));
        }
        if ttl > MAX_TTL {
            return Err(FieldError::new("ttl", "must be at most 90d"));
        }
        Ok(ttl)
    }
}

/// Bounds a text a requester or approver sent: at most `max` bytes, no control characters
/// (it ends up in logs, terminals and the audit log).
pub fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), FieldError> {
    if text.len() > max {
        return Err(FieldError::new(field, format!("at most {max} bytes")));
    }
    if text.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// One access request as stored. Its serde form (admin API, CLI `--json`) has no claim
/// token or hash in it; the token is shown only in the answer that creates the request.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRequest {
    /// `req_` and 20 random lowercase base32 characters.
    pub id: String,
    pub name: String,
    pub team: String,
    pub models: Vec<String>,
    pub routes: Vec<String>,
    pub scopes: Vec<String>,
    /// The MCP tool globs the minted key gets. A request stored before requests had them
    /// reads as empty (every tool), which is what its key got.
    #[serde(default)]
    pub mcp_tools: Vec<String>,
    #[serde(flatten)]
    pub limits: KeyLimits,
    /// The key's lifetime after approval, as asked (`8h`).
    pub ttl: String,
    pub reason: String,
    /// Who asked: `admin`, `cli:<user>`, or the id of the key that asked for itself.
    pub requester: String,
    pub status: AccessStatus,
    /// Who decided: `admin`, `cli:<user>`, a key id, or `policy`.
    pub decided_by: Option<String>,
    /// The approver's note.
    pub note: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub decided_at: Option<i64>,
    pub claimed_at: Option<i64>,
    /// When the minted key stops working, in unix milliseconds; shown as `expires_at` in
    /// unix seconds like every other time.
    #[serde(rename = "expires_at", with = "unix_seconds")]
    pub expires_at_ms: Option<i64>,
    /// The minted key's id (set on approval).
    pub key_id: Option<String>,
    /// HMAC-SHA256(pepper, claim token); never the token.
    #[serde(skip)]
    pub claim_hash: [u8; 32],
}

impl std::fmt::Debug for AccessRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The claim hash stays out of logs and panic messages, like key hashes.
        f.debug_struct("AccessRequest")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("team", &self.team)
            .field("status", &self.status)
            .field("requester", &self.requester)
            .field("decided_by", &self.decided_by)
            .field("key_id", &self.key_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

impl AccessRequest {
    /// A new pending request from `new` by `requester`, created at `now` (unix seconds),
    /// with the claim token whose hash it keeps.
    pub fn new(
        new: NewAccessRequest,
        requester: &str,
        pepper: &Pepper,
        now: i64,
    ) -> (AccessRequest, ClaimToken) {
        let token = ClaimToken::generate();
        let request = AccessRequest {
            id: new_request_id(),
            name: new.name,
            team: new.team,
            models: new.models,
            routes: new.routes,
            scopes: new.scopes,
            mcp_tools: new.mcp_tools,
            limits: new.limits,
            ttl: new.ttl,
            reason: new.reason,
            requester: requester.to_owned(),
            status: AccessStatus::Pending,
            decided_by: None,
            note: None,
            created_at: now,
            decided_at: None,
            claimed_at: None,
            expires_at_ms: None,
            key_id: None,
            claim_hash: token.hash(pepper),
        };
        (request, token)
    }

    /// Whether the request is pending and has waited [`PENDING_TTL`] or longer by `now_ms`.
    pub fn is_stale_at_ms(&self, now_ms: i64) -> bool {
        let waited_ms = now_ms.saturating_sub(self.created_at.saturating_mul(1000));
        self.status == AccessStatus::Pending && waited_ms >= PENDING_TTL.as_millis() as i64
    }

    /// The key the request asks for: bounded by it in every field, named after it, expiring
    /// `ttl` after it is created, and tagged with the request's id.
    pub fn key_to_mint(&self) -> NewKey {
        let mut metadata = serde_json::Map::new();
        metadata.insert("access_request".into(), self.id.clone().into());
        NewKey {
            name: self.name.clone(),
            team: self.team.clone(),
            models: self.models.clone(),
            routes: self.routes.clone(),
            scopes: self.scopes.clone(),
            mcp_tools: self.mcp_tools.clone(),
            rps: self.limits.rps,
            rpm: self.limits.rpm,
            tpm: self.limits.tpm,
            max_concurrency: self.limits.max_concurrency,
            budget_usd: self.limits.budget_usd,
            budget_tokens: self.limits.budget_tokens,
            budget_period: self.limits.budget_period.clone(),
            expires_in: Some(self.ttl.clone()),
            metadata,
        }
    }
}

/// A new request id: `req_` and 20 lowercase base32 characters (100 random bits).
fn new_request_id() -> String {
    let key_id = crate::store::ids::new_key_id();
    format!("req_{}", &key_id["key_".len()..])
}

/// The one-time credential that claims an approved request's key.
pub struct ClaimToken(zeroize::Zeroizing<String>);

/// What every claim token starts with, so it is not mistaken for a key (`cf_`).
pub const CLAIM_TOKEN_PREFIX: &str = "cfclaim_";

impl ClaimToken {
    /// A new token: the prefix and 256 random bits.
    pub fn generate() -> ClaimToken {
        // A key secret's alphabet and strength, under its own prefix.
        let secret = new_secret();
        let body = secret.trim_start_matches(crate::store::ids::SECRET_PREFIX);
        ClaimToken(zeroize::Zeroizing::new(format!(
            "{CLAIM_TOKEN_PREFIX}{body}"
        )))
    }

    /// The token as presented.
    pub fn from_presented(text: &str) -> ClaimToken {
        ClaimToken(zeroize::Zeroizing::new(text.to_owned()))
    }

    /// The token's text, to show once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// HMAC-SHA256 under `pepper`, domain-separated from key hashes so a claim token's hash
    /// can never match a key's.
    pub fn hash(&self, pepper: &Pepper) -> [u8; 32] {
        let mut input = zeroize::Zeroizing::new(Vec::with_capacity(self.0.len() + 16));
        input.extend_from_slice(b"access-claim\0");
        input.extend_from_slice(self.0.as_bytes());
        pepper.hash(&input)
    }

    /// Whether this token is the one whose hash `stored` is, in constant time.
    pub fn matches(&self, pepper: &Pepper, stored: &[u8; 32]) -> bool {
        crate::admin::constant_time_eq(&self.hash(pepper), stored)
    }
}

/// The JSON form of millisecond instants: unix seconds, rounded down.
mod unix_seconds {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => serializer.serialize_some(&ms.div_euclid(1000)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        Ok(Option::<i64>::deserialize(deserializer)?.map(|s| s.saturating_mul(1000)))
    }
}

#[cfg(test)]
mod tests;
