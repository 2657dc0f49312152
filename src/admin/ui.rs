//! `GET /ui/...`: the dashboard, a single-page app in plain JavaScript modules with uPlot for
//! the charts, compiled into the binary (`include_bytes!`), so it works on a host without
//! outside network and `cargo build` needs no Node.
//!
//! The pages hold no data and need no token: the app asks the `/admin/*` API for everything
//! with the admin token the operator signs in with (kept in `sessionStorage`, sent as a
//! Bearer header, never a cookie, so there is nothing for a cross-site request to ride on).
//! Every answer under `/ui` carries [`SECURITY_HEADERS`]: a Content-Security-Policy that
//! allows only the gateway's own scripts, styles and connections (no inline script or style,
//! no framing), and headers that keep the page out of frames and its URL out of referrers.

use super::http::Response;
use super::routes::error;

/// Headers on every `/ui` answer, errors included.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// One embedded file: its path under `/ui/`, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $path)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file of the app. `index.html` also answers `/ui/`.
static ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("app.css", CSS),
    asset!("favicon.svg", SVG),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("overview.js", JS),
    asset!("keys.js", JS),
    asset!("access.js", JS),
    asset!("providers.js", JS),
    asset!("live.js", JS),
    asset!("vendor/uPlot.iife.min.js", JS),
    asset!("vendor/uPlot.min.css", CSS),
    asset!("vendor/uPlot.LICENSE", TEXT),
];

/// Answers `GET /ui/<rest>`: the asset, `/ui` redirected to `/ui/`, or 404.
pub(crate) fn serve(path: &str) -> Response {
    let mut response = match path.strip_prefix("/ui") {
        Some("") => redirect("/ui/"),
        Some("/") => asset_response(&ASSETS[0]),
        Some(rest) => match ASSETS
            .iter()
            .find(|a| Some(a.path) == rest.strip_prefix('/'))
        {
            Some(asset) => asset_response(asset),
            None => error(
                404,
                "not_found_error",
                "not_found",
                "no such dashboard file",
            ),
        },
        None => error(
            404,
            "not_found_error",
            "not_found",
            "no such dashboard file",
        ),
    };
    with_security_headers(&mut response);
    response
}

/// Adds [`SECURITY_HEADERS`] to a `/ui` answer.
pub(crate) fn with_security_headers(response: &mut Response) {
    for (name, value) in SECURITY_HEADERS {
        response.headers.push((name, value.to_owned()));
    }
}

/// Total bytes of the app's files (the page weight, uncompressed).
#[cfg(test)]
fn total_bytes() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

fn asset_response(asset: &Asset) -> Response {
    Response {
        status: 200,
        content_type: asset.content_type,
        headers: Vec::new(),
        body: asset.body.to_vec(),
        close: false,
    }
}

fn redirect(to: &str) -> Response {
    Response {
        status: 308,
        content_type: HTML,
        headers: vec![("location", to.to_owned())],
        body: Vec::new(),
        close: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'r>(response: &'r Response, name: &str) -> Option<&'r str> {
        response
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_answer_carries_the_security_headers() {
        for path in [
            "/ui/",
            "/ui",
            "/ui/app.js",
            "/ui/nope.js",
            "/ui/../admin/keys",
        ] {
            let response = serve(path);
            let csp = header(&response, "content-security-policy").unwrap();
            assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
            assert_eq!(header(&response, "x-frame-options"), Some("DENY"), "{path}");
            assert_eq!(header(&response, "referrer-policy"), Some("no-referrer"));
            assert_eq!(header(&response, "x-content-type-options"), Some("nosniff"));
        }
    }

    #[test]
    fn assets_are_served_with_their_types_and_unknown_paths_are_404() {
        let index = serve("/ui/");
        assert_eq!(index.status, 200);
        assert_eq!(index.content_type, HTML);
        assert!(String::from_utf8_lossy(&index.body).contains("app.js"));
        assert_eq!(serve("/ui/app.js").content_type, JS);
        assert_eq!(serve("/ui/app.css").content_type, CSS);
        assert_eq!(serve("/ui/vendor/uPlot.min.css").status, 200);
        assert_eq!(serve("/ui/vendor/").status, 404);
        assert_eq!(serve("/ui/../Cargo.toml").status, 404);
        let redirect = serve("/ui");
        assert_eq!(redirect.status, 308);
        assert_eq!(header(&redirect, "location"), Some("/ui/"));
    }

    #[test]
    fn no_page_holds_inline_script_or_style() {
        let index = String::from_utf8_lossy(&serve("/ui/").body).to_lowercase();
        assert!(!index.contains("<style"), "inline style");
        assert!(!index.contains(" style="), "style attribute");
        assert!(!index.contains("<script>"), "inline script");
        for handler in [
            "onclick=",
            "onload=",
            "onerror=",
            "onsubmit=",
            "javascript:",
        ] {
            assert!(!index.contains(handler), "inline handler {handler}");
        }
    }

    #[test]
    fn the_app_weighs_under_300_kb() {
        assert!(total_bytes() < 300 * 1024, "{} bytes", total_bytes());
    }
}
