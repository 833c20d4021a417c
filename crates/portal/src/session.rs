//! Sessions, cookies and CSRF tokens.
//!
//! * `siegel_session`: a random token (Secure, HttpOnly, SameSite=Strict);
//!   the store keeps only its SHA-256, with the idle and absolute deadlines,
//!   so any node behind a load balancer can check it.
//! * `siegel_device`: set at a successful login and kept for a year; it
//!   names the account and is MACed with the portal's shared key. A browser
//!   that shows it for an account may log in while that account is locked
//!   against everyone else — which is why an attacker cannot lock a victim
//!   out for good (OWASP "device cookies").
//! * `siegel_known`: SameSite=None, says only "this browser had a session",
//!   so the page behind the cross-site POST from a `file://` container
//!   (which never carries the Strict cookies) can offer a one-click "Open"
//!   instead of the login form; the click is same-origin and does carry
//!   them. It authenticates nothing.
//! * CSRF: a logged-in form carries the session's random token; forms shown
//!   before login carry a MACed, time-limited token.

use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, HeaderValue, header, request::Parts};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use siegel_gina::Lang;
use siegel_store::{GinaAccount, SessionRecord};
use siegel_types::Address;

use crate::AppState;
use crate::security::ClientAddr;

pub(crate) const SESSION: &str = "siegel_session";
pub(crate) const DEVICE: &str = "siegel_device";
pub(crate) const KNOWN: &str = "siegel_known";
pub(crate) const LANG: &str = "siegel_lang";
/// Pre-login form tokens are valid this long.
const PRE_TOKEN_TTL: i64 = 4 * 3600;
/// `last_seen` is written at most this often (a write per request would
/// cost an fsync per page on SQLite).
const TOUCH_EVERY: i64 = 60;

pub(crate) fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Constant-time comparison.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie value from the request.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    max_age: Option<i64>,
    same_site: &str,
) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite={same_site}");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

