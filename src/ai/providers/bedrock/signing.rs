//! SigV4 signing of a Bedrock provider's requests: the credentials come from a
//! [`CredentialSource`] (static keys: a fixed source; temporary ones: a source that refreshes
//! them), and each request is signed on the hot path with a [`Signer`] made once per
//! credential generation, so the signing key is derived once per day and credential rather
//! than per request.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::config::Secret;
use crate::http1::push_header;
use crate::identity::sigv4::{Credentials, Payload, Request, SigV4Error, Signer, SigningOptions};
use crate::identity::source::CredentialSource;

/// The SigV4 service name of Bedrock's runtime API (its endpoint is `bedrock-runtime`, its
/// signing name `bedrock`, as in botocore's service model).
pub const SERVICE: &str = "bedrock";

/// How one Bedrock provider signs: its credential source and region, and the signer of the
/// credentials in force.
pub struct AwsSigning {
    source: Arc<CredentialSource<Credentials>>,
    region: String,
    /// The signer of the generation last signed with; replaced when the source moves on.
    signer: ArcSwapOption<(u64, Signer)>,
}

impl std::fmt::Debug for AwsSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSigning")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl AwsSigning {
    /// Signing for `region` with the credentials of `source`; the region must be one a
    /// credential scope can hold.
    pub fn new(
        source: Arc<CredentialSource<Credentials>>,
        region: &str,
    ) -> Result<AwsSigning, SigV4Error> {
        // Checks the region (and service) once, here, rather than on the first request.
        Signer::new(
            Credentials::new("", ""),
            region,
            SERVICE,
            SigningOptions::default(),
        )?;
        Ok(AwsSigning {
            source,
            region: region.to_string(),
            signer: ArcSwapOption::empty(),
        })
    }

    /// The credential source, to ask it for a refresh when Bedrock refuses a signature.
    pub fn source(&self) -> &Arc<CredentialSource<Credentials>> {
        &self.source
    }

    /// The generation of the credentials in force; `None` when there are none (the call
    /// then gets 502 `upstream_credential_unavailable`).
    pub fn in_force(&self) -> Option<u64> {
        self.source.current().map(|current| current.generation)
    }

    /// The session token in force, as a value no error may show a client.
    pub fn session_token(&self) -> Option<Secret> {
        let current = self.source.current()?;
        current.credential.session_token().map(Secret::new)
    }

    /// Appends the SigV4 headers (`x-amz-date`, `x-amz-security-token` for temporary
    /// credentials, `authorization`) of a `POST` of `body` to `path` (as on the wire, its query
    /// included) on `host`, sent as `content_type`, at `unix_seconds`. The headers signed are
    /// `content-type`, `host` and `x-amz-date` (and the token): the ones botocore signs that
    /// the gateway sends. Without credentials in force nothing is appended (callers check
    /// [`AwsSigning::in_force`] first).
    pub fn push_headers(
        &self,
        host: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
        unix_seconds: i64,
        out: &mut Vec<u8>,
    ) -> Result<(), SigV4Error> {
        let Some(signer) = self.signer() else {
            return Ok(());
        };
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let headers = [("content-type", content_type), ("host", host)];
        let request = Request {
            method: "POST",
            path,
            query,
            headers: &headers,
            payload: Payload::Body(body),
        };
        let signature = signer.1.sign(&request, unix_seconds)?;
        for (name, value) in signature.headers() {
            push_header(out, name, value.as_bytes());
        }
        Ok(())
    }

    /// The signer of the credentials in force, made when they changed since the last call.
    fn signer(&self) -> Option<Arc<(u64, Signer)>> {
        let current = self.source.current()?;
        if let Some(signer) = self.signer.load_full() {
            if signer.0 == current.generation {
                return Some(signer);
            }
        }
        let signer = Signer::new(
            current.credential.clone(),
            &self.region,
            SERVICE,
            SigningOptions::default(),
        )
        .ok()?;
        let signer = Arc::new((current.generation, signer));
        // Two workers racing here each make one; either is right for this generation.
        self.signer.store(Some(Arc::clone(&signer)));
        Some(signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(out: &'a str, name: &str) -> Option<&'a str> {
        out.split("\r\n")
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
    }

    #[test]
    fn static_keys_sign_each_request_with_one_derived_key() {
        let source = Arc::new(CredentialSource::fixed(Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        )));
        let signing = AwsSigning::new(source, "us-east-1").unwrap();
        assert_eq!(signing.in_force(), Some(1));
        let mut out = Vec::new();
        let path = "/model/anthropic.claude-3%3A0/converse";
        signing
            .push_headers(
                "h:1",
                path,
                "application/json",
                b"{}",
                1_440_938_160,
                &mut out,
            )
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(header(&out, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(header(&out, "x-amz-security-token"), None);
        let auth = header(&out, "authorization").unwrap();
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="
        ), "{auth}");
        assert!(
            !out.contains("wJalrXUtnFEMI"),
            "the secret never goes on the wire"
        );
        let mut again = Vec::new();
        signing
            .push_headers(
                "h:1",
                path,
                "application/json",
                b"{}",
                1_440_938_161,
                &mut again,
            )
            .unwrap();
        assert_eq!(signing.signer().unwrap().1.key_derivations(), 1);
    }

    #[test]
    fn temporary_credentials_send_and_sign_their_session_token() {
        let source = Arc::new(CredentialSource::fixed(Credentials::with_session_token(
            "ASIAEXAMPLE",
            "secret",
            "session-token-value",
        )));
        let signing = AwsSigning::new(source, "eu-west-3").unwrap();
        let mut out = Vec::new();
        signing
            .push_headers(
                "h",
                "/model/m/converse",
                "application/json",
                b"{}",
                0,
                &mut out,
            )
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            header(&out, "x-amz-security-token"),
            Some("session-token-value")
        );
        assert!(header(&out, "authorization")
            .unwrap()
            .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"));
        assert_eq!(
            signing.session_token().unwrap().expose(),
            "session-token-value"
        );
    }

    #[test]
    fn without_credentials_nothing_is_signed_and_a_bad_region_is_refused() {
        let signing =
            AwsSigning::new(Arc::new(CredentialSource::unstarted()), "us-east-1").unwrap();
        assert_eq!(signing.in_force(), None);
        let mut out = Vec::new();
        signing
            .push_headers("h", "/", "application/json", b"", 0, &mut out)
            .unwrap();
        assert!(out.is_empty());
        let source = Arc::new(CredentialSource::unstarted());
        assert!(AwsSigning::new(source, "us/east").is_err());
    }
}
