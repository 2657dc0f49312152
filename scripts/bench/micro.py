"""The micro-benchmark section of benches/RESULTS.md (issue 7): one row per criterion benchmark
in benches/*.rs, with its median time per iteration and a one-line statement of what it measures.

Figures come from criterion's own files, `target/criterion/<directory_name>/new/estimates.json`
(`median.point_estimate`, nanoseconds per iteration), matched to benchmarks by the `full_id` in
the `benchmark.json` beside them. target/criterion also keeps results of benchmarks that were
removed since (such as the old `probe_*` ones): only the ids listed in `BENCHES` are reported,
and `source_problems` checks that list against the bench sources.

Used by matrix.py (scenario key `micro`); it needs no peers and no running gateway.
"""
import json
import re
import shlex
import subprocess
import time
from pathlib import Path

SECTION_TITLE = "## Micro-benchmarks (criterion)"

# Bench file (`cargo bench --bench NAME`) -> [(criterion full_id, what one iteration does)].
# Written from the sources in benches/: group benchmarks are `group/function`. Keep a statement
# to one concrete line; update this table with the bench files (source_problems says when not).
BENCHES = {
    "http1": [
        ("http1_head/browser",
         "scan, parse and validate a 536-byte browser GET head with 10 header fields "
         "(`HeadParser`: request-line, field syntax, Host, framing), head copied out"),
        ("http1_head/api",
         "the same for a 176-byte SDK `POST /v1/chat/completions` head with 4 header fields "
         "(Host, Authorization, Content-Type, Content-Length)"),
        ("http1_chunked/decode_16k_in_1k_chunks",
         "decode a 16 KiB chunked body sent as 16 chunks of 1 KiB plus the last chunk"),
    ],
    "router": [
        ("route/50 prefixes, hit",
         "route `/service-37/v1/users/42` on an unknown host: no host route, longest prefix "
         "among 50 host-agnostic prefixes (table of 60 routes)"),
        ("route/exact host",
         "route `api7.example.com:443`: port stripped, exact host hit among 10 host routes"),
        ("route/miss",
         "route a path that matches no host and none of the 50 prefixes"),
    ],
    "keys": [
        ("credential cache, 1M keys/hit",
         "authenticate a valid key among 1,000,000: HMAC-SHA256 of the secret, hash-map "
         "probe, constant-time compare, `Arc` clone (4,096 keys cycled)"),
        ("credential cache, 1M keys/miss (unknown key)",
         "authenticate a well-formed unknown key among 1,000,000: HMAC-SHA256 and probe, "
         "no match"),
        ("credential cache, 1M keys/refused by shape (no cf_ prefix)",
         "refuse a credential without the `cf_` prefix before any hashing"),
    ],
    "limits": [
        ("gcra/check, admitted, one thread",
         "one GCRA rate-limit check that admits (compare-and-swap of the key's TAT), one "
         "thread"),
        ("gcra/check, rejected, one thread",
         "one GCRA check on an exhausted limit (1 req/s, burst 1) that rejects"),
        ("gcra/check_n 1000 units, admitted, one thread",
         "one weighted GCRA check of 1,000 units (tokens) that admits"),
        ("gcra/adjust refund, one thread",
         "settle a reservation after the fact: refund 100 units into a GCRA state"),
        ("gcra/check incl. clock, contended by a second thread",
         "a clock read plus a GCRA check of one key that a second thread checks in a loop "
         "(CAS retries included)"),
        ("clock/system now_nanos",
         "read the limiter clock (`SystemClock::now_nanos`), part of every check in serve"),
        ("table/lookup+check by key id, 10k keys",
         "find a key id's limiter in a `LimiterTable` holding 10,000 keys and check it"),
        ("concurrency/acquire+release",
         "take and release one in-flight slot (limit 8) of a concurrency counter"),
        ("table/acquire+release by key id",
         "find a key id's in-flight counter in a `LimiterTable`, take and release a slot"),
    ],
    "meter": [
        ("tokens/chat prompt 1 KiB, tiktoken o200k (gpt-4o)",
         "estimate the prompt tokens of a 1 KiB chat (4 messages, an image part, a tool) "
         "with tiktoken `o200k_base` (gpt-4o)"),
        ("tokens/chat prompt 1 KiB, bytes/4 (claude)",
         "the same chat estimated at 4 bytes per token (a model without a shipped tokenizer)"),
        ("budget/try_reserve+settle, tokens+money, one thread",
         "reserve then settle one request against a monthly token and money budget "
         "(1,000 keys in the table), one thread"),
        ("budget/try_reserve+settle, money only, one thread",
         "the same against a money-only budget (`budget_usd`, the usual configuration)"),
        ("budget/try_reserve+settle, tokens+money, contended by a second thread",
         "reserve+settle on one budget that a second thread reserves and settles in a loop"),
        ("tpm/gcra check_n 1000 tokens, admitted",
         "admit a 1,000-token TPM reservation with a weighted GCRA check"),
        ("tpm/table check_n+adjust by key id, 10k keys",
         "find a key id's TPM limiter among 10,000, reserve 1,000 tokens, refund 200"),
    ],
    "ai": [
        ("ai_sse/one_chunk_event",
         "parse one 300-byte OpenAI chunk event (`SseParser` push + next_event, parser "
         "reused)"),
        ("ai_sse/buffer_64k",
         "parse and drain a 64 KiB read holding 218 such events"),
        ("ai_stream_event/openai_relay_passthrough",
         "relay one parsed OpenAI chunk to a client that asked for usage (re-framed as is)"),
        ("ai_stream_event/openai_relay_strip_usage",
         "relay one OpenAI chunk with its `\"usage\":null` removed (client did not ask)"),
        ("ai_stream_event/anthropic_delta_to_openai_chunk",
         "translate one Anthropic `content_block_delta` text event into an OpenAI chunk "
         "(translator past the stream's opening events)"),
        ("ai_stream_event/openai_chunk_to_anthropic_delta",
         "translate one OpenAI text chunk into an Anthropic `content_block_delta` event"),
        ("ai_stream_event/gemini_event_to_openai_chunk",
         "translate one 377-byte Gemini `streamGenerateContent` SSE event into an OpenAI "
         "chunk"),
        ("ai_request/openai_parse_and_upstream_body",
         "check a 2 KiB streaming OpenAI chat request (tool call and result, tool "
         "definition) and build its upstream body"),
        ("ai_request/openai_to_anthropic",
         "translate that checked chat into an Anthropic Messages request"),
        ("ai_request/openai_to_gemini",
         "translate that checked chat into a Gemini `generateContent` request"),
        ("ai_request/anthropic_parse_and_to_openai",
         "check the same conversation sent as a 2 KiB Anthropic Messages request and "
         "translate it to OpenAI chat"),
        ("ai_tokens/chat_2k_tiktoken_o200k",
         "estimate the prompt tokens of the 2 KiB chat with tiktoken `o200k_base` (gpt-4o)"),
        ("ai_tokens/chat_2k_bytes",
         "the same chat at 4 bytes per token (claude: no shipped tokenizer)"),
    ],
    "accesslog": [
        ("accesslog/render one AI request line",
         "render the JSON access-log line of a metered AI request (key, team, model, usage)"),
        ("accesslog/render and queue one line",
         "render it and queue it to the writer thread (bounded channel, never blocks; "
         "written to /dev/null)"),
    ],
    "lua": [
        ("lua/on_access, empty hook",
         "call an empty Luau `on_access(ctx)` hook"),
        ("lua/on_access, read header + set var, then end_request",
         "an `on_access` that reads `x-tenant` with `ctx:header` and stores it in "
         "`ctx.vars`, then end the request (per-request state cleared)"),
        ("lua/on_prompt, scripts/redact_pii.lua on a 2 KiB chat",
         "the shipped `scripts/redact_pii.lua` as `on_prompt` on a 2 KiB chat holding 27 "
         "emails and phone numbers: JSON to Lua table, email and number gsubs, back to JSON"),
    ],
}

