//! The requests the generator sends, encoded once before the run: one complete request
//! (head and body) per API key, so the load threads only copy bytes.

use std::path::Path;

use crate::http1::{is_valid_field_name, is_valid_field_value};

use crate::config::HttpUrl;

/// What to send, from the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestSpec {
    /// The method, e.g. `GET`.
    pub method: String,
    /// Extra header fields, in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Vec<u8>,
}

/// Parses one `-H 'name: value'` argument (RFC 9110 section 5: a token, a colon, a value
/// without CR, LF or NUL; whitespace around the value is not part of it).
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("bad header {text:?}: use 'name: value'"))?;
    let value = value.trim_matches([' ', '\t']);
    if !is_valid_field_name(name) {
        return Err(format!("bad header {text:?}: {name:?} is not a field name"));
    }
    if !is_valid_field_value(value.as_bytes()) {
        return Err(format!("bad header {text:?}: the value has control bytes"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Reads API keys, one per line; blank lines and lines starting with `#` are skipped.
/// Every key must be usable in `Authorization: Bearer <key>` (RFC 6750 section 2.1: no
/// whitespace, printable ASCII).
pub fn load_keys(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --keys {}: {e}", path.display()))?;
    parse_keys(&text).map_err(|e| format!("--keys {}: {e}", path.display()))
}

/// The keys of a `--keys` file's text (see [`load_keys`]).
pub fn parse_keys(text: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let key = line.trim();
        if key.is_empty() || key.starts_with('#') {
            continue;
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            // The error names the line, never the key: it is a secret.
            return Err(format!(
                "line {}: a key must be printable ASCII without spaces",
                n + 1
            ));
        }
        keys.push(key.to_string());
    }
    if keys.is_empty() {
        return Err("no keys in the file".to_string());
    }
    Ok(keys)
}

/// Encodes the request once per key (or once, without keys). Each is a complete HTTP/1.1
/// request: request line, `Host` (unless given with -H), `User-Agent` (unless given), the
/// -H fields, `Authorization: Bearer <key>`, `Content-Length` and the body.
///
/// Framing stays ours: `Content-Length` and `Transfer-Encoding` from -H are refused, as is
/// `Authorization` together with keys (the keys would silently lose).
pub fn encode_requests(
    target: &HttpUrl,
    spec: &RequestSpec,
    keys: &[String],
) -> Result<Vec<Box<[u8]>>, String> {
    if !is_valid_field_name(&spec.method) {
        return Err(format!("bad method {:?}: it must be a token", spec.method));
    }
    let has = |name: &str| {
        spec.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    for framing in ["content-length", "transfer-encoding"] {
        if has(framing) {
            return Err(format!(
                "-H {framing} is not allowed: the body's framing is set from -b/--body-file"
            ));
        }
    }
    if !keys.is_empty() && has("authorization") {
        return Err("-H authorization and --keys both set the credential: use one".to_string());
    }
    let mut head = format!("{} {} HTTP/1.1\r\n", spec.method, target.request_target());
    if !has("host") {
        head.push_str(&format!("host: {}\r\n", target.host_header()));
    }
    if !has("user-agent") {
        head.push_str(concat!(
            "user-agent: credentialflow-bench/",
            env!("CARGO_PKG_VERSION"),
            "\r\n"
        ));
    }
    for (name, value) in &spec.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    // RFC 9110 section 8.6: a user agent sends Content-Length when the method gives the
    // content a meaning, even for an empty body.
    let sends_length =
        !spec.body.is_empty() || matches!(spec.method.as_str(), "POST" | "PUT" | "PATCH");
    let mut tail = String::new();
    if sends_length {
        tail.push_str(&format!("content-length: {}\r\n", spec.body.len()));
    }
    tail.push_str("\r\n");
    let encode = |key: Option<&str>| {
        let mut out = Vec::with_capacity(head.len() + tail.len() + spec.body.len() + 64);
        out.extend_from_slice(head.as_bytes());
        if let Some(key) = key {
            out.extend_from_slice(b"authorization: Bearer ");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(tail.as_bytes());
        out.extend_from_slice(&spec.body);
        out.into_boxed_slice()
    };
    if keys.is_empty() {
        Ok(vec![encode(None)])
    } else {
        Ok(keys.iter().map(|k| encode(Some(k))).collect())
    }
}

/// Round-robin over `len` encoded requests. Each load thread has its own, starting at a
/// different offset, so the threads together spread requests evenly over the keys without
/// sharing a counter.
#[derive(Clone, Debug)]
pub struct KeyRotation {
    next: usize,
    len: usize,
}

impl KeyRotation {
    /// A rotation over `len` (at least 1) entries, starting at `start % len`.
    pub fn new(start: usize, len: usize) -> KeyRotation {
        let len = len.max(1);
        KeyRotation {
            next: start % len,
            len,
        }
    }

    /// The index of the request to send next.
    pub fn next_index(&mut self) -> usize {
        let index = self.next;
        self.next = (self.next + 1) % self.len;
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> HttpUrl {
        HttpUrl::parse("http://127.0.0.1:9000/v1/chat?x=1").unwrap()
    }

    fn get() -> RequestSpec {
        RequestSpec {
            method: "GET".into(),
            ..RequestSpec::default()
        }
    }

    fn text(request: &[u8]) -> String {
        String::from_utf8(request.to_vec()).unwrap()
    }

    #[test]
    fn get_has_request_line_host_and_user_agent_and_no_length() {
        let requests = encode_requests(&target(), &get(), &[]).unwrap();
        assert_eq!(requests.len(), 1);
        let r = text(&requests[0]);
        assert!(
            r.starts_with("GET /v1/chat?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9000\r\n"),
            "{r}"
        );
        assert!(r.contains("user-agent: credentialflow-bench/"), "{r}");
        assert!(!r.contains("content-length"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "{r}");
    }

    #[test]
    fn body_gets_content_length_and_follows_the_head() {
        let spec = RequestSpec {
            method: "POST".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{\"a\":1}".to_vec(),
        };
        let r = text(&encode_requests(&target(), &spec, &[]).unwrap()[0]);
        assert!(r.contains("content-type: application/json\r\n"), "{r}");
        assert!(r.ends_with("content-length: 7\r\n\r\n{\"a\":1}"), "{r}");
    }

    #[test]
    fn post_without_body_sends_content_length_zero() {
        let spec = RequestSpec {
            method: "POST".into(),
            ..RequestSpec::default()
        };
        let r = text(&encode_requests(&target(), &spec, &[]).unwrap()[0]);
        assert!(r.ends_with("content-length: 0\r\n\r\n"), "{r}");
    }

    #[test]
    fn one_request_per_key_with_its_bearer_credential() {
        let keys = vec!["k1".to_string(), "k2".to_string()];
        let requests = encode_requests(&target(), &get(), &keys).unwrap();
        assert_eq!(requests.len(), 2);
        assert!(text(&requests[0]).contains("authorization: Bearer k1\r\n"));
        assert!(text(&requests[1]).contains("authorization: Bearer k2\r\n"));
    }

    #[test]
    fn host_and_user_agent_from_flags_replace_the_defaults() {
        let mut spec = get();
        spec.headers = vec![
            ("Host".into(), "api.example".into()),
            ("User-Agent".into(), "me".into()),
        ];
        let r = text(&encode_requests(&target(), &spec, &[]).unwrap()[0]);
        assert_eq!(
            r.matches("host:").count() + r.matches("Host:").count(),
            1,
            "{r}"
        );
        assert!(r.contains("Host: api.example\r\n"), "{r}");
        assert!(!r.contains("credentialflow-bench"), "{r}");
    }

    #[test]
    fn framing_headers_from_flags_are_refused() {
        for name in ["Content-Length", "transfer-encoding"] {
            let mut spec = get();
            spec.headers = vec![(name.into(), "5".into())];
            assert!(encode_requests(&target(), &spec, &[]).is_err(), "{name}");
        }
    }

    #[test]
    fn authorization_header_and_keys_together_are_refused() {
        let mut spec = get();
        spec.headers = vec![("Authorization".into(), "Bearer x".into())];
        let err = encode_requests(&target(), &spec, &["k".into()]).unwrap_err();
        assert!(err.contains("--keys"), "{err}");
    }

    #[test]
    fn method_must_be_a_token() {
        let mut spec = get();
        spec.method = "GE T".into();
        assert!(encode_requests(&target(), &spec, &[]).is_err());
    }

    #[test]
    fn header_argument_is_split_at_the_first_colon_and_trimmed() {
        assert_eq!(
            parse_header("x-a:  b: c ").unwrap(),
            ("x-a".to_string(), "b: c".to_string())
        );
    }

    #[test]
    fn header_argument_without_colon_or_with_bad_name_is_refused() {
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("bad name: v").is_err());
        assert!(parse_header(": v").is_err());
    }

    #[test]
    fn keys_file_skips_blank_and_comment_lines() {
        let keys = parse_keys("# team a\nk1\n\n  k2  \n").unwrap();
        assert_eq!(keys, vec!["k1".to_string(), "k2".to_string()]);
    }

    #[test]
    fn keys_file_with_a_spaced_key_is_refused_without_quoting_it() {
        let err = parse_keys("good\nsecret part\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn empty_keys_file_is_refused() {
        assert!(parse_keys("\n# nothing\n").is_err());
    }

    #[test]
    fn rotation_visits_every_key_in_turn() {
        let mut rotation = KeyRotation::new(0, 3);
        let order: Vec<usize> = (0..7).map(|_| rotation.next_index()).collect();
        assert_eq!(order, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn rotations_of_different_threads_start_at_their_offset() {
        let mut rotation = KeyRotation::new(4, 3);
        assert_eq!(rotation.next_index(), 1);
    }

    #[test]
    fn rotation_spreads_requests_evenly_over_keys() {
        let mut counts = [0usize; 4];
        for thread in 0..2 {
            let mut rotation = KeyRotation::new(thread * 2, 4);
            for _ in 0..100 {
                counts[rotation.next_index()] += 1;
            }
        }
        assert_eq!(counts, [50, 50, 50, 50]);
    }
}
