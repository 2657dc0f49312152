//! [`Link`]: the one thread (`cf-cluster`) that talks to the fleet's Redis.
//!
//! It owns the connection; nobody else touches it. Every tick it asks each [`Participant`]
//! (fleet concurrency leases today; rates and budgets later) for the script calls it wants,
//! sends them all in **one pipelined round trip**, and hands each participant its replies.
//! The work therefore scales with the keys active in a tick, not with requests. The hot path
//! never waits on this thread: participants share only atomics with it (see
//! `leases.rs`).
//!
//! Scripts are loaded once per connection (`SCRIPT LOAD`) and called by digest
//! (`EVALSHA`); a `NOSCRIPT` reply (Redis restarted behind a proxy, `SCRIPT FLUSH`) reloads
//! them, and the calls that failed are simply asked for again by the next tick. A lost
//! connection is retried with [`Backoff`] (100 ms doubling to 5 s); meanwhile
//! [`LinkStatus::degraded`] is true and participants are told each tick that went unsent.
//!
//! Each tick also beats this node's heartbeat in a shared node set (`cf:nodes`), whose size
//! is the live node count a node falls back on when Redis goes away ("limit divided by the
//! live nodes it last knew").

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redis::{Connection, ServerErrorKind, Value};

use super::backoff::Backoff;
use super::target::RedisTarget;

/// The longest node name: it is part of every lease member and heartbeat.
pub const MAX_NODE_LEN: usize = 64;

/// How long connecting, and each round trip, may take before the attempt counts as failed.
/// Above any healthy round trip by orders of magnitude, below the lease TTL of a default tick
/// times a few, so a hung Redis is noticed while leases are still live.
const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// The prefix of every key the fleet writes, so one Redis can be shared with other users.
pub const KEY_PREFIX: &str = "cf:";

/// A Lua script run on Redis by digest.
#[derive(Debug)]
pub struct Script {
    /// A name for logs.
    pub name: &'static str,
    /// The Lua source.
    pub source: &'static str,
}

/// The heartbeat script (see the module doc).
static NODE_BEAT: Script = Script {
    name: "node_beat",
    source: include_str!("lua/node_beat.lua"),
};

/// One call in a tick's pipeline.
#[derive(Debug)]
pub struct Call {
    script: &'static Script,
    keys: Vec<String>,
    args: Vec<String>,
}

/// The calls one participant adds to a tick, answered in the same order.
#[derive(Debug, Default)]
pub struct Batch {
    calls: Vec<Call>,
}

impl Batch {
    /// Adds a call of `script` with `keys` and `args`.
    pub fn call(&mut self, script: &'static Script, keys: Vec<String>, args: Vec<String>) {
        self.calls.push(Call { script, keys, args });
    }

    /// How many calls are queued.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is queued.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// One call's answer: Redis's value, or why the call did not run.
pub type Reply = Result<Value, CallError>;

/// Why one call of a round trip has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Redis did not know the script (it will be reloaded before the next tick).
    NoScript,
    /// The script or command failed on Redis (message as Redis gave it; scripts never see
    /// secrets, so it cannot carry one).
    Server(String),
}

/// What a participant learns about the tick besides its replies.
#[derive(Debug, Clone, Copy)]
pub struct TickContext {
    /// When the tick started.
    pub now: Instant,
    /// The live nodes the fleet's node set counted the last time Redis answered (at least 1:
    /// this node).
    pub live_nodes: u32,
    /// When Redis last answered a round trip, if ever.
    pub last_answer: Option<Instant>,
}

/// A piece of fleet state synchronised by the link. All its methods run on the link thread.
pub trait Participant: Send + 'static {
    /// The scripts its calls use, loaded on every new connection.
    fn scripts(&self) -> &'static [&'static Script];

    /// Adds this tick's calls to `batch`.
    fn collect(&mut self, ctx: &TickContext, batch: &mut Batch);

    /// The answers to the calls `collect` made, in order.
    fn apply(&mut self, ctx: &TickContext, replies: Vec<Reply>);

    /// The tick's calls were not answered (Redis unreachable): called instead of `apply`, and
    /// once per tick while the link is down.
    fn unanswered(&mut self, ctx: &TickContext);

    /// The link is stopping gracefully: calls that give back what this node holds.
    fn farewell(&mut self, batch: &mut Batch);
}

/// The link's state as others may read it, all atomics: metrics and the hot path read it
/// without waiting.
#[derive(Debug)]
pub struct LinkStatus {
    degraded: AtomicBool,
    round_trips: AtomicU64,
    errors: AtomicU64,
    connects: AtomicU64,
    live_nodes: AtomicU32,
}

