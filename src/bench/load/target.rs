//! The URL under test is a [`HttpUrl`]: the config's one URL parser, so `bench` refuses the
//! URLs the gateway refuses, with the same words. What only the load generator needs of it
//! is here.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::config::HttpUrl;

/// Parses the URL given on the command line; the error says it is a bad URL and why.
pub fn parse(url: &str) -> Result<HttpUrl, String> {
    HttpUrl::parse(url).map_err(|e| format!("bad URL {e}"))
}

/// Resolves the host once, before the run (the first address is used for every
/// connection, so name resolution never runs on the load threads).
pub fn resolve(url: &HttpUrl) -> Result<SocketAddr, String> {
    (url.host(), url.port())
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host()))?
        .next()
        .ok_or_else(|| format!("cannot resolve {}: no address", url.host()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_url_is_called_a_bad_url() {
        let error = parse("localhost:8080/").unwrap_err();
        assert!(error.starts_with("bad URL `localhost:8080/`"), "{error}");
        assert!(error.contains("http:// or https://"), "{error}");
    }

    #[test]
    fn localhost_resolves() {
        let url = parse("http://127.0.0.1:1/").unwrap();
        assert_eq!(resolve(&url).unwrap(), "127.0.0.1:1".parse().unwrap());
    }
}