# Bench files that are not criterion benchmarks: they print their own figures.
PLAIN_BENCHES = {
    "startup_1m": "build a 1,000,000-key SQLite store, then time `CredentialCache::start` "
                  "loading it and read the process RSS afterwards",
}


def plain_output(name):
    """Where a --micro-run keeps a plain bench's printed figures, for later reports."""
    return Path("target") / f"{name}.txt"


def bench_command(name, criterion=True):
    """The command that produces a bench file's results."""
    return f"cargo bench --bench {name}" + (" -- --noplot" if criterion else "")


def format_ns(ns):
    """A time per iteration in a unit that keeps three significant digits readable."""
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            value = ns / scale
            break
    else:
        unit, value = "ns", ns
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{digits}f} {unit}"


def format_mtime(seconds):
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def format_span(oldest, newest):
    """`2026-11-30 10:50 .. 11:02 UTC`, the date repeated only when it differs."""
    first, last = format_mtime(oldest), format_mtime(newest)
    if first == last:
        return first
    if first[:10] == last[:10]:
        return f"{first[:-4]} .. {last[11:]}"
    return f"{first[:-4]} .. {last}"


def read_results(criterion_dir):
    """criterion full_id -> (median ns per iteration, mtime of its estimates.json), for every
    benchmark under `criterion_dir` (stale ones included)."""
    results = {}
    for meta in Path(criterion_dir).glob("**/new/benchmark.json"):
        estimates = meta.with_name("estimates.json")
        try:
            full_id = json.loads(meta.read_text())["full_id"]
            median = json.loads(estimates.read_text())["median"]["point_estimate"]
            results[full_id] = (float(median), estimates.stat().st_mtime)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a half-written or foreign directory: treat as not run
    return results


