//! One layer for every response: security headers, and the refusal of
//! cross-site POSTs before any handler sees them.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// The TCP peer of the request, put into the request's extensions by the
/// accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The strict policy of every page: nothing but our own style sheet and
/// images, forms only to ourselves, never framed, no `<base>`.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether a POST comes from a page of ours. Browsers send
/// `Sec-Fetch-Site` with every request; when it is there, it decides.
/// `Origin` is checked otherwise — except `null`, which is what a browser
/// sends for our own forms under `Referrer-Policy: no-referrer` (Fetch
/// spec, "serializing a request origin"). A request with neither is not
/// from a browser that could be abused for CSRF, and still needs a token.
fn same_origin(req: &Request, origin: &str) -> bool {
    if let Some(site) = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        return matches!(site, "same-origin" | "none");
    }
    match req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        Some("null") | None => true,
        Some(o) => o.eq_ignore_ascii_case(origin),
    }
}

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let refuse = req.method() == Method::POST
        && req.uri().path() != "/open"
        && !same_origin(&req, &state.origin);
    let mut resp = if refuse {
        let lang = crate::session::lang_of(&state, req.headers(), None);
        crate::handlers::notice_response(
            &state,
            lang,
            StatusCode::FORBIDDEN,
            "err_csrf_title",
            "err_csrf_text",
            None,
        )
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP));
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), interest-cohort=()"),
    );
    resp.into_response()
}