impl LinkStatus {
    fn new() -> LinkStatus {
        LinkStatus {
            // Until Redis has answered once, the node has no fleet view to rely on.
            degraded: AtomicBool::new(true),
            round_trips: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            live_nodes: AtomicU32::new(1),
        }
    }

    /// Whether Redis did not answer the last tick (or has not answered yet).
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Pipelined round trips answered so far (one per tick while healthy).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Failed connects, failed round trips and calls Redis answered with an error.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Connections established (1 plus the reconnects).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// The live nodes the node set counted at the last answer.
    pub fn live_nodes(&self) -> u32 {
        self.live_nodes.load(Ordering::Relaxed)
    }

    fn set_degraded(&self, degraded: bool, target: &RedisTarget) {
        if self.degraded.swap(degraded, Ordering::AcqRel) != degraded {
            if degraded {
                log::warn!(
                    "cluster: Redis at {target} unreachable; limits fall back to this node's share"
                );
            } else {
                log::info!("cluster: Redis at {target} reachable; limits are fleet-wide");
            }
        }
    }
}

/// How the link runs.
#[derive(Debug)]
pub struct LinkSettings {
    /// Where Redis is.
    pub target: RedisTarget,
    /// This node's name in the fleet: 1 to [`MAX_NODE_LEN`] bytes of `[A-Za-z0-9._-]`.
    pub node: String,
    /// How often the link reconciles (`[cluster] sync_interval_ms`).
    pub tick: Duration,
}

