//! Routes with `auth = "jwt"` (issue 3, "JWT"): good tokens under every
//! supported algorithm and key source, and every bad shape rejected with 401.

mod common;

use common::jwt::*;
use common::keys::*;
use common::*;
use serde_json::{json, Value};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "cf-tests";
const HS_SECRET: &str = "hs256-test-secret-of-at-least-32-bytes!";
const KID: &str = "test-rsa-1";

/// A gateway with one JWT route per key source, the keys that sign for them
/// and the upstreams behind them.
struct JwtSetup {
    upstream: Upstream,
    jwks: Upstream,
    es256: GeneratedKey,
    ed25519: GeneratedKey,
    gw: Gateway,
}

/// One `auth = "jwt"` route named `name` on `/name/` with `jwt_fields`.
fn jwt_route(name: &str, jwt_fields: &str, extra: &str) -> String {
    format!(
        "\n[[route]]\nname = \"{name}\"\npath_prefix = \"/{name}/\"\nupstream = \"backend\"\n\
         auth = \"jwt\"\n{extra}\njwt = {{ issuer = \"{ISSUER}\", audience = \"{AUDIENCE}\", \
         leeway_s = 5, {jwt_fields} }}\n"
    )
}

fn jwt_gateway(driver: Driver) -> JwtSetup {
    let upstream = Upstream::echo("backend");
    let jwks_body = rsa_jwks(KID).to_string();
    let jwks = Upstream::replying(
        "jwks",
        Reply::Fixed {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Cache-Control".into(), "max-age=300".into()),
            ],
            body: jwks_body.into_bytes(),
        },
    );
    let es256 = generate_es256();
    let ed25519 = generate_ed25519();
    let mut rest = upstream_toml("backend", &upstream.target(), "");
    rest += &jwt_route("hs", "hs_secret = \"env:CF_TEST_JWT_HS\"", "");
    rest += &jwt_route(
        "rs",
        &format!("public_key = {}", toml_string(RSA_PUBLIC_PEM)),
        "",
    );
    rest += &jwt_route(
        "es",
        &format!("public_key = {}", toml_string(&es256.public_pem)),
        "",
    );
    rest += &jwt_route(
        "ed",
        &format!("public_key = {}", toml_string(&ed25519.public_pem)),
        "",
    );
    rest += &jwt_route(
        "jwks",
        &format!(
            "jwks_url = \"http://{}/.well-known/jwks.json\"",
            jwks.addr()
        ),
        "",
    );
    rest += &jwt_route(
        "scoped",
        "hs_secret = \"env:CF_TEST_JWT_HS\"",
        "scopes = [\"orders:write\"]",
    );
    let gw = Gateway::builder(&config(&rest), driver)
        .env("CF_TEST_JWT_HS", HS_SECRET)
        .start();
    JwtSetup {
        upstream,
        jwks,
        es256,
        ed25519,
        gw,
    }
}

/// Claims that pass every check: right issuer and audience, valid now.
fn good_claims() -> Value {
    let now = now();
    json!({
        "sub": "alice",
        "team": "payments",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now - 10,
        "exp": now + 600,
    })
}

/// `good_claims` with `field` set to `value`.
fn claims_with(field: &str, value: Value) -> Value {
    let mut claims = good_claims();
    claims[field] = value;
    claims
}

impl JwtSetup {
    /// `GET /route/x` presenting `token` as a Bearer token.
    fn get(&self, route: &str, token: &str) -> Response {
        get_with_key(self.gw.addr(), &format!("/{route}/x"), Some(token))
    }

    /// Fails unless `token` gets through `route` to the upstream, without
    /// the token being forwarded.
    fn assert_accepted(&self, route: &str, token: &str) {
        let response = self.get(route, token);
        assert_eq!(
            response.status,
            200,
            "route {route}: expected the token accepted, got {} {}",
            response.status,
            response.text()
        );
        let echo = Echo::of(&response);
        assert!(
            echo.headers.iter().all(|(_, v)| !v.contains(token)),
            "the JWT was forwarded upstream: {:?}",
            echo.headers
        );
    }