fn mac(state: &AppState, purpose: &str, data: &str) -> String {
    let tag = ring::hmac::sign(&state.form_key, format!("{purpose}\0{data}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag.as_ref()[..20])
}

/// A form token for pages shown before login.
pub(crate) fn pre_token(state: &AppState) -> String {
    let ts = state.now().to_string();
    format!("p.{ts}.{}", mac(state, "csrf", &ts))
}

fn pre_token_ok(state: &AppState, token: &str) -> bool {
    let mut parts = token.splitn(3, '.');
    let (Some("p"), Some(ts), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(t) = ts.parse::<i64>() else {
        return false;
    };
    let age = state.now() - t;
    (0..=PRE_TOKEN_TTL).contains(&age) && ct_eq(mac(state, "csrf", ts).as_bytes(), tag.as_bytes())
}

/// Which tokens a form may carry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Csrf {
    /// The session's token only (everything a logged-in user changes).
    Session,
    /// The session's or a pre-login token (login, open, reset, signup).
    Any,
}

/// Whether the form's `csrf` field is acceptable.
pub(crate) fn check_csrf(
    state: &AppState,
    token: Option<&str>,
    session: Option<&SessionRecord>,
    kind: Csrf,
) -> bool {
    let Some(token) = token else {
        return false;
    };
    if let Some(s) = session
        && ct_eq(s.csrf.as_bytes(), token.as_bytes())
    {
        return true;
    }
    kind == Csrf::Any && pre_token_ok(state, token)
}

/// The device cookie value for an address.
pub(crate) fn device_value(state: &AppState, address: &Address) -> String {
    let a = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(address.as_str());
    format!("{a}.{}", mac(state, "device", address.as_str()))
}

/// Whether the request carries a device cookie for `address`.
pub(crate) fn known_device(state: &AppState, headers: &HeaderMap, address: &Address) -> bool {
    cookie(headers, DEVICE)
        .is_some_and(|v| ct_eq(v.as_bytes(), device_value(state, address).as_bytes()))
}

/// The language: the account's, else the cookie, else the browser's, else
/// the configured default.
pub(crate) fn lang_of(
    state: &AppState,
    headers: &HeaderMap,
    account: Option<&GinaAccount>,
) -> Lang {
    // An account that has not registered yet has the sender's default
    // language; until the recipient chose, their browser decides.
    account
        .filter(|a| !a.must_register)
        .and_then(|a| Lang::from_tag(&a.language))
        .or_else(|| cookie(headers, LANG).and_then(Lang::from_tag))
        .or_else(|| {
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .map(|v| Lang::from_accept_language(v, state.settings.default_lang))
        })
        .unwrap_or(state.settings.default_lang)
}

/// The client's address, for throttling and the audit trail.
pub(crate) fn client_of(parts_ext: &axum::http::Extensions) -> String {
    parts_ext
        .get::<ClientAddr>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

/// A logged-in recipient. Handlers that need a login take this as a
/// parameter; it can only be made from a valid session (cookie → store,
/// within both deadlines) of an account that finished registering.
pub struct PortalUser {
    /// The session.
    pub session: SessionRecord,
    /// The account.
    pub account: GinaAccount,
    /// The page language.
    pub lang: Lang,
}

impl PortalUser {
    /// The address.
    pub fn address(&self) -> &Address {
        &self.account.address
    }
}

/// A session that may still have to register (initial password).
pub struct AnySession {
    pub session: SessionRecord,
    pub account: GinaAccount,
}

/// Looks up and refreshes the session of a request.
pub(crate) async fn session_of(state: &AppState, headers: &HeaderMap) -> Option<AnySession> {
    let token = cookie(headers, SESSION)?;
    let hash = sha256_hex(token);
    let s = state.store.gina_sessions().find(&hash).await.ok()??;
    let now = state.now();
    let idle = state.settings.session_idle.as_secs() as i64;
    if now >= s.expires_at || now - s.last_seen > idle {
        let _ = state.store.gina_sessions().delete(&hash).await;
        return None;
    }
    if now - s.last_seen >= TOUCH_EVERY {
        let _ = state.store.gina_sessions().touch(&hash, now).await;
    }
    let account = state.store.gina().by_address(&s.address).await.ok()??;
    Some(AnySession {
        session: s,
        account,
    })
}

/// Rejection of [`PortalUser`]: back to the login page.
pub struct LoginRequired;

impl IntoResponse for LoginRequired {
    fn into_response(self) -> Response {
        (
            axum::http::StatusCode::SEE_OTHER,
            [(header::LOCATION, HeaderValue::from_static("/"))],
        )
            .into_response()
    }
}

impl FromRequestParts<AppState> for PortalUser {
    type Rejection = LoginRequired;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let s = session_of(state, &parts.headers)
            .await
            .ok_or(LoginRequired)?;
        if s.account.must_register {
            return Err(LoginRequired);
        }
        let lang = lang_of(state, &parts.headers, Some(&s.account));
        Ok(PortalUser {
            session: s.session,
            account: s.account,
            lang,
        })
    }
}

/// Starts a session for `address`; returns the cookies to set.
pub(crate) async fn start(
    state: &AppState,
    address: &Address,
    client: &str,
) -> Result<(SessionRecord, Vec<HeaderValue>), siegel_store::StoreError> {
    let token = siegel_gina::accounts::new_token()
        .map_err(|_| siegel_store::StoreError::MasterKey("random".into()))?;
    let csrf = siegel_gina::accounts::new_token()
        .map_err(|_| siegel_store::StoreError::MasterKey("random".into()))?;
    let now = state.now();
    let rec = SessionRecord {
        token_hash: sha256_hex(&token),
        address: address.clone(),
        csrf,
        created_at: now,
        last_seen: now,
        expires_at: now + state.settings.session_max.as_secs() as i64,
        client: client.to_owned(),
    };
    state.store.gina_sessions().create(&rec).await?;
    let cookies = vec![
        set_cookie(SESSION, &token, None, "Strict"),
        set_cookie(
            DEVICE,
            &device_value(state, address),
            Some(365 * 86_400),
            "Strict",
        ),
        set_cookie(
            KNOWN,
            "1",
            Some(state.settings.session_max.as_secs() as i64),
            "None",
        ),
    ];
    Ok((rec, cookies))
}

/// Cookies that end the session in the browser (the device cookie stays).
pub(crate) fn end_cookies() -> Vec<HeaderValue> {
    vec![
        set_cookie(SESSION, "", Some(0), "Strict"),
        set_cookie(KNOWN, "", Some(0), "None"),
    ]
}
