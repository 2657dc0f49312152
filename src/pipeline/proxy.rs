//! Phases upstream and response for `[[route]]` traffic: the rewritten head, the body
//! streamed both ways, 101 tunnels. Picking a target, connections and retries are
//! [`exchange::run`]'s.

use std::fmt::Write as _;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};

use super::exchange;
use super::ThreadState;
use super::{hooks, Failure, Outcome, RequestCtx};
use crate::error::GatewayError;
use crate::http1::BufConn;
use crate::http1::{
    encode_chunk, encode_last_chunk, push_header, BodyFraming, ChunkedDecoder, RequestHead,
    ResponseBody, ResponseHead, StrBuf, Version,
};
use crate::identity::source::{CredentialSource, Current};
use crate::lua::ResponseInfo;
use crate::snapshot::{Route, Snapshot};
use crate::upstream::{Target, Upstream, UpstreamStream};

/// Forwards the request to the route's upstream and relays the response.
pub(super) async fn proxy<S>(
    worker: &ThreadState,
    snapshot: &Snapshot,
    route: &Route,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent + Split,
{
    let limits = &snapshot.limits;
    let upstream = &snapshot.upstreams[route.upstream];
    if let BodyFraming::Length(n) = head.body() {
        if n > limits.max_body_bytes {
            return Err(GatewayError::BodyTooLarge.into());
        }
    }

    // Body bytes that came with the head are framed (and, for chunked, validated) before any
    // upstream is contacted, so a malformed body never reaches it.
    let mut body = RequestBody::new(head.body(), limits.max_body_bytes);
    let mut first_body = Vec::new();
    body.take_buffered(client, &mut first_body)?;
    ctx.body_done = body.done;

    // RFC 9110 10.1.1: we answer 100 ourselves once the request is accepted, rather than
    // forwarding Expect (the upstream may not support it).
    if head.expects_continue() && head.version() == Version::Http11 && !body.done {
        let (res, _) = client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await;
        res.map_err(|_| Failure::Abort)?;
    }

    // A chunked body's first size line (extensions and all) is complete before an upstream
    // is contacted, however the client's bytes were split across reads.
    while body.in_first_size_line() {
        match client.fill_within(limits.idle_timeout).await {
            Ok(n) if n > 0 => body.take_buffered(client, &mut first_body)?,
            _ => return Err(Failure::Abort),
        }
    }
    ctx.body_done = body.done;

    hooks::request(worker, snapshot, ctx)?;
    // A token the gateway obtains itself: the one in force now, or no request at all (the
    // upstream would refuse it, and the client could do nothing about it).
    let token = match upstream.token_source() {
        None => None,
        Some(source) => Some(
            source
                .current()
                .ok_or(GatewayError::CredentialUnavailable)?,
        ),
    };
    let path = forwarded_path(head, ctx, route);
    // The whole request can be sent again only if its body is all in `first_body`, and
    // only if repeating it is safe.
    let resendable = body.done && head.is_idempotent();
    // After a 401 it is sent once more with a fresh token when it is whole at hand and
    // either safe to repeat or without a body (the upstream refused it unread).
    let again_after_401 = body.done
        && (head.is_idempotent()
            || matches!(head.body(), BodyFraming::None | BodyFraming::Length(0)));

    let bearer = token.as_ref().map(|t| t.credential.expose());
    let tail = upstream_head_tail(head, ctx, route, upstream, bearer);
    let answered = send_streamed(
        worker,
        upstream,
        limits,
        head,
        &path,
        &tail,
        &first_body,
        client,
        &mut body,
        resendable,
        ctx,
    )
    .await;
    let mut exchange = answered?;
    if exchange.response.status() == 401 {
        if let (Some(source), Some(used)) = (upstream.token_source(), token.as_ref()) {
            if !again_after_401 {
                // Not repeatable: the 401 goes to the client, the next request finds a new token.
                source.request_refresh();
            } else if let Some(fresh) = fresher_token(source, used.generation).await {
                // The refused exchange's connection is dropped, not pooled: its 401 body is unread.
                drop(exchange);
                let tail =
                    upstream_head_tail(head, ctx, route, upstream, Some(fresh.credential.expose()));
                exchange = send_streamed(
                    worker,
                    upstream,
                    limits,
                    head,
                    &path,
                    &tail,
                    &first_body,
                    client,
                    &mut body,
                    resendable,
                    ctx,
                )
                .await?;
            }
        }
    }
    ctx.upstream_began(&exchange);
    let response = &exchange.response;
    ctx.stream = response
        .header("content-type")
        .is_some_and(|v| v.len() >= 17 && v[..17].eq_ignore_ascii_case(b"text/event-stream"));

    // Phase response.
    let status = response.status();
    ctx.status = status;
    if status == 101 {
        if !head.is_upgrade() {
            return Err(GatewayError::Upstream("unrequested protocol switch").into());
        }
        let mut out = Vec::with_capacity(512);
        write_response_head(
            &mut out,
            response,
            None,
            ctx,
            ClientFraming::Tunnel,
            false,
            false,
        );
        let (res, _) = client.write_all(out).await;
        res.map_err(|_| Failure::Abort)?;
        return Ok(Outcome::Tunnel(exchange.conn));
    }
    // An `on_response` hook sees the head and may change status and headers.
    let edited = if hooks::wants_response(snapshot, ctx) {
        let mut info = ResponseInfo {
            status,
            headers: response
                .headers()
                .map(|(n, v)| {
                    (
                        n.to_ascii_lowercase(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect(),
            ..ResponseInfo::default()
        };
        hooks::response(worker, snapshot, ctx, &mut info)?;
        ctx.status = info.status;
        Some(info)
    } else {
        None
    };
    let client_wants_close = !head.keep_alive() || worker.shutting_down();
    let body_kind = response.body(head.method());
    let framing = match body_kind {
        ResponseBody::None => ClientFraming::NoBody,
        ResponseBody::Length(n) => ClientFraming::Length(n),
        ResponseBody::Chunked | ResponseBody::UntilClose if head.version() == Version::Http11 => {
            ClientFraming::Chunked
        }
        ResponseBody::Chunked | ResponseBody::UntilClose => ClientFraming::UntilClose,
    };
    let close = client_wants_close || framing == ClientFraming::UntilClose;
    // The head plus what the upstream already sent of the body; larger bodies grow it.
    let mut out = Vec::with_capacity(512 + exchange.conn.buffered().len());
    let http10 = head.version() == Version::Http10;
    write_response_head(
        &mut out,
        response,
        edited.as_ref(),
        ctx,
        framing,
        close,
        http10,
    );
    let finished =
        relay_response_body(client, &mut exchange.conn, body_kind, framing, out, limits).await;
    ctx.upstream_ended();
    let finished = finished?;
    exchange.finish(worker, upstream, finished);
    Ok(if close {
        Outcome::Close
    } else {
        Outcome::KeepAlive
    })
}

/// How long a request refused with 401 waits for the token source to fetch a new token
/// before the 401 is relayed. The worker is not blocked: it serves other connections.
const FRESH_TOKEN_WAIT: Duration = Duration::from_secs(3);

/// Asks `source` for a new credential (rate-limited there) and waits up to
/// [`FRESH_TOKEN_WAIT`] for one newer than generation `used`; a refresh another request asked
/// for counts too. Any kind of credential: bearer tokens, and AWS credentials for SigV4.
pub(super) async fn fresher_token<T: Send + Sync + 'static>(
    source: &CredentialSource<T>,
    used: u64,
) -> Option<std::sync::Arc<Current<T>>> {
    source.request_refresh();
    let deadline = std::time::Instant::now() + FRESH_TOKEN_WAIT;
    loop {
        if let Some(current) = source.current().filter(|c| c.generation > used) {
            return Some(current);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One pass of the exchange loop with the rewritten head `tail` and the client's body.
#[allow(clippy::too_many_arguments)]
async fn send_streamed<S>(
    worker: &ThreadState,
    upstream: &Upstream,
    limits: &crate::snapshot::RequestBounds,
    head: &RequestHead,
    path: &str,
    tail: &[u8],
    first_body: &[u8],
    client: &mut BufConn<S>,
    body: &mut RequestBody,
    resendable: bool,
    ctx: &mut RequestCtx,
) -> Result<exchange::Exchange, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let mut outgoing = Streamed {
        method: head.method(),
        path,
        tail,
        first_body,
        client,
        body,
        idle: limits.idle_timeout,
        resendable,
        body_sent: false,
    };
    let answered = exchange::run(&worker.pool, upstream, limits, &mut outgoing).await;
    if outgoing.body_sent {
        ctx.body_done = true;
    }
    answered
}

/// The request body as it is read from the client and re-framed for the upstream.
struct RequestBody {
    /// Bytes still to come for a Content-Length body.
    remaining: u64,
    /// Decoder for a chunked body; decoded data is re-chunked toward the upstream.
    chunked: Option<ChunkedDecoder>,
    /// Whether the whole body has been read.
    done: bool,
    max: u64,
    scratch: Vec<u8>,
}

impl RequestBody {
    fn new(framing: BodyFraming, max: u64) -> RequestBody {
        let (remaining, chunked) = match framing {
            BodyFraming::None => (0, None),
            BodyFraming::Length(n) => (n, None),
            BodyFraming::Chunked => (0, Some(ChunkedDecoder::new())),
        };
        RequestBody {
            remaining,
            done: remaining == 0 && chunked.is_none(),
            chunked,
            max,
            scratch: Vec::new(),
        }
    }

    /// Whether a chunked body's first size line has not been read whole yet.
    fn in_first_size_line(&self) -> bool {
        !self.done
            && self
                .chunked
                .as_ref()
                .is_some_and(|d| d.in_first_size_line())
    }

    /// Moves the body bytes buffered in `client` into `out`, framed for the upstream.
    fn take_buffered<S>(
        &mut self,
        client: &mut BufConn<S>,
        out: &mut Vec<u8>,
    ) -> Result<(), GatewayError>
    where
        S: AsyncReadRent + AsyncWriteRent,
    {
        if self.done {
            return Ok(());
        }
        match &mut self.chunked {
            None => {
                let n = (client.buffered().len() as u64).min(self.remaining) as usize;
                out.extend_from_slice(&client.buffered()[..n]);
                client.consume(n);
                self.remaining -= n as u64;
                self.done = self.remaining == 0;
            }
            Some(decoder) => {
                self.scratch.clear();
                let decoded = decoder
                    .decode(client.buffered(), &mut self.scratch)
                    .map_err(|_| GatewayError::BadRequest("invalid chunked body"))?;
                client.consume(decoded.consumed);
                if decoder.body_bytes() > self.max {
                    return Err(GatewayError::BodyTooLarge);
                }
                if !self.scratch.is_empty() {
                    encode_chunk(&self.scratch, out);
                }
                if decoded.done {
                    encode_last_chunk(out);
                    self.done = true;
                }
            }
        }
        Ok(())
    }
}

/// A `[[route]]` request toward the upstream: the rewritten head and the body bytes that came
/// with it, then the rest of the body streamed from the client.
struct Streamed<'a, S> {
    method: &'a str,
    path: &'a str,
    /// Everything after the request line and `Host` (see [`upstream_head_tail`]).
    tail: &'a [u8],
    /// The body bytes read before the upstream was contacted, framed for it.
    first_body: &'a [u8],
    client: &'a mut BufConn<S>,
    body: &'a mut RequestBody,
    idle: Duration,
    /// Idempotent, with the whole body in `first_body`.
    resendable: bool,
    /// Whether the whole body has been sent.
    body_sent: bool,
}

impl<S> exchange::Outgoing for Streamed<'_, S>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    type Error = Failure;

    fn first_bytes(&mut self, target: &Target) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.path.len() + self.tail.len() + self.first_body.len() + 64);
        let _ = write!(
            StrBuf(&mut out),
            "{} {} HTTP/1.1\r\nhost: {}\r\n",
            self.method,
            self.path,
            target.authority
        );
        out.extend_from_slice(self.tail);
        out.extend_from_slice(self.first_body);
        out
    }

    async fn send_rest(&mut self, conn: &mut BufConn<UpstreamStream>) -> Result<(), Failure> {
        if !self.body.done {
            stream_request_body(self.client, conn, self.body, self.idle).await?;
        }
        self.body_sent = true;
        Ok(())
    }

    fn resendable(&self) -> bool {
        self.resendable
    }
}

/// Streams the rest of the request body from the client to the upstream, one read at a time,
/// so a body of any size passes through in constant memory.
async fn stream_request_body<S>(
    client: &mut BufConn<S>,
    upstream: &mut BufConn<UpstreamStream>,
    body: &mut RequestBody,
    idle: Duration,
) -> Result<(), Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let mut out = Vec::with_capacity(64 * 1024);
    while !body.done {
        match client.fill_within(idle).await {
            Ok(n) if n > 0 => {}
            _ => return Err(Failure::Abort), // the client stopped sending its body
        }
        body.take_buffered(client, &mut out)?;
        if !out.is_empty() {
            let (res, emptied) = upstream.write_all(out).await;
            out = emptied;
            res.map_err(|_| GatewayError::Upstream("upstream stopped reading the body"))?;
        }
    }
    Ok(())
}

/// How the response body is framed toward the client.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ClientFraming {
    NoBody,
    Length(u64),
    Chunked,
    /// HTTP/1.0 clients get unknown-length bodies delimited by close.
    UntilClose,
    /// 101: the connection becomes a byte tunnel.
    Tunnel,
}