    /// Fails unless `token` is rejected on `route` with 401, unforwarded.
    fn assert_rejected(&self, route: &str, token: &str) {
        let before = self.upstream.request_count();
        assert_unauthenticated(&self.get(route, token));
        assert_eq!(
            self.upstream.request_count(),
            before,
            "a rejected request was forwarded"
        );
    }
}

#[test]
fn test_signer_base64url_matches_rfc_4648_vectors_without_padding() {
    assert_eq!(b64url(b""), "");
    assert_eq!(b64url(b"f"), "Zg");
    assert_eq!(b64url(b"fo"), "Zm8");
    assert_eq!(b64url(b"foo"), "Zm9v");
    assert_eq!(b64url(b"foob"), "Zm9vYg");
    assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
}

on_default_driver! {
    fn hs256_token_is_accepted(driver) {
        let s = jwt_gateway(driver);
        s.assert_accepted("hs", &token(&Signer::hs256(HS_SECRET.as_bytes()), &good_claims()));
    }
}

on_default_driver! {
    fn rs256_token_is_accepted_with_a_public_key_pem(driver) {
        let s = jwt_gateway(driver);
        s.assert_accepted("rs", &token(&Signer::rs256(), &good_claims()));
    }
}

on_default_driver! {
    fn es256_token_is_accepted_with_a_public_key_pem(driver) {
        let s = jwt_gateway(driver);
        s.assert_accepted("es", &token(&s.es256.signer, &good_claims()));
    }
}

on_default_driver! {
    fn eddsa_token_is_accepted_with_a_public_key_pem(driver) {
        let s = jwt_gateway(driver);
        s.assert_accepted("ed", &token(&s.ed25519.signer, &good_claims()));
    }
}

on_default_driver! {
    fn rs256_token_is_accepted_with_a_key_from_the_jwks_url(driver) {
        let s = jwt_gateway(driver);
        let jwt = sign(&Signer::rs256(), json!({ "kid": KID }), &good_claims());
        s.assert_accepted("jwks", &jwt);
        assert!(s.jwks.request_count() >= 1, "the JWKS was never fetched");
    }
}

on_default_driver! {
    fn missing_or_malformed_token_is_401(driver) {
        let s = jwt_gateway(driver);
        assert_unauthenticated(&get_with_key(s.gw.addr(), "/hs/x", None));
        s.assert_rejected("hs", "not-a-jwt");
        s.assert_rejected("hs", "a.b.c");
        assert_eq!(s.upstream.request_count(), 0);
    }
}

on_default_driver! {
    fn expired_token_is_401(driver) {
        let s = jwt_gateway(driver);
        let now = now();
        // Expired well beyond the 5 s leeway.
        let claims = claims_with("exp", json!(now - 120));
        s.assert_rejected("hs", &token(&Signer::hs256(HS_SECRET.as_bytes()), &claims));
        s.assert_rejected("rs", &token(&Signer::rs256(), &claims));
    }
}

on_default_driver! {
    fn token_not_yet_valid_is_401(driver) {
        let s = jwt_gateway(driver);
        let claims = claims_with("nbf", json!(now() + 120));
        s.assert_rejected("hs", &token(&Signer::hs256(HS_SECRET.as_bytes()), &claims));
        s.assert_rejected("es", &token(&s.es256.signer, &claims));
    }
}

on_default_driver! {
    fn wrong_issuer_is_401(driver) {
        let s = jwt_gateway(driver);
        let claims = claims_with("iss", json!("https://evil.test"));
        s.assert_rejected("hs", &token(&Signer::hs256(HS_SECRET.as_bytes()), &claims));
        s.assert_rejected("ed", &token(&s.ed25519.signer, &claims));
    }
}

on_default_driver! {
    fn wrong_audience_is_401(driver) {
        let s = jwt_gateway(driver);
        let claims = claims_with("aud", json!("someone-else"));
        s.assert_rejected("hs", &token(&Signer::hs256(HS_SECRET.as_bytes()), &claims));
        s.assert_rejected("rs", &token(&Signer::rs256(), &claims));
    }
}

