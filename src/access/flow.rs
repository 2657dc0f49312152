//! The steps of an access request, over any [`KeyBackend`]: submit (with the policy's
//! verdict), approve (minting the key), deny, claim (issuing the key's secret once) and
//! expire. The admin API and the CLI both call these, so both follow the same rules and
//! leave the same audit trail:
//!
//! | step | audit action | actor |
//! |---|---|---|
//! | submit | `access.request` | the requester |
//! | policy approval | `access.auto_approve` (+ the key's `create`) | `policy` |
//! | approval | `access.approve` (+ the key's `create`) | the approver |
//! | denial | `access.deny` | the approver |
//! | claim | `access.claim` (+ the key's `rotate`) | the requester |
//! | expiry of an unclaimed approval | `access.expire` | `system` |
//! | expiry of a request undecided for [`super::PENDING_TTL`] | `access.expire` | `system` |
//!
//! Submit, approval (by a person or a policy) and denial also queue the webhook events
//! `access.requested`, `access.approved` and `access.denied` once the step is stored, so
//! every caller (admin API, self-service, policy, CLI) sends them alike; the minted key's
//! `key.created` is queued by the key store itself.
//!
//! Times are passed in (`now_ms`, unix milliseconds) so tests can move them.

use zeroize::Zeroize;

use super::policy::{self, Verdict};
use super::{
    check_text, AccessRequest, AccessStatus, ClaimToken, FieldError, NewAccessRequest,
    MAX_PENDING_PER_REQUESTER, MAX_REASON,
};
use crate::config::AccessPolicyConfig;
use crate::store::{KeyBackend, KeyRecord, StoreError};
use crate::webhook::{self, AccessEvent, AccessEventInfo};

/// Who approves a request a policy let through, in the record and the audit log.
pub const POLICY_ACTOR: &str = "policy";
/// Who expires an unclaimed approval.
pub const SYSTEM_ACTOR: &str = "system";
/// The actor the admin token acts as: one shared credential, so not a person, and never
/// counted as the requester of a request it approves.
pub const ADMIN_ACTOR: &str = "admin";
/// Longest claim token looked at; a longer one cannot be ours.
const MAX_CLAIM_TOKEN: usize = 128;

/// Who is asking for access.
#[derive(Clone, Debug, PartialEq)]
pub enum Requester {
    /// The admin token or an operator's CLI (`admin`, `cli:<user>`): may ask for any team.
    Operator(String),
    /// A key holding scope `access:request`, asking for itself: its team only.
    Key { id: String, team: String },
}

impl Requester {
    /// The name recorded as the request's requester and in the audit log.
    pub fn name(&self) -> &str {
        match self {
            Requester::Operator(name) => name,
            Requester::Key { id, .. } => id,
        }
    }
}

/// Why a step was refused.
#[derive(Debug)]
pub enum AccessError {
    /// A field is out of bounds or malformed (400).
    Invalid(FieldError),
    /// The team's policy refuses the ttl; the message says the limit (422).
    Policy(String),
    /// The caller may not do this (403): another team, or approving their own request.
    Forbidden(String),
    /// No request has this id (404).
    NotFound,
    /// The request was already decided (409).
    AlreadyDecided(AccessStatus),
    /// The request is still pending; there is nothing to claim yet (409).
    NotApproved,
    /// The claim token is wrong, or names no request (403; the two are not told apart).
    ClaimRefused,
    /// The key was claimed, denied, expired or revoked: it cannot be claimed (410).
    Gone(&'static str),
    /// The requester has too many pending requests (429).
    TooManyPending,
    /// The store failed or refused the write.
    Store(StoreError),
}

impl From<StoreError> for AccessError {
    fn from(e: StoreError) -> Self {
        AccessError::Store(e)
    }
}

impl From<FieldError> for AccessError {
    fn from(e: FieldError) -> Self {
        AccessError::Invalid(e)
    }
}

impl std::fmt::Display for AccessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessError::Invalid(e) => write!(f, "{e}"),
            AccessError::Policy(message) | AccessError::Forbidden(message) => f.write_str(message),
            AccessError::NotFound => f.write_str("no such access request"),
            AccessError::AlreadyDecided(status) => {
                write!(f, "the request is already {}", status.as_str())
            }
            AccessError::NotApproved => f.write_str("the request is not approved yet"),
            AccessError::ClaimRefused => f.write_str("invalid claim token"),
            AccessError::Gone(why) => write!(f, "nothing to claim: {}", why.replace('_', " ")),
            AccessError::TooManyPending => write!(
                f,
                "at most {MAX_PENDING_PER_REQUESTER} pending requests per requester"
            ),
            AccessError::Store(e) => write!(f, "{e}"),
        }
    }
}