/// Writes the response head for the client: the upstream's status and end-to-end headers,
/// our framing, and our `x-request-id`.
fn write_response_head(
    out: &mut Vec<u8>,
    resp: &ResponseHead,
    edited: Option<&ResponseInfo>,
    ctx: &RequestCtx,
    framing: ClientFraming,
    close: bool,
    http10: bool,
) {
    let status = edited.map_or(resp.status(), |e| e.status);
    let reason = if status == resp.status() {
        resp.reason()
    } else {
        crate::error::reason_phrase(status)
    };
    let _ = write!(StrBuf(out), "HTTP/1.1 {status} {reason}\r\n");
    let tunnel = framing == ClientFraming::Tunnel;
    // Where the gateway limits, its own figures replace the upstream's.
    let own_rate_headers = !ctx.rate.is_empty();
    let mut upstream_length: Option<&[u8]> = None;
    // The upstream's headers, or an `on_response` hook's edit of them.
    let mut from_hook;
    let mut from_upstream;
    let headers: &mut dyn Iterator<Item = (&str, &[u8])> = match edited {
        Some(e) if e.headers_changed => {
            from_hook = e.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
            &mut from_hook
        }
        _ => {
            from_upstream = resp.headers();
            &mut from_upstream
        }
    };
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-length") {
            upstream_length = Some(value);
            continue;
        }
        if resp.is_hop_by_hop(name) && !(tunnel && name.eq_ignore_ascii_case("upgrade")) {
            continue;
        }
        // Bodies are re-framed and trailers dropped, so a `Trailer` announcement would lie.
        if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("trailer")
            || name.eq_ignore_ascii_case("x-request-id")
            || (own_rate_headers && is_rate_limit_header(name))
        {
            continue;
        }
        push_header(out, name, value);
    }
    push_header(out, "x-request-id", ctx.request_id.as_bytes());
    ctx.rate.write_headers(out);
    match framing {
        // HEAD and 304 keep the upstream's Content-Length (RFC 9110 8.6); 204 has none.
        ClientFraming::NoBody if status >= 200 && status != 204 => {
            if let Some(v) = upstream_length {
                push_header(out, "content-length", v);
            }
        }
        ClientFraming::Length(n) => {
            let _ = write!(StrBuf(out), "content-length: {n}\r\n");
        }
        ClientFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if tunnel {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Relays the response body, writing each upstream read to the client as soon as it arrives
/// (so server-sent events are never held back). `out` already holds the response head.
/// Returns whether the upstream body ended cleanly (the connection may be pooled).
async fn relay_response_body<S>(
    client: &mut BufConn<S>,
    upstream: &mut BufConn<UpstreamStream>,
    kind: ResponseBody,
    framing: ClientFraming,
    mut out: Vec<u8>,
    limits: &crate::snapshot::RequestBounds,
) -> Result<bool, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    // Streams may run longer than the response-head timeout, but not sit silent longer.
    let silence = limits.upstream_timeout;
    let chunk_out = framing == ClientFraming::Chunked;
    let mut decoder = ChunkedDecoder::new();
    let mut decoded = Vec::new();
    let mut remaining = match kind {
        ResponseBody::Length(n) => n,
        _ => 0,
    };
    let mut finished =
        matches!(kind, ResponseBody::None) || (matches!(kind, ResponseBody::Length(0)));
    loop {
        if !finished {
            match kind {
                ResponseBody::None => {}
                ResponseBody::Length(_) => {
                    let n = (upstream.buffered().len() as u64).min(remaining) as usize;
                    out.extend_from_slice(&upstream.buffered()[..n]);
                    upstream.consume(n);
                    remaining -= n as u64;
                    finished = remaining == 0;
                }
                ResponseBody::Chunked => {
                    decoded.clear();
                    let d = decoder
                        .decode(upstream.buffered(), &mut decoded)
                        .map_err(|_| Failure::Abort)?;
                    upstream.consume(d.consumed);
                    if !decoded.is_empty() {
                        frame_data(&decoded, chunk_out, &mut out);
                    }
                    finished = d.done;
                }
                ResponseBody::UntilClose => {
                    let data = upstream.buffered();
                    if !data.is_empty() {
                        let n = data.len();
                        frame_data(upstream.buffered(), chunk_out, &mut out);
                        upstream.consume(n);
                    }
                }
            }
        }
        if finished && chunk_out {
            encode_last_chunk(&mut out);
        }
        if !out.is_empty() {
            let (res, emptied) = client.write_all(out).await;
            out = emptied;
            res.map_err(|_| Failure::Abort)?;
        }
        if finished {
            return Ok(!matches!(kind, ResponseBody::UntilClose));
        }
        match upstream.fill_within(silence).await {
            Ok(n) if n > 0 => {}
            Ok(_) if matches!(kind, ResponseBody::UntilClose) => finished = true,
            _ => return Err(Failure::Abort), // truncated: the client must not see a clean end
        }
    }
}

fn frame_data(data: &[u8], chunked: bool, out: &mut Vec<u8>) {
    if chunked {
        encode_chunk(data, out);
    } else {
        out.extend_from_slice(data);
    }
}

/// Everything after the request line and Host: end-to-end headers from the client, the
/// gateway's forwarding headers, the injected credential and the body framing.
fn upstream_head_tail(
    head: &RequestHead,
    ctx: &RequestCtx,
    route: &Route,
    upstream: &Upstream,
    bearer: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let upgrade = head.is_upgrade();
    let mut forwarded_for: Option<Vec<u8>> = None;
    // The client's headers, or a Lua hook's edit of them.
    let mut from_hook;
    let mut from_client;
    let headers: &mut dyn Iterator<Item = (&str, &[u8])> = match ctx.hooked.as_deref() {
        Some(h) if h.req.headers_changed => {
            from_hook = h
                .req
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes()));
            &mut from_hook
        }
        _ => {
            from_client = head.headers();
            &mut from_client
        }
    };
    for (name, value) in headers {
        if head.is_hop_by_hop(name) && !(upgrade && name.eq_ignore_ascii_case("upgrade")) {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            let prior = forwarded_for.get_or_insert_with(Vec::new);
            if !prior.is_empty() {
                prior.extend_from_slice(b", ");
            }
            prior.extend_from_slice(value);
            continue;
        }
        if is_replaced_header(name)
            || (route.strip_client_credentials && is_client_credential(name))
            || (upstream.injects_credential() && is_client_credential(name))
        {
            continue;
        }
        push_header(&mut out, name, value);
    }
    let mut xff = forwarded_for.unwrap_or_default();
    if !xff.is_empty() {
        xff.extend_from_slice(b", ");
    }
    let _ = write!(StrBuf(&mut xff), "{}", ctx.client_addr.ip());
    push_header(&mut out, "x-forwarded-for", &xff);
    push_header(
        &mut out,
        "x-forwarded-proto",
        if ctx.https { b"https" } else { b"http" },
    );
    push_header(&mut out, "x-forwarded-host", head.host().as_bytes());
    push_header(&mut out, "x-request-id", ctx.request_id.as_bytes());
    if let Some((name, value)) = upstream.credential_header() {
        push_header(&mut out, name, value.as_bytes());
    }
    if let Some(token) = bearer {
        // Checked to be visible ASCII when it was issued (`identity::oauth2`).
        out.extend_from_slice(b"authorization: Bearer ");
        out.extend_from_slice(token.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match head.body() {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            let _ = write!(StrBuf(&mut out), "content-length: {n}\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `x-ratelimit-*`, OpenAI's rate-limit headers.
fn is_rate_limit_header(name: &str) -> bool {
    name.len() > 12 && name.as_bytes()[..12].eq_ignore_ascii_case(b"x-ratelimit-")
}

/// Headers the gateway sets itself, or must not forward: Expect is answered here, and bodies
/// are re-framed with trailers dropped, so `Trailer` would announce trailers that never come.
fn is_replaced_header(name: &str) -> bool {
    [
        "host",
        "content-length",
        "transfer-encoding",
        "trailer",
        "expect",
        "x-request-id",
        "x-forwarded-proto",
        "x-forwarded-host",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// The headers a client presents its credential in (README, "Reverse proxy behaviour": never
/// forwarded upstream on an authenticated route or where the gateway injects its own).
pub fn is_client_credential(name: &str) -> bool {
    ["authorization", "x-api-key", "api-key"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// The path (and query) sent upstream, with the route prefix removed when `strip_prefix`.
fn forwarded_path(head: &RequestHead, ctx: &RequestCtx, route: &Route) -> String {
    // An `on_request` hook may have rewritten path and query.
    let (path, query) = match ctx.hooked.as_deref() {
        Some(h) if h.req.target_changed => (h.req.path.as_str(), h.req.query.as_deref()),
        _ => (head.path(), head.query()),
    };
    let rest = if route.strip_prefix {
        path.strip_prefix(route.path_prefix.as_str())
            .unwrap_or(path)
    } else {
        path
    };
    let mut forwarded = String::with_capacity(rest.len() + 1 + query.map_or(0, |q| q.len() + 1));
    if !rest.starts_with('/') {
        forwarded.push('/');
    }
    forwarded.push_str(rest);
    if let Some(q) = query {
        forwarded.push('?');
        forwarded.push_str(q);
    }
    forwarded
}