# Rust tokens that can hold a `"`: comments, raw strings, strings and char literals, matched
# in one pass so that a quote inside one of them does not pair with a string's quote.
RUST_TOKEN = re.compile(
    r'//[^\n]*|/\*.*?\*/|b?r(?P<hashes>#*)"(?P<raw>.*?)"(?P=hashes)'
    r'|b?"(?P<text>(?:[^"\\]|\\.)*)"|\'(?:[^\'\\]|\\.)\'',
    re.S,
)
DIRECT_ID = re.compile(r'bench_function\(\s*"((?:[^"\\]|\\.)*)"')


def string_literals(source):
    """The contents of the string literals in Rust `source` (escapes left as written)."""
    out = set()
    for token in RUST_TOKEN.finditer(source):
        for group in ("raw", "text"):
            if token.group(group) is not None:
                out.add(token.group(group))
    return out


def source_problems(benches_dir):
    """Where BENCHES and PLAIN_BENCHES disagree with the bench sources: files without an
    entry, entries without a file, ids no longer in their source, literal ids without a
    statement. Ids built at run time (names from a loop) are matched by their literals."""
    problems = []
    files = {p.stem: p for p in Path(benches_dir).glob("*.rs")}
    for name in sorted(set(files) - set(BENCHES) - set(PLAIN_BENCHES)):
        problems.append(f"benches/{name}.rs has no entry in scripts/bench/micro.py")
    for name in sorted((set(BENCHES) | set(PLAIN_BENCHES)) - set(files)):
        problems.append(f"scripts/bench/micro.py lists `{name}`, which benches/ no longer has")
    for name, entries in BENCHES.items():
        if name not in files:
            continue
        source = files[name].read_text()
        literals = string_literals(source)
        known = set()
        for full_id, _ in entries:
            if full_id in literals:
                known.add(full_id)
                continue
            group, _, function = full_id.rpartition("/")
            if group in literals and function in literals:
                known.update((full_id, function))
            else:
                problems.append(f"`{full_id}` is no longer in benches/{name}.rs")
        for direct in DIRECT_ID.findall(source):
            if direct not in known:
                problems.append(f"`{direct}` in benches/{name}.rs has no statement in "
                                "scripts/bench/micro.py")
    return problems