/// A stored request and its claim token (shown once, in the answer that created it), with
/// the key a policy minted at once, if it did.
pub struct Submitted {
    pub request: AccessRequest,
    pub claim_token: ClaimToken,
    pub minted: Option<KeyRecord>,
}

/// Stores a request from `requester`, judged by `policies`: refused beyond the team's
/// `max_ttl`, approved at once inside its `auto_approve` envelope, else pending.
pub fn submit(
    store: &mut dyn KeyBackend,
    mut new: NewAccessRequest,
    requester: &Requester,
    policies: &[AccessPolicyConfig],
    now_ms: i64,
) -> Result<Submitted, AccessError> {
    if let Requester::Key { team, .. } = requester {
        if new.team.is_empty() {
            new.team.clone_from(team);
        } else if &new.team != team {
            return Err(AccessError::Forbidden(format!(
                "a key may only request access for its own team ({team:?})"
            )));
        }
    }
    let ttl = new.check()?;
    let verdict = policy::judge(policies, &new, ttl);
    if let Verdict::Refused(message) = verdict {
        return Err(AccessError::Policy(message));
    }
    // Stale requests expire first: they no longer count against the requester.
    let mut pending = 0;
    for request in store.access_list(Some(AccessStatus::Pending))? {
        if request.requester != requester.name() {
            continue;
        }
        if request.is_stale_at_ms(now_ms) {
            expire(store, &request, AccessStatus::Pending)?;
        } else {
            pending += 1;
        }
    }
    if pending >= MAX_PENDING_PER_REQUESTER {
        return Err(AccessError::TooManyPending);
    }
    let (mut request, claim_token) = AccessRequest::new(
        new,
        requester.name(),
        store.pepper(),
        now_ms.div_euclid(1000),
    );
    store.access_insert(&request, requester.name())?;
    announce(store, AccessEvent::Requested, &request, requester.name());
    let mut minted = None;
    if let Verdict::AutoApprove { budget_usd } = verdict {
        request.limits.budget_usd = budget_usd;
        let (approved, key) = approve_as(
            store,
            request,
            POLICY_ACTOR,
            None,
            "access.auto_approve",
            now_ms,
        )?;
        request = approved;
        minted = Some(key);
    }
    Ok(Submitted {
        request,
        claim_token,
        minted,
    })
}

/// Approves pending request `id` as `approver` with `note`: mints its key, which expires
/// `ttl` from now. A requester cannot approve their own request (when the approver is a
/// named identity, not the shared admin token).
pub fn approve(
    store: &mut dyn KeyBackend,
    id: &str,
    approver: &str,
    note: Option<String>,
    now_ms: i64,
) -> Result<(AccessRequest, KeyRecord), AccessError> {
    check_note(note.as_deref())?;
    let request = pending(store, id, now_ms)?;
    if request.requester == approver && approver != ADMIN_ACTOR {
        return Err(AccessError::Forbidden(
            "the requester cannot approve their own request; another approver must".into(),
        ));
    }
    approve_as(store, request, approver, note, "access.approve", now_ms)
}

