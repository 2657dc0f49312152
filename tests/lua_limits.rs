//! The Lua sandbox's caps on library calls the time budget cannot interrupt: a hook that
//! makes a pathological call (a huge `table.move`, a quadratic plain `find`, a `string.rep`
//! bomb under `pcall`, a huge `table.concat`, ...) fails with 500 `hook_error` (or, for the
//! searches now done in linear time, passes), and a plain request sent to the
//! same (single) worker while the bad one runs is answered right after the bad one is cut.

mod common;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// How long after the bad request is cut the plain one may be answered.
const NEXT_REQUEST_SLACK: Duration = Duration::from_millis(100);

/// A 1-worker gateway: route `/bad/` runs a hook that makes the call named by the `x-call`
/// header, route `/` has no hook.
fn gateway(dir: &TempDir, upstream: &Upstream) -> Gateway {
    let hooks = dir.join("calls.lua");
    write_atomically(&hooks, CALLS.as_bytes());
    let rest = format!(
        "[lua]\nhook_timeout_ms = 50\nmemory_limit_mb = 32\n\n\
         [[upstream]]\nname = \"backend\"\ntargets = [\"{target}\"]\n\n\
         [[route]]\nname = \"bad\"\npath_prefix = \"/bad/\"\nupstream = \"backend\"\n\
         auth = \"none\"\nhooks = \"{hooks}\"\n\n\
         [[route]]\nname = \"plain\"\npath_prefix = \"/\"\nupstream = \"backend\"\n\
         auth = \"none\"\n",
        target = upstream.target(),
        hooks = hooks.display(),
    );
    Gateway::start(&config_with(1, "", &rest), Driver::Uring)
}

/// Each pathological call, chosen by the request's `x-call` header.
const CALLS: &str = r#"
local calls = {
  move = function() table.move({}, 1, 1e9, 1e9 + 10, {}) end,
  find = function()
    local needle = string.rep("a", 200000) .. "b"
    string.rep("a", 400000):find(needle, 1, true)
  end,
  rep = function() pcall(string.rep, "x", 1e9) end,
  -- 2^19 numbers, built by moves within the per-call span so that only the concat is over a
  -- cap. Each number is turned into text inside the one C call: unbounded by the interrupt.
  concat = function()
    local t = table.create(65536, 0.1)
    for at = 65537, 524288, 65536 do table.move(t, 1, 65536, at) end
    table.concat(t, ",")
  end,
  unpack = function() pcall(table.unpack, {}, 1, 9e5) end,
  -- A separator that nearly matches at every position: quadratic in Luau's own split.
  split = function()
    local sep = string.rep("a", 400000) .. "b"
    assert(#string.rep("a", 800000):split(sep) == 1)
  end,
}
function on_access(ctx)
  calls[ctx:header("x-call")]()
end
"#;

/// Sends `GET path` with `headers` and returns the response and when it arrived.
fn timed_send(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (Response, Instant) {
    let mut all = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    let response = roundtrip(addr, &request("GET", path, &all, b""));
    (response, Instant::now())
}

/// Serializes the cases of this file (see [`bad_call_answers`]).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What the bad call must end in.
enum Outcome {
    /// 500 `hook_error`, with the hook's failure logged as the refusal naming this text (so
    /// the call was cut by its cap, not merely by the budget once it had returned).
    Refused(&'static str),
    /// The hook passes: the call is no longer pathological.
    Passes,
}

/// The bad call ends as `outcome`, and a plain request sent while it runs is answered within
/// [`NEXT_REQUEST_SLACK`] of the bad one. Returns how long the bad request took.
fn bad_call_answers(call: &str, outcome: Outcome) -> Duration {
    // One case at a time: the lag is measured between two answers, and gateways of other
    // cases competing for the same two cores would only add their noise to it.
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("lua-limits");
    let upstream = Upstream::echo("backend");
    let gw = gateway(&dir, &upstream);
    let addr = gw.addr();
    let call_name = call.to_string();
    let started = Instant::now();
    let bad = std::thread::spawn(move || timed_send(addr, "/bad/x", &[("x-call", &call_name)]));
    std::thread::sleep(Duration::from_millis(5));
    let (plain, plain_at) = timed_send(addr, "/", &[]);
    let (bad, bad_at) = bad.join().unwrap();
    let took = bad_at - started;
    match outcome {
        Outcome::Refused(cap) => {
            bad.assert_error(500, "hook_error");
            assert!(
                wait_until(WAIT, || gw.stderr().contains(cap)),
                "{call} (answered after {took:?}) was not refused by {cap:?}:\n{}",
                gw.stderr()
            );
        }
        Outcome::Passes => assert_eq!(bad.status, 200, "{call}: {}", bad.text()),
    }
    assert_eq!(plain.status, 200, "{}", plain.text());
    let lag = plain_at.saturating_duration_since(bad_at);
    assert!(
        lag < NEXT_REQUEST_SLACK,
        "{call}: the plain request was answered {lag:?} after the bad one was cut"
    );
    eprintln!("{call}: answered after {took:?}; plain request answered {lag:?} later");
    took
}

#[test]
fn table_move_of_a_huge_range_is_cut() {
    bad_call_answers("move", Outcome::Refused("table.move: the range is over"));
}

#[test]
fn plain_find_of_a_long_needle_is_fast() {
    // A linear search now: the call is no longer pathological and the hook passes.
    let took = bad_call_answers("find", Outcome::Passes);
    assert!(took < Duration::from_millis(250), "took {took:?}");
}

#[test]
fn string_rep_bomb_caught_by_pcall_still_fails() {
    bad_call_answers(
        "rep",
        Outcome::Refused("string.rep: the result size is over"),
    );
}

#[test]
fn table_concat_of_a_huge_range_is_cut() {
    // Before the cap the concat ran to completion (the worker stalled while it did) and the
    // hook passed.
    bad_call_answers(
        "concat",
        Outcome::Refused("table.concat: the range is over"),
    );
}

#[test]
fn unpack_of_a_huge_range_is_cut() {
    bad_call_answers(
        "unpack",
        Outcome::Refused("table.unpack: the range is over"),
    );
}

#[test]
fn split_with_a_long_separator_is_fast() {
    // Luau compared the separator at every position (seconds for these sizes); a linear
    // search now, so the hook passes at once.
    let took = bad_call_answers("split", Outcome::Passes);
    assert!(took < Duration::from_millis(250), "took {took:?}");
}