def run_benches(root, names, record_command=None):
    """Runs `cargo bench --bench NAME -- --noplot` for each name, one after the other, and
    plain benches (capturing what they print) without criterion's flag. Returns the failures as messages."""
    failures = []
    for name in names:
        criterion = name not in PLAIN_BENCHES
        argv = shlex.split(bench_command(name, criterion))
        if record_command:
            record_command(argv)
        print(f"  running {' '.join(argv)}", flush=True)
        out = subprocess.run(argv, cwd=root, capture_output=not criterion, text=True)
        if out.returncode != 0:
            failures.append(f"`{' '.join(argv)}` failed (exit {out.returncode})")
        elif not criterion:
            (root / plain_output(name)).write_text(out.stdout)
    return failures


class MicroSection:
    """The section as matrix.py's report lists its tables: a `title` and `markdown()`."""

    title = SECTION_TITLE.lstrip("# ")

    def __init__(self, lines):
        self.lines = lines

    def markdown(self):
        return "\n".join(self.lines) + "\n"


def section(root, run=False, record_command=None):
    """Builds the micro-benchmark section from target/criterion (after running every bench
    file first when `run`). `record_command(argv)` is told each command run."""
    root = Path(root)
    notes = []
    if run:
        notes += run_benches(root, list(BENCHES) + list(PLAIN_BENCHES), record_command)
    results = read_results(root / "target" / "criterion")
    rows, per_file, mtimes = [], [], []
    measured = listed = 0
    for name, entries in BENCHES.items():
        source = root / "benches" / f"{name}.rs"
        found = [results[i] for i, _ in entries if i in results]
        command = f"`{bench_command(name)}`"
        for full_id, statement in entries:
            median = (format_ns(results[full_id][0]) if full_id in results
                      else f"not run: {command}")
            rows.append(f"| `{name}` | `{full_id}` | {median} | {statement} |")
        measured += len(found)
        listed += len(entries)
        if not found:
            per_file.append(f"- `{name}`: not run; {command}")
            continue
        oldest, newest = min(m for _, m in found), max(m for _, m in found)
        mtimes += [oldest, newest]
        missing = len(entries) - len(found)
        line = f"- `{name}`: {format_span(oldest, newest)}, {command}"
        if missing:
            line += f"; {missing} of {len(entries)} not run"
        if source.exists() and source.stat().st_mtime > newest:
            line += "; benches/" + source.name + " changed after these results"
        per_file.append(line)
    for name, statement in PLAIN_BENCHES.items():
        command = f"`{bench_command(name, criterion=False)}`"
        saved = root / plain_output(name)
        if saved.exists():
            figures = "; ".join(line.strip() for line in saved.read_text().splitlines()
                                if line.strip())
            rows.append(f"| `{name}` | (not criterion) | in the list above | {statement} |")
            per_file.append(f"- `{name}`: {format_mtime(saved.stat().st_mtime)}, {command}: "
                            f"{figures}")
        else:
            rows.append(f"| `{name}` | (not criterion) | see {command} | {statement} |")
            per_file.append(f"- `{name}`: not criterion, not run by this script (only with "
                            f"`--micro-run`); {command} prints its own figures")
    notes += source_problems(root / "benches")

    span = format_span(min(mtimes), max(mtimes)) if mtimes else "none found"
    lines = [
        SECTION_TITLE, "",
        "One row per benchmark in `benches/*.rs`: the median time per iteration that criterion "
        "reported (`median.point_estimate` of `target/criterion/<id>/new/estimates.json`). "
        "Measured on this machine (shared with other work) at the times given per bench file "
        "below, not during the load runs above. "
        + ("This run ran every bench file first (`--micro-run`)." if run else
           "This run reported the existing results; `--micro-run` runs the benches first."),
        "",
        f"Results produced {span} (modification times of the estimates files), by:",
        "",
    ]
    lines += per_file
    lines += ["", "| bench (`cargo bench --bench …`) | benchmark id | median / iter "
              "| what one iteration measures |", "|---|---|---|---|"]
    lines += rows
    if notes:
        lines += ["", "Problems:", ""] + [f"- {n}" for n in notes]
    for n in notes:
        print(f"  NOTE {n}", flush=True)
    print(f"  micro: results for {measured} of {listed} criterion benchmarks", flush=True)
    return MicroSection(lines)


if __name__ == "__main__":
    import sys

    print(section(Path(__file__).resolve().parent.parent.parent,
                  run="--micro-run" in sys.argv).markdown())