/// Denies pending request `id` as `approver` with `note`; nothing is minted.
pub fn deny(
    store: &mut dyn KeyBackend,
    id: &str,
    approver: &str,
    note: Option<String>,
    now_ms: i64,
) -> Result<AccessRequest, AccessError> {
    check_note(note.as_deref())?;
    let request = pending(store, id, now_ms)?;
    let mut after = request;
    after.status = AccessStatus::Denied;
    after.decided_by = Some(approver.to_owned());
    after.note = note;
    after.decided_at = Some(now_ms.div_euclid(1000));
    if !store.access_transition(AccessStatus::Pending, &after, "access.deny", approver)? {
        return Err(decided_meanwhile(store, id));
    }
    announce(store, AccessEvent::Denied, &after, approver);
    Ok(after)
}

/// Claims approved request `id` with `token`: the request becomes `claimed` and its key is
/// given a fresh secret, returned once with the key. A wrong token, or an id that names no
/// request, is refused alike.
pub fn claim(
    store: &mut dyn KeyBackend,
    id: &str,
    token: &str,
    now_ms: i64,
) -> Result<(AccessRequest, KeyRecord, String), AccessError> {
    if token.is_empty() || token.len() > MAX_CLAIM_TOKEN || id.len() > MAX_CLAIM_TOKEN {
        return Err(AccessError::ClaimRefused);
    }
    let request = store.access_get(id)?.ok_or(AccessError::ClaimRefused)?;
    if !ClaimToken::from_presented(token).matches(store.pepper(), &request.claim_hash) {
        return Err(AccessError::ClaimRefused);
    }
    // Only the token's holder gets this far: what follows may say what became of it.
    match request.status {
        AccessStatus::Pending if request.is_stale_at_ms(now_ms) => {
            expire(store, &request, AccessStatus::Pending)?;
            return Err(AccessError::Gone("expired"));
        }
        AccessStatus::Pending => return Err(AccessError::NotApproved),
        AccessStatus::Denied => return Err(AccessError::Gone("denied")),
        AccessStatus::Claimed => return Err(AccessError::Gone("already_claimed")),
        AccessStatus::Expired => return Err(AccessError::Gone("expired")),
        AccessStatus::Approved => {}
    }
    if request.expires_at_ms.is_some_and(|at| at <= now_ms) {
        expire(store, &request, AccessStatus::Approved)?;
        return Err(AccessError::Gone("expired"));
    }
    let key_id = request.key_id.clone().ok_or(AccessError::Gone("expired"))?;
    match store.get(&key_id)? {
        Some(key) if key.revoked_at.is_none() => {}
        _ => return Err(AccessError::Gone("key_revoked")),
    }
    let mut after = request;
    after.status = AccessStatus::Claimed;
    after.claimed_at = Some(now_ms.div_euclid(1000));
    let actor = after.requester.clone();
    // Claimed first, secret second: of two racing claims only one passes this line.
    if !store.access_transition(AccessStatus::Approved, &after, "access.claim", &actor)? {
        return Err(AccessError::Gone("already_claimed"));
    }
    let (key, secret) = store.rotate(&key_id, std::time::Duration::ZERO, &actor)?;
    Ok((after, key, secret))
}

/// Every request (or those in `status`), after expiring unclaimed approvals whose key has
/// expired by `now_ms` and requests left undecided for [`super::PENDING_TTL`].
pub fn list(
    store: &mut dyn KeyBackend,
    status: Option<AccessStatus>,
    now_ms: i64,
) -> Result<Vec<AccessRequest>, AccessError> {
    expire_due(store, now_ms)?;
    Ok(store.access_list(status)?)
}

/// Marks as `expired` every approved, unclaimed request whose key has expired by `now_ms`,
/// and every pending one created [`super::PENDING_TTL`] or longer before it. Returns how many it
/// marked.
pub fn expire_due(store: &mut dyn KeyBackend, now_ms: i64) -> Result<usize, AccessError> {
    let mut expired = 0;
    for request in store.access_list(Some(AccessStatus::Approved))? {
        if request.expires_at_ms.is_some_and(|at| at <= now_ms)
            && expire(store, &request, AccessStatus::Approved)?
        {
            expired += 1;
        }
    }
    for request in store.access_list(Some(AccessStatus::Pending))? {
        if request.is_stale_at_ms(now_ms) && expire(store, &request, AccessStatus::Pending)? {
            expired += 1;
        }
    }
    Ok(expired)
}