/// Checks a node name's bound and alphabet (it is written into Redis keys' members).
pub fn check_node_name(node: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if node.is_empty() || node.len() > MAX_NODE_LEN || !node.bytes().all(allowed) {
        return Err(format!(
            "a node name is 1 to {MAX_NODE_LEN} characters of A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

/// How the link thread is told to end.
enum Stop {
    /// Send the participants' farewells first.
    Graceful,
    /// End at once, as a killed process would: what the node holds expires by itself.
    Abandon,
}

/// The running link; stopping it (or dropping it) ends the thread gracefully.
pub struct Link {
    status: Arc<LinkStatus>,
    stop: Option<Sender<Stop>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("status", &self.status)
            .finish()
    }
}

impl Link {
    /// Starts the `cf-cluster` thread. It connects in the background: an unreachable Redis
    /// is not an error here, only [`LinkStatus::degraded`].
    pub fn start(
        settings: LinkSettings,
        participants: Vec<Box<dyn Participant>>,
    ) -> Result<Link, String> {
        check_node_name(&settings.node)?;
        if settings.tick.is_zero() {
            return Err("the sync interval must be above zero".to_string());
        }
        let client = settings.target.client()?;
        let status = Arc::new(LinkStatus::new());
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let worker = Worker {
            client,
            settings,
            participants,
            status: Arc::clone(&status),
            stop: stop_rx,
            connection: None,
            digests: Vec::new(),
            backoff: Backoff::new(),
            last_answer: None,
            outage_logged: false,
        };
        let thread = std::thread::Builder::new()
            .name("cf-cluster".to_string())
            .spawn(move || worker.run())
            .map_err(|e| format!("cannot start the cluster thread: {e}"))?;
        Ok(Link {
            status,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The link's shared status.
    pub fn status(&self) -> &Arc<LinkStatus> {
        &self.status
    }

    /// Ends the thread after one last round trip giving back what this node holds (if Redis
    /// answers within the I/O timeout).
    pub fn stop(mut self) {
        self.end(Stop::Graceful);
    }

    /// Ends the thread without telling Redis anything, exactly what `kill -9` leaves behind:
    /// this node's leases and heartbeat expire on their own.
    pub fn abandon(mut self) {
        self.end(Stop::Abandon);
    }

    fn end(&mut self, how: Stop) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(how);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.end(Stop::Graceful);
    }
}

/// The state only the link thread touches.
struct Worker {
    client: redis::Client,
    settings: LinkSettings,
    participants: Vec<Box<dyn Participant>>,
    status: Arc<LinkStatus>,
    stop: Receiver<Stop>,
    connection: Option<Connection>,
    /// The digest of each loaded script, by source address (few scripts: a list is enough).
    digests: Vec<(&'static str, String)>,
    backoff: Backoff,
    last_answer: Option<Instant>,
    /// Whether the current outage was logged (one line per outage, not one per attempt).
    outage_logged: bool,
}

impl Worker {
    fn run(mut self) {
        let mut next_tick = Instant::now();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.stop.recv_timeout(wait) {
                Ok(Stop::Graceful) | Err(RecvTimeoutError::Disconnected) => {
                    self.farewell();
                    return;
                }
                Ok(Stop::Abandon) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let answered = self.tick();
            next_tick = if answered {
                self.backoff.reset();
                // Ticks keep their cadence whatever a round trip takes (the bounds are per
                // sync interval); one that ran past the next tick's time is followed at once.
                (next_tick + self.settings.tick).max(Instant::now())
            } else {
                // While Redis is away the ticks slow down with the backoff; participants are
                // told at each one.
                Instant::now() + self.backoff.next_wait().max(self.settings.tick)
            };
        }
    }

    /// One tick: connect if needed, send every participant's calls and the heartbeat in one
    /// pipeline, hand out the replies. Returns whether Redis answered.
    fn tick(&mut self) -> bool {
        let mut ctx = TickContext {
            now: Instant::now(),
            live_nodes: self.status.live_nodes(),
            last_answer: self.last_answer,
        };
        if self.connection.is_none() && !self.connect() {
            self.unanswered(&ctx);
            return false;
        }
        let ttl_ms = (self.settings.tick * 3).as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let beat = Call {
            script: &NODE_BEAT,
            keys: vec![format!("{KEY_PREFIX}nodes")],
            args: vec![self.settings.node.clone(), ttl_ms.to_string()],
        };
        self.add(&mut pipe, &beat);
        let mut sizes = Vec::with_capacity(self.participants.len());
        for participant in &mut self.participants {
            let mut batch = Batch::default();
            participant.collect(&ctx, &mut batch);
            sizes.push(batch.calls.len());
            for call in &batch.calls {
                add_call(&mut pipe, &self.digests, call);
            }
        }
        let connection = self.connection.as_mut().expect("connected above");
        let replies: Vec<redis::RedisResult<Value>> = match pipe.query(connection) {
            Ok(replies) => replies,
            Err(error) => {
                self.lost(&error.to_string());
                self.unanswered(&ctx);
                return false;
            }
        };
        self.status.round_trips.fetch_add(1, Ordering::Relaxed);
        let answered_at = Instant::now();
        self.last_answer = Some(answered_at);
        let mut replies: Vec<Reply> = replies.into_iter().map(|reply| self.reply(reply)).collect();
        let beat = if replies.is_empty() {
            Err(CallError::NoScript)
        } else {
            replies.remove(0)
        };
        if let Ok(count) = beat {
            if let Ok(count) = redis::from_redis_value::<u32>(count) {
                self.status
                    .live_nodes
                    .store(count.max(1), Ordering::Relaxed);
            }
        }
        ctx.live_nodes = self.status.live_nodes();
        ctx.last_answer = self.last_answer;
        let mut replies = replies.into_iter();
        for (participant, size) in self.participants.iter_mut().zip(sizes) {
            participant.apply(&ctx, replies.by_ref().take(size).collect());
        }
        if self.digests.is_empty() {
            // A NOSCRIPT reply cleared the digests: load them again before the next tick.
            if let Err(error) = self.load_scripts() {
                self.lost(&error);
                return false;
            }
        }
        self.outage_logged = false;
        self.status.set_degraded(false, &self.settings.target);
        true
    }

    /// Classifies one reply; a NOSCRIPT forgets the digests so they are reloaded.
    fn reply(&mut self, reply: redis::RedisResult<Value>) -> Reply {
        match reply {
            Ok(Value::ServerError(error)) => self.server_error(error.kind(), error.to_string()),
            Ok(value) => Ok(value),
            Err(error) => {
                let kind = match error.kind() {
                    redis::ErrorKind::Server(kind) => Some(kind),
                    _ => None,
                };
                self.server_error(kind, error.to_string())
            }
        }
    }

    fn server_error(&mut self, kind: Option<ServerErrorKind>, message: String) -> Reply {
        self.status.errors.fetch_add(1, Ordering::Relaxed);
        if kind == Some(ServerErrorKind::NoScript) {
            self.digests.clear();
            Err(CallError::NoScript)
        } else {
            Err(CallError::Server(message))
        }
    }

    fn add(&self, pipe: &mut redis::Pipeline, call: &Call) {
        add_call(pipe, &self.digests, call);
    }

    fn unanswered(&mut self, ctx: &TickContext) {
        self.status.set_degraded(true, &self.settings.target);
        for participant in &mut self.participants {
            participant.unanswered(ctx);
        }
    }

    /// Connects and loads the scripts. Returns whether both worked.
    fn connect(&mut self) -> bool {
        let connected = self
            .client
            .get_connection_with_timeout(IO_TIMEOUT)
            .and_then(|connection| {
                connection.set_read_timeout(Some(IO_TIMEOUT))?;
                connection.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(connection)
            });
        match connected {
            Ok(connection) => {
                self.connection = Some(connection);
                self.status.connects.fetch_add(1, Ordering::Relaxed);
                match self.load_scripts() {
                    Ok(()) => true,
                    Err(error) => {
                        self.lost(&error);
                        false
                    }
                }
            }
            Err(error) => {
                self.lost(&error.to_string());
                false
            }
        }
    }

    /// `SCRIPT LOAD`s the heartbeat and every participant's scripts, in one round trip.
    fn load_scripts(&mut self) -> Result<(), String> {
        let mut scripts: Vec<&'static Script> = vec![&NODE_BEAT];
        for participant in &self.participants {
            for script in participant.scripts() {
                if !scripts.iter().any(|s| std::ptr::eq(*s, *script)) {
                    scripts.push(script);
                }
            }
        }
        let mut pipe = redis::pipe();
        for script in &scripts {
            pipe.cmd("SCRIPT").arg("LOAD").arg(script.source);
        }
        let connection = self.connection.as_mut().ok_or("not connected")?;
        let digests: Vec<String> = pipe
            .query(connection)
            .map_err(|e| format!("loading the cluster scripts failed: {e}"))?;
        self.digests = scripts.iter().map(|s| s.source).zip(digests).collect();
        log::debug!("cluster: loaded {} scripts", self.digests.len());
        Ok(())
    }

    /// Drops the connection after `error`, counting it. The error comes from the client
    /// library or Redis, which never repeat the URL; the target is named in its shown form.
    fn lost(&mut self, error: &str) {
        self.status.errors.fetch_add(1, Ordering::Relaxed);
        self.connection = None;
        if !self.outage_logged {
            self.outage_logged = true;
            log::warn!("cluster: Redis at {}: {error}", self.settings.target);
        }
        self.digests.clear();
    }

    /// Sends the participants' farewells in one round trip, if connected.
    fn farewell(&mut self) {
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for participant in &mut self.participants {
            let mut batch = Batch::default();
            participant.farewell(&mut batch);
            for call in &batch.calls {
                add_call(&mut pipe, &self.digests, call);
            }
        }
        if !pipe.is_empty() {
            let _ = pipe.query::<Vec<redis::RedisResult<Value>>>(connection);
        }
    }
}

/// Adds `call` to `pipe`: `EVALSHA` when the script's digest is known, else `EVAL` with the
/// source (only in the tick right after a NOSCRIPT, before the reload).
fn add_call(pipe: &mut redis::Pipeline, digests: &[(&'static str, String)], call: &Call) {
    let digest = digests
        .iter()
        .find(|(source, _)| std::ptr::eq(*source, call.script.source))
        .map(|(_, digest)| digest.as_str());
    match digest {
        Some(digest) => pipe.cmd("EVALSHA").arg(digest),
        None => pipe.cmd("EVAL").arg(call.script.source),
    };
    pipe.arg(call.keys.len()).arg(&call.keys).arg(&call.args);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_bounded_and_plain() {
        assert!(check_node_name("edge-1.eu_west").is_ok());
        assert!(check_node_name(&"n".repeat(MAX_NODE_LEN)).is_ok());
        for bad in ["", "a:b", "a b", "nöde", &"n".repeat(MAX_NODE_LEN + 1)] {
            assert!(check_node_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_known_script_is_called_by_digest_and_an_unknown_one_by_source() {
        let call = Call {
            script: &NODE_BEAT,
            keys: vec!["cf:nodes".into()],
            args: vec!["n1".into(), "300".into()],
        };
        let mut by_digest = redis::pipe();
        add_call(
            &mut by_digest,
            &[(NODE_BEAT.source, "abc123".into())],
            &call,
        );
        let packed = String::from_utf8(by_digest.get_packed_pipeline()).unwrap();
        assert!(packed.contains("EVALSHA") && packed.contains("abc123"));
        assert!(!packed.contains("ZREMRANGEBYSCORE"));

        let mut by_source = redis::pipe();
        add_call(&mut by_source, &[], &call);
        let packed = String::from_utf8(by_source.get_packed_pipeline()).unwrap();
        assert!(packed.contains("EVAL\r\n") && packed.contains("ZREMRANGEBYSCORE"));
    }
}
