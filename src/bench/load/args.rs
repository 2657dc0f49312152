//! The `credentialflow bench URL [options]` command line, and its checks before the run.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::request::{encode_requests, load_keys, parse_header, RequestSpec};
use super::target;
use super::Options;
use crate::clock::parse_duration;

/// `credentialflow bench URL [options]`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The URL to load: http://HOST[:PORT][/PATH] or https://...
    pub url: String,
    /// Connections, kept alive and spread over the threads.
    #[arg(short = 'c', long, default_value_t = 10)]
    pub connections: usize,
    /// How long to measure, e.g. 10s, 500ms, 2m (default 10s unless -n is given).
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Total requests to record (with -d too: whichever ends first).
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Open loop: requests per second in total, latency measured from each request's
    /// intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Load threads, each with its own runtime (0 = one per core, at most one per connection).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Request method (default GET, or POST with a body).
    #[arg(short = 'm', long)]
    pub method: Option<String>,
    /// A request header, 'name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// The request body.
    #[arg(short = 'b', long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the request body from this file.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// API keys, one per line, rotated across requests as `Authorization: Bearer <key>`.
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// Responses are server-sent events: also measure the time to the first and last event.
    #[arg(long)]
    pub stream: bool,
    /// Send requests for this long first without recording them, e.g. 2s.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Give up on a request (connect included) after this long; it counts as a timeout.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
    /// https: accept any server certificate (self-signed test certificates).
    #[arg(long)]
    pub insecure: bool,
    /// https: also trust the CA certificates in this PEM file.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// Checks the arguments and prepares the run: parses the URL, reads the body and keys
    /// files, encodes the requests and builds the TLS configuration.
    pub fn into_options(self) -> Result<Options, String> {
        if self.connections == 0 {
            return Err("-c must be at least 1".to_string());
        }
        if self.requests == Some(0) {
            return Err("-n must be at least 1".to_string());
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err("-d must be longer than 0".to_string());
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err("--rate must be a positive number of requests per second".into());
            }
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be longer than 0".to_string());
        }
        let target = target::parse(&self.url)?;
        let body = match (&self.body, &self.body_file) {
            (Some(body), _) => body.as_bytes().to_vec(),
            (None, Some(path)) => std::fs::read(path)
                .map_err(|e| format!("cannot read --body-file {}: {e}", path.display()))?,
            (None, None) => Vec::new(),
        };
        let has_body = self.body.is_some() || self.body_file.is_some();
        let method = match self.method {
            Some(m) => m,
            None if has_body => "POST".to_string(),
            None => "GET".to_string(),
        };
        let keys = match &self.keys {
            Some(path) => load_keys(path)?,
            None => Vec::new(),
        };
        let head_request = method == "HEAD";
        let spec = RequestSpec {
            method,
            headers: self.headers,
            body,
        };
        let encoded = encode_requests(&target, &spec, &keys)?;
        let tls = if target.tls() {
            Some(super::tls::client_config(
                self.insecure,
                self.ca_file.as_deref(),
            )?)
        } else {
            None
        };
        let duration = match (self.duration, self.requests) {
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d,
        };
        Ok(Options {
            url: self.url,
            target,
            connections: self.connections,
            threads: self.threads,
            duration,
            requests: self.requests,
            rate: self.rate,
            warmup: self.warmup,
            timeout: self.timeout,
            encoded,
            head_request,
            stream: self.stream,
            tls,
            progress: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| cli.args)
    }

    fn options(args: &[&str]) -> Result<Options, String> {
        parse(args).expect("parses").into_options()
    }

    #[test]
    fn durations_use_the_one_grammar() {
        let duration = |args: &[&str]| parse(args).map(|a| a.duration);
        assert_eq!(
            duration(&["http://h/", "-d", "10s"]).unwrap(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            duration(&["http://h/", "-d", "500ms"]).unwrap(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            duration(&["http://h/", "-d", "1s500ms"]).unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            duration(&["http://h/", "-d", "2m"]).unwrap(),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            duration(&["http://h/", "-d", "1h"]).unwrap(),
            Some(Duration::from_secs(3600))
        );
        // Days too, which the bench's former grammar lacked.
        assert_eq!(
            duration(&["http://h/", "-d", "1d"]).unwrap(),
            Some(Duration::from_secs(86_400))
        );
        let warmup = parse(&["http://h/", "--warmup", "2s", "--timeout", "1m"]).unwrap();
        assert_eq!(
            (warmup.warmup, warmup.timeout),
            (Duration::from_secs(2), Duration::from_secs(60))
        );
    }

    #[test]
    fn bad_durations_are_refused() {
        for text in ["", "s", "10x", "1.2.3s", "10 s", "3", "1.5s"] {
            for flag in ["-d", "--warmup", "--timeout"] {
                let error = parse(&["http://h/", flag, text]).unwrap_err().to_string();
                assert!(error.contains("30d"), "{flag} {text:?}: {error}");
            }
        }
    }

    #[test]
    fn defaults_are_10_connections_for_10_seconds_closed_loop() {
        let opts = options(&["http://127.0.0.1:1/"]).unwrap();
        assert_eq!(opts.connections, 10);
        assert_eq!(opts.duration, Some(Duration::from_secs(10)));
        assert_eq!((opts.requests, opts.rate), (None, None));
        assert!(opts.tls.is_none());
    }

    #[test]
    fn requests_without_duration_run_until_done() {
        let opts = options(&["http://h/", "-n", "2000", "-c", "8"]).unwrap();
        assert_eq!((opts.requests, opts.duration), (Some(2000), None));
    }

    #[test]
    fn body_without_method_is_a_post() {
        let opts = options(&["http://h/", "-b", "{}"]).unwrap();
        let request = String::from_utf8(opts.encoded[0].to_vec()).unwrap();
        assert!(request.starts_with("POST / HTTP/1.1\r\n"), "{request}");
        assert!(
            request.ends_with("content-length: 2\r\n\r\n{}"),
            "{request}"
        );
    }

    #[test]
    fn headers_and_method_come_from_flags() {
        let opts = options(&["http://h/", "-m", "PUT", "-H", "x-a: 1", "-H", "x-b:2"]).unwrap();
        let request = String::from_utf8(opts.encoded[0].to_vec()).unwrap();
        assert!(request.starts_with("PUT / HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("x-a: 1\r\nx-b: 2\r\n"), "{request}");
    }

    #[test]
    fn head_method_is_flagged_for_bodyless_responses() {
        assert!(options(&["http://h/", "-m", "HEAD"]).unwrap().head_request);
    }

    #[test]
    fn body_and_body_file_conflict() {
        assert!(parse(&["http://h/", "-b", "x", "--body-file", "f"]).is_err());
    }

    #[test]
    fn malformed_header_flag_is_refused_by_the_parser() {
        assert!(parse(&["http://h/", "-H", "no colon"]).is_err());
    }

    #[test]
    fn zero_connections_requests_or_rate_are_refused() {
        assert!(options(&["http://h/", "-c", "0"]).is_err());
        assert!(options(&["http://h/", "-n", "0"]).is_err());
        assert!(options(&["http://h/", "--rate", "0"]).is_err());
        assert!(options(&["http://h/", "--rate=-5"]).is_err());
        assert!(options(&["http://h/", "-d", "0s"]).is_err());
    }

    #[test]
    fn bad_url_is_refused_before_the_run() {
        let err = options(&["localhost:8080"]).unwrap_err();
        assert!(err.contains("bad URL"), "{err}");
    }

    #[test]
    fn https_url_gets_a_tls_configuration() {
        assert!(options(&["https://h/", "--insecure"])
            .unwrap()
            .tls
            .is_some());
    }

    #[test]
    fn missing_keys_file_is_refused() {
        let err = options(&["http://h/", "--keys", "/nonexistent/keys"]).unwrap_err();
        assert!(err.contains("--keys"), "{err}");
    }
}