/// Moves `request` from `from` to `expired`, audited as `system`; false when another step
/// moved it first.
fn expire(
    store: &mut dyn KeyBackend,
    request: &AccessRequest,
    from: AccessStatus,
) -> Result<bool, AccessError> {
    let mut after = request.clone();
    after.status = AccessStatus::Expired;
    Ok(store.access_transition(from, &after, "access.expire", SYSTEM_ACTOR)?)
}

/// Mints `request`'s key and records the approval by `approver` as `action`. If another
/// step decided the request first, the key just minted is revoked again.
fn approve_as(
    store: &mut dyn KeyBackend,
    request: AccessRequest,
    approver: &str,
    note: Option<String>,
    action: &str,
    now_ms: i64,
) -> Result<(AccessRequest, KeyRecord), AccessError> {
    let (key, mut secret) = store.create(request.key_to_mint(), approver)?;
    // Nobody sees this secret: the claim issues a fresh one (see the module doc).
    secret.zeroize();
    let mut after = request;
    after.status = AccessStatus::Approved;
    after.decided_by = Some(approver.to_owned());
    after.note = note;
    after.decided_at = Some(now_ms.div_euclid(1000));
    after.expires_at_ms = key.expires_at_ms;
    after.key_id = Some(key.id.clone());
    if !store.access_transition(AccessStatus::Pending, &after, action, approver)? {
        store.revoke(&key.id, approver)?;
        return Err(decided_meanwhile(store, &after.id));
    }
    announce(store, AccessEvent::Approved, &after, approver);
    Ok((after, key))
}

/// The pending request `id`, or why it cannot be decided (one left undecided for
/// [`super::PENDING_TTL`] expires here).
fn pending(
    store: &mut dyn KeyBackend,
    id: &str,
    now_ms: i64,
) -> Result<AccessRequest, AccessError> {
    let request = store.access_get(id)?.ok_or(AccessError::NotFound)?;
    if request.status != AccessStatus::Pending {
        return Err(AccessError::AlreadyDecided(request.status));
    }
    if request.is_stale_at_ms(now_ms) {
        if !expire(store, &request, AccessStatus::Pending)? {
            return Err(decided_meanwhile(store, id));
        }
        return Err(AccessError::AlreadyDecided(AccessStatus::Expired));
    }
    Ok(request)
}

/// Queues the webhook event of a step `actor` made on `request`, now stored. The step
/// stands whatever becomes of its event: a store that cannot queue it is logged, not
/// reported to the caller as a failed approval.
fn announce(store: &mut dyn KeyBackend, kind: AccessEvent, request: &AccessRequest, actor: &str) {
    let event = webhook::access_event(
        kind,
        AccessEventInfo {
            request_id: &request.id,
            name: &request.name,
            team: &request.team,
            actor,
            requester: &request.requester,
            status: request.status.as_str(),
            decided_by: request.decided_by.as_deref(),
            note: request.note.as_deref(),
            reason: Some(&request.reason),
            key_id: request.key_id.as_deref(),
            expires_at: request.expires_at_ms.map(|ms| ms.div_euclid(1000)),
        },
    );
    if let Err(e) = webhook::emit(store, &event) {
        log::error!(
            "webhook event {} for access request {} not queued: {e}",
            kind.as_str(),
            request.id
        );
    }
}

/// The error for a request another step decided between our read and our write.
fn decided_meanwhile(store: &mut dyn KeyBackend, id: &str) -> AccessError {
    match store.access_get(id) {
        Ok(Some(current)) => AccessError::AlreadyDecided(current.status),
        Ok(None) => AccessError::NotFound,
        Err(e) => AccessError::Store(e),
    }
}

fn check_note(note: Option<&str>) -> Result<(), AccessError> {
    if let Some(note) = note {
        check_text("note", note, MAX_REASON)?;
    }
    Ok(())
}