on_default_driver! {
    fn token_signed_with_another_key_is_401(driver) {
        let s = jwt_gateway(driver);
        let claims = good_claims();
        let other_hs = Signer::hs256(b"another-secret-of-at-least-32-bytes!!");
        s.assert_rejected("hs", &token(&other_hs, &claims));
        let other_ec = generate_es256();
        s.assert_rejected("es", &token(&other_ec.signer, &claims));
        let other_ed = generate_ed25519();
        s.assert_rejected("ed", &token(&other_ed.signer, &claims));
        // Another algorithm and a key the route does not trust.
        s.assert_rejected("rs", &token(&s.es256.signer, &claims));
    }
}

on_default_driver! {
    fn unknown_kid_is_401_after_refetching_the_jwks(driver) {
        let s = jwt_gateway(driver);
        s.assert_accepted("jwks", &sign(&Signer::rs256(), json!({ "kid": KID }), &good_claims()));
        let fetched = s.jwks.request_count();
        let jwt = sign(&Signer::rs256(), json!({ "kid": "no-such-kid" }), &good_claims());
        s.assert_rejected("jwks", &jwt);
        // Refetched on an unknown kid (rate-limited), off the hot path: it
        // may land just after the 401.
        wait_until(WAIT, || s.jwks.request_count() > fetched);
        s.assert_rejected("jwks", &jwt);
        assert!(
            s.jwks.request_count() <= fetched + 2,
            "the JWKS refetch on unknown kids is not rate-limited: {} fetches",
            s.jwks.request_count()
        );
    }
}

on_default_driver! {
    fn alg_none_is_401(driver) {
        let s = jwt_gateway(driver);
        for route in ["hs", "rs", "es", "ed", "jwks"] {
            let unsigned = sign(&Signer::Unsigned, json!({ "kid": KID }), &good_claims());
            s.assert_rejected(route, &unsigned);
            // Case games and a signature that is not empty change nothing.
            let upper = json!({ "alg": "NONE", "kid": KID });
            let none_upper = sign(&Signer::Unsigned, upper, &good_claims());
            s.assert_rejected(route, &none_upper);
            let hs = Signer::hs256(HS_SECRET.as_bytes());
            let with_sig = sign(&hs, json!({ "alg": "none" }), &good_claims());
            s.assert_rejected(route, &with_sig);
        }
    }
}

on_default_driver! {
    fn hs256_signed_with_the_rsa_public_key_is_401(driver) {
        // The classic confusion: a verifier that takes `alg` from the token
        // would check this HMAC with the PEM bytes as the secret.
        let s = jwt_gateway(driver);
        let claims = good_claims();
        for secret in [RSA_PUBLIC_PEM.as_bytes(), RSA_PUBLIC_PEM.trim_end().as_bytes()] {
            s.assert_rejected("rs", &token(&Signer::hs256(secret), &claims));
            s.assert_rejected(
                "jwks",
                &sign(&Signer::hs256(secret), json!({ "kid": KID }), &claims),
            );
        }
        let es_pem = s.es256.public_pem.clone();
        s.assert_rejected("es", &token(&Signer::hs256(es_pem.as_bytes()), &claims));
    }
}

on_default_driver! {
    fn token_scopes_are_checked_against_route_scopes(driver) {
        let s = jwt_gateway(driver);
        let hs = Signer::hs256(HS_SECRET.as_bytes());
        let both = claims_with("scope", json!("orders:read orders:write"));
        s.assert_accepted("scoped", &token(&hs, &both));
        s.assert_accepted("scoped", &token(&hs, &claims_with("scopes", json!(["orders:write"]))));
        let before = s.upstream.request_count();
        let read_only = claims_with("scope", json!("orders:read"));
        assert_forbidden(&s.get("scoped", &token(&hs, &read_only)));
        assert_forbidden(&s.get("scoped", &token(&hs, &good_claims())));
        assert_eq!(s.upstream.request_count(), before, "a forbidden request was forwarded");
    }
}
