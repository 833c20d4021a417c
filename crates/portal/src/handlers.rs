//! The portal's pages, in the order a recipient meets them: open (from the
//! file), log in or register, read, download, reply, settings, reset,
//! sign-up, log out.

use std::sync::Arc;

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Value, context};
use siegel_gina::accounts::{Secret, Violation, normalise_answer};
use siegel_gina::container::{self, OpenError};
use siegel_gina::{Lang, Theme};
use siegel_store::{
    ContainerRecord, ContainerState, GinaAccount, NewGinaAccount, PreferredMethod, SessionRecord,
};
use siegel_types::{Address, Direction, Envelope, Origin, QueueId, Recipient, ReversePath};

use crate::AppState;
use crate::forms::Form;
use crate::mailview::{self, MailView};
use crate::session::{self, AnySession, Csrf, PortalUser, check_csrf, client_of, lang_of};

/// Certificates and OpenPGP keys uploaded in the settings are checked by
/// the binary's crypto crates; the portal only stores what they return.
pub trait KeyImporter: Send + Sync {
    /// Parses `data` as a certificate (`Smime`) or public key (`Pgp`) that
    /// belongs to `address`; the record to store, or why not.
    fn import(
        &self,
        method: PreferredMethod,
        address: &Address,
        data: &[u8],
    ) -> Result<siegel_store::NewKey, String>;
}

// ---- rendering --------------------------------------------------------------

fn base_path(state: &AppState) -> String {
    let u = &state.settings.public_url;
    let after = u.find("://").map_or(0, |i| i + 3);
    u[after..]
        .find('/')
        .map_or_else(String::new, |i| u[after + i..].to_owned())
}

struct Page<'a> {
    theme: &'a Arc<Theme>,
    lang: Lang,
    template: &'static str,
    user: Option<&'a Address>,
    csrf: String,
    lang_next: Option<&'a str>,
}

fn render(state: &AppState, p: Page<'_>, ctx: Value) -> Option<String> {
    let full = context! {
        base => base_path(state),
        page => p.template.trim_end_matches(".html"),
        user => p.user.map(Address::as_str),
        csrf => p.csrf,
        lang_next => p.lang_next,
        ..ctx
    };
    p.theme
        .render(p.template, p.lang, full)
        .map_err(|e| tracing::error!(target: "siegel::portal", error = %e, "template failed"))
        .ok()
}

fn html(state: &AppState, p: Page<'_>, ctx: Value) -> Response {
    match render(state, p, ctx) {
        Some(body) => Html(body).into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response(),
    }
}

fn with_cookies(mut r: Response, cookies: &[HeaderValue]) -> Response {
    for c in cookies {
        r.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    r
}

/// A notice page (errors, expired, revoked, …).
pub(crate) fn notice_response(
    state: &AppState,
    lang: Lang,
    status: StatusCode,
    title_key: &str,
    text_key: &str,
    vars: Option<&[(&str, &str)]>,
) -> Response {
    notice_themed(
        state,
        state.themes.default_theme(),
        lang,
        status,
        title_key,
        text_key,
        vars,
        None,
    )
}

#[allow(clippy::too_many_arguments)]
fn notice_themed(
    state: &AppState,
    theme: &Arc<Theme>,
    lang: Lang,
    status: StatusCode,
    title_key: &str,
    text_key: &str,
    vars: Option<&[(&str, &str)]>,
    user: Option<&Address>,
) -> Response {
    let mut text = theme.text(lang, text_key);
    for (k, v) in vars.unwrap_or(&[]) {
        text = text.replace(&format!("{{{k}}}"), v);
    }
    let kind = if status.is_success() { "info" } else { "error" };
    let r = html(
        state,
        Page {
            theme,
            lang,
            template: "notice.html",
            user,
            csrf: String::new(),
            lang_next: None,
        },
        context! { title => theme.text(lang, title_key), text => text, kind => kind },
    );
    (status, r).into_response()
}

fn violation_texts(theme: &Theme, lang: Lang, v: &[Violation]) -> Vec<String> {
    v.iter()
        .map(|x| theme.text(lang, &format!("pw_fail_{}", x.code())))
        .collect()
}

fn questions(theme: &Theme, lang: Lang) -> Vec<String> {
    (1..=5)
        .map(|i| theme.text(lang, &format!("question_{i}")))
        .collect()
}

fn rules(state: &AppState) -> Vec<(String, usize)> {
    state
        .settings
        .policy
        .rules()
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n))
        .collect()
}

fn generic_error(state: &AppState, lang: Lang, what: &dyn std::fmt::Display) -> Response {
    tracing::error!(target: "siegel::portal", error = %what, "request failed");
    notice_response(
        state,
        lang,
        StatusCode::INTERNAL_SERVER_ERROR,
        "err_generic_title",
        "err_generic_text",
        None,
    )
}

fn bad_form(state: &AppState, lang: Lang) -> Response {
    notice_response(
        state,
        lang,
        StatusCode::BAD_REQUEST,
        "err_csrf_title",
        "err_csrf_text",
        None,
    )
}

fn csrf_refused(state: &AppState, lang: Lang, client: &str, address: Option<&str>) -> Response {
    state.audit(
        "csrf_refused",
        address,
        None,
        client,
        "form without a valid token",
    );
    notice_response(
        state,
        lang,
        StatusCode::FORBIDDEN,
        "err_csrf_title",
        "err_csrf_text",
        None,
    )
}

// ---- the container -------------------------------------------------------------

/// Why a container cannot be shown, each with its own page.
enum ContainerProblem {
    Damaged,
    Truncated,
    Unknown,
    Expired(i64),
    Revoked,
    WrongAccount,
}

fn container_page(
    state: &AppState,
    theme: &Arc<Theme>,
    lang: Lang,
    p: ContainerProblem,
    user: Option<&Address>,
) -> Response {
    let date;
    let (status, title, text, vars): (_, _, _, Vec<(&str, &str)>) = match p {
        ContainerProblem::Damaged => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "container_bad_title",
            "container_bad_text",
            vec![],
        ),
        ContainerProblem::Truncated => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "container_bad_title",
            "container_truncated_text",
            vec![],
        ),
        ContainerProblem::Unknown => (
            StatusCode::NOT_FOUND,
            "container_bad_title",
            "container_unknown_text",
            vec![],
        ),
        ContainerProblem::Expired(at) => {
            date = siegel_gina::html::format_date(at, lang);
            (
                StatusCode::GONE,
                "container_expired_title",
                "container_expired_text",
                vec![("date", date.as_str())],
            )
        }
        ContainerProblem::Revoked => (
            StatusCode::GONE,
            "container_revoked_title",
            "container_revoked_text",
            vec![],
        ),
        ContainerProblem::WrongAccount => (
            StatusCode::FORBIDDEN,
            "container_wrong_account_title",
            "container_wrong_account_text",
            vec![("user", user.map_or("", Address::as_str))],
        ),
    };
    notice_themed(state, theme, lang, status, title, text, Some(&vars), user)
}

/// The posted container: bytes, parsed header, and the text to embed again.
struct Posted {
    bytes: Vec<u8>,
    text: String,
}

fn posted(form: &Form) -> Option<Posted> {
    use base64::Engine as _;
    let raw = form.get("container")?;
    let bytes = siegel_gina::html::decode_posted(raw)?;
    // Embedded again from our own encoding of the bytes, in lines as the
    // file had them: only base64 characters, so it needs no escaping (the
    // read page of a 50 MB mail would otherwise escape 67 MB per request).
    let text = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let mut wrapped = String::with_capacity(text.len() + text.len() / 38);
    for chunk in text.as_bytes().chunks(76) {
        wrapped.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        wrapped.push('\n');
    }
    Some(Posted {
        bytes,
        text: wrapped,
    })
}

/// The container for a template: our own base64 (see [`posted`]), marked
/// safe so it is not escaped character by character.
fn safe(text: &str) -> Value {
    Value::from_safe_string(text.to_owned())
}

fn theme_for<'a>(state: &'a AppState, bytes: &[u8]) -> &'a Arc<Theme> {
    match container::parse(bytes) {
        Ok(p) => state.themes.for_domain(&p.header().theme),
        Err(_) => state.themes.default_theme(),
    }
}

/// Checks everything and decrypts. Only the addressed account gets the
/// plaintext; everything else is a page saying why not.
async fn open_for(
    state: &AppState,
    account: &GinaAccount,
    bytes: &[u8],
    client: &str,
) -> Result<(ContainerRecord, Vec<u8>), ContainerProblem> {
    let parsed = container::parse(bytes).map_err(|_| ContainerProblem::Damaged)?;
    let header = parsed.header().clone();
    let id = header.id.as_str();
    let rec = state
        .store
        .gina_containers()
        .by_id(id)
        .await
        .map_err(|_| ContainerProblem::Unknown)?
        .ok_or(ContainerProblem::Unknown)?;
    if rec.recipient.as_str() != header.recipient {
        state.audit(
            "open_refused",
            Some(account.address.as_str()),
            Some(id),
            client,
            "header recipient differs from the record",
        );
        return Err(ContainerProblem::Damaged);
    }
    match rec.state(state.now()) {
        ContainerState::Revoked => return Err(ContainerProblem::Revoked),
        ContainerState::Expired => return Err(ContainerProblem::Expired(rec.expires_at)),
        ContainerState::Open => {}
    }
    if rec.recipient != account.address {
        state.audit(
            "open_refused",
            Some(account.address.as_str()),
            Some(id),
            client,
            "container addressed to another account",
        );
        return Err(ContainerProblem::WrongAccount);
    }
    let key = match state.store.gina_containers().key(id).await {
        Ok(Some(k)) => k,
        Ok(None) => return Err(ContainerProblem::Expired(rec.expires_at)),
        Err(e) => {
            tracing::error!(target: "siegel::portal", error = %e, container = id, "container key unreadable");
            return Err(ContainerProblem::Unknown);
        }
    };
    let key = siegel_gina::ContentKey::from_bytes(key.expose()).ok_or(ContainerProblem::Unknown)?;
    match parsed.open(&key, &account.address) {
        Ok(plain) => Ok((rec, plain)),
        Err(e) => {
            state.audit(
                "open_refused",
                Some(account.address.as_str()),
                Some(id),
                client,
                &e.to_string(),
            );
            Err(match e {
                OpenError::Truncated { .. } => ContainerProblem::Truncated,
                OpenError::WrongRecipient { .. } => ContainerProblem::WrongAccount,
                _ => ContainerProblem::Damaged,
            })
        }
    }
}

fn envelope(
    from: ReversePath,
    to: &[Address],
    direction: Direction,
    what: &str,
    message_id: Option<String>,
) -> Envelope {
    Envelope {
        id: QueueId::generate(),
        mail_from: from,
        recipients: to.iter().cloned().map(Recipient::new).collect(),
        direction,
        origin: Origin::Local {
            what: what.to_owned(),
        },
        received_at: 0,
        size: 0,
        body_8bit: false,
        smtputf8: false,
        env_id: None,
        ret: None,
        message_id,
    }
}

/// The read receipt, at the first open, into the spool (to an internal
/// sender, so inbound).
async fn send_receipt(state: &AppState, rec: &ContainerRecord, view: &MailView) {
    let Some(to) = &rec.receipt_to else {
        return;
    };
    let theme = state.themes.for_domain(rec.sender.domain());
    let lang = state.settings.default_lang;
    let mdn = siegel_gina::mail::read_receipt(
        theme,
        lang,
        &siegel_gina::mail::ReceiptParams {
            reader: &rec.recipient,
            to,
            original_message_id: view.message_id.as_deref().or(rec.message_id.as_deref()),
            original_subject: Some(view.subject.as_str()),
            opened_at: state.now(),
            hostname: &state.settings.hostname,
        },
    );
    match mdn {
        Ok(bytes) => {
            let env = envelope(
                ReversePath::Null,
                std::slice::from_ref(to),
                Direction::Inbound,
                "gina-read-receipt",
                None,
            );
            if let Err(e) = state.spool.inject(env, &bytes).await {
                tracing::error!(target: "siegel::portal", error = %e, "read receipt not queued");
            }
        }
        Err(e) => tracing::error!(target: "siegel::portal", error = %e, "read receipt not built"),
    }
}

/// The read page for a container the user may open.
#[allow(clippy::too_many_arguments)]
async fn show(
    state: &AppState,
    account: &GinaAccount,
    session: &SessionRecord,
    lang: Lang,
    p: Posted,
    allow_remote: bool,
    client: &str,
    cookies: &[HeaderValue],
) -> Response {
    let theme = theme_for(state, &p.bytes).clone();
    let (rec, plain) = match open_for(state, account, &p.bytes, client).await {
        Ok(x) => x,
        Err(problem) => {
            return with_cookies(
                container_page(state, &theme, lang, problem, Some(&account.address)),
                cookies,
            );
        }
    };
    let view = mailview::view_mail(&plain, allow_remote, lang);
    drop(plain);
    state.audit(
        "open",
        Some(account.address.as_str()),
        Some(&rec.container_id),
        client,
        "",
    );
    // Only the first open writes (and sends the receipt); the record read
    // above already says whether that has happened.
    if rec.first_opened_at.is_none()
        && state
            .store
            .gina_containers()
            .mark_opened(&rec.container_id, state.now())
            .await
            .unwrap_or(false)
    {
        send_receipt(state, &rec, &view).await;
    }
    let r = html(
        state,
        Page {
            theme: &theme,
            lang,
            template: "read.html",
            user: Some(&account.address),
            csrf: session.csrf.clone(),
            lang_next: None,
        },
        context! { mail => Value::from_serialize(&view), container => safe(&p.text) },
    );
    let mut r = with_cookies(r, cookies);
    // The mail's own inline styles must apply inside the frame (which
    // inherits this policy); remote images only when asked for.
    let img = if allow_remote {
        "'self' data: https: http:"
    } else {
        "'self' data:"
    };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src {img}; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'; frame-src 'self'"
    )) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

// ---- login -------------------------------------------------------------------

enum LoginFailure {
    Wrong,
    Locked(i64),
    Throttled,
    Internal(String),
}

/// Checks a login with throttling per client address and lock-out per
/// account (skipped for the account's own known devices). Unknown
/// addresses get the same counters, the same time and the same answer.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    client: &str,
    email: &str,
    password: &str,
) -> Result<GinaAccount, LoginFailure> {
    let s = &state.settings;
    let now = state.now();
    let secret = Secret::new(password);
    let throttle = state.store.gina_throttle();
    let client_key = format!("client:{client}");
    let window = s.client_window.as_secs() as i64;
    let lock_for = s.lock_for.as_secs() as i64;
    if throttle
        .state(&client_key)
        .await
        .ok()
        .flatten()
        .is_some_and(|t| t.locked(now))
    {
        state.audit("login_throttled", Some(email), None, client, "");
        return Err(LoginFailure::Throttled);
    }
    let Ok(address) = Address::parse(email) else {
        let _ = state.hasher.verify_nothing(&secret).await;
        let _ = throttle
            .fail(&client_key, now, window, i64::from(s.client_limit), window)
            .await;
        return Err(LoginFailure::Wrong);
    };
    let account_key = format!("account:{}", address.as_str());
    let known = session::known_device(state, headers, &address);
    if !known
        && let Some(t) = throttle.state(&account_key).await.ok().flatten()
        && t.locked(now)
    {
        state.audit(
            "login_locked",
            Some(address.as_str()),
            None,
            client,
            "account locked; not a known device",
        );
        return Err(LoginFailure::Locked(t.locked_until.unwrap_or(now) - now));
    }
    let account = state
        .store
        .gina()
        .by_address(&address)
        .await
        .map_err(|e| LoginFailure::Internal(e.to_string()))?;
    let ok = match &account {
        Some(a) => state.hasher.verify(&secret, &a.password_hash).await,
        None => state.hasher.verify_nothing(&secret).await,
    }
    .map_err(|e| LoginFailure::Internal(e.to_string()))?;
    match (ok, account) {
        (true, Some(a)) => {
            let _ = throttle.clear(&account_key).await;
            let _ = state.store.gina().record_login(&address, now).await;
            state.audit(
                "login",
                Some(address.as_str()),
                None,
                client,
                if known { "known device" } else { "" },
            );
            Ok(a)
        }
        _ => {
            let _ = throttle
                .fail(&client_key, now, window, i64::from(s.client_limit), window)
                .await;
            let mut locked = None;
            if !known
                && let Ok(t) = throttle
                    .fail(
                        &account_key,
                        now,
                        lock_for.max(1),
                        i64::from(s.lock_after),
                        lock_for,
                    )
                    .await
                && t.locked(now)
            {
                state.audit(
                    "locked",
                    Some(address.as_str()),
                    None,
                    client,
                    &format!("{} failures", t.failures),
                );
                locked = Some(t.locked_until.unwrap_or(now) - now);
            }
            state.audit("login_failed", Some(address.as_str()), None, client, "");
            Err(locked.map_or(LoginFailure::Wrong, LoginFailure::Locked))
        }
    }
}

fn login_errors(state: &AppState, theme: &Theme, lang: Lang, f: &LoginFailure) -> Vec<String> {
    let _ = state;
    match f {
        LoginFailure::Wrong => vec![theme.text(lang, "err_login")],
        LoginFailure::Locked(secs) => vec![
            theme
                .text(lang, "err_locked")
                .replace("{minutes}", &(secs / 60 + 1).to_string()),
        ],
        LoginFailure::Throttled => vec![theme.text(lang, "err_throttled")],
        LoginFailure::Internal(e) => {
            tracing::error!(target: "siegel::portal", error = %e, "login check failed");
            vec![theme.text(lang, "err_generic_text")]
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn login_page(
    state: &AppState,
    theme: &Arc<Theme>,
    lang: Lang,
    headers: &HeaderMap,
    container: Option<(&Posted, &siegel_gina::Header)>,
    email: &str,
    errors: Vec<String>,
    info: Option<String>,
) -> Response {
    let known = session::cookie(headers, session::KNOWN).is_some();
    let ctx = match container {
        Some((p, h)) => context! {
            container => safe(&p.text),
            recipient => &h.recipient,
            expires => siegel_gina::html::format_date(h.expires, lang),
            known_device => known,
            email => if email.is_empty() { h.recipient.as_str() } else { email },
            errors => errors,
            info => info,
        },
        None => context! { email => email, errors => errors, info => info },
    };
    html(
        state,
        Page {
            theme,
            lang,
            template: "login.html",
            user: None,
            csrf: session::pre_token(state),
            lang_next: if container.is_none() { Some("/") } else { None },
        },
        ctx,
    )
}

#[allow(clippy::too_many_arguments)]
fn register_page(
    state: &AppState,
    theme: &Arc<Theme>,
    lang: Lang,
    email: &str,
    csrf: String,
    container: Option<&str>,
    token: Option<&str>,
    errors: Vec<String>,
    question: &str,
) -> Response {
    html(
        state,
        Page {
            theme,
            lang,
            template: "register.html",
            user: None,
            csrf,
            lang_next: None,
        },
        context! {
            email => email,
            container => container.map(safe),
            token => token,
            signup => token.is_some(),
            errors => errors,
            rules => rules(state),
            min_length => state.settings.policy.min_length,
            questions => questions(theme, lang),
            security_question => question,
        },
    )
}

// ---- handlers ------------------------------------------------------------------

#[derive(serde::Deserialize, Default)]
pub struct HomeQuery {
    bye: Option<String>,
}

pub async fn home(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Query<HomeQuery>,
) -> Response {
    match session::session_of(&state, &headers).await {
        Some(AnySession { session, account }) if !account.must_register => {
            let lang = lang_of(&state, &headers, Some(&account));
            html(
                &state,
                Page {
                    theme: state.themes.default_theme(),
                    lang,
                    template: "home.html",
                    user: Some(&account.address),
                    csrf: session.csrf.clone(),
                    lang_next: Some("/"),
                },
                context! {},
            )
        }
        Some(AnySession { session, account }) => {
            let lang = lang_of(&state, &headers, Some(&account));
            register_page(
                &state,
                state.themes.default_theme(),
                lang,
                account.address.as_str(),
                session.csrf,
                None,
                None,
                vec![],
                "",
            )
        }
        None => {
            let lang = lang_of(&state, &headers, None);
            let theme = state.themes.default_theme();
            let info = q.bye.as_ref().map(|_| theme.text(lang, "logged_out"));
            login_page(&state, theme, lang, &headers, None, "", vec![], info)
        }
    }
}

/// `POST /open`: the form of the container file, cross-site from `file://`
/// (so without our cookies, and without a token). Changes nothing: it only
/// shows the container again in a same-origin page, whose form then carries
/// the Strict cookies and a token.
pub async fn open(State(state): State<AppState>, headers: HeaderMap, mp: Multipart) -> Response {
    let lang = lang_of(&state, &headers, None);
    let Some(form) = Form::read(mp).await else {
        return bad_form(&state, lang);
    };
    let theme = state.themes.default_theme();
    let Some(p) = posted(&form) else {
        return container_page(&state, theme, lang, ContainerProblem::Damaged, None);
    };
    let header = match container::parse(&p.bytes) {
        Ok(parsed) => parsed.header().clone(),
        Err(_) => return container_page(&state, theme, lang, ContainerProblem::Damaged, None),
    };
    let theme = state.themes.for_domain(&header.theme);
    // Say at once when the container cannot be opened any more.
    match state
        .store
        .gina_containers()
        .by_id(header.id.as_str())
        .await
    {
        Ok(Some(rec)) => match rec.state(state.now()) {
            ContainerState::Revoked => {
                return container_page(&state, theme, lang, ContainerProblem::Revoked, None);
            }
            ContainerState::Expired => {
                return container_page(
                    &state,
                    theme,
                    lang,
                    ContainerProblem::Expired(rec.expires_at),
                    None,
                );
            }
            ContainerState::Open => {}
        },
        Ok(None) => return container_page(&state, theme, lang, ContainerProblem::Unknown, None),
        Err(e) => return generic_error(&state, lang, &e),
    }
    login_page(
        &state,
        theme,
        lang,
        &headers,
        Some((&p, &header)),
        "",
        vec![],
        None,
    )
}

/// `POST /read`: open a container, logging in first if needed.
pub async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    mp: Multipart,
) -> Response {
    let client = client_of(&ext);
    let current = session::session_of(&state, &headers).await;
    let lang = lang_of(&state, &headers, current.as_ref().map(|s| &s.account));
    let Some(form) = Form::read(mp).await else {
        return bad_form(&state, lang);
    };
    let csrf_ok = check_csrf(
        &state,
        form.get("csrf"),
        current.as_ref().map(|s| &s.session),
        Csrf::Any,
    );
    if !csrf_ok && current.is_some() {
        return csrf_refused(&state, lang, &client, None);
    }
    let Some(p) = posted(&form) else {
        return container_page(
            &state,
            state.themes.default_theme(),
            lang,
            ContainerProblem::Damaged,
            None,
        );
    };
    let Ok(parsed) = container::parse(&p.bytes) else {
        return container_page(
            &state,
            state.themes.default_theme(),
            lang,
            ContainerProblem::Damaged,
            None,
        );
    };
    let header = parsed.header().clone();
    let theme = state.themes.for_domain(&header.theme).clone();
    if !csrf_ok {
        // The session ended (logout, timeout) under a page of ours: nothing
        // happens without a login, so ask for one and keep the container.
        let errors = vec![theme.text(lang, "err_session_text")];
        return login_page(
            &state,
            &theme,
            lang,
            &headers,
            Some((&p, &header)),
            "",
            errors,
            None,
        );
    }
    let allow_remote = form.get("remote_images") == Some("1");
    if form.text("action") == "login" || (current.is_none() && !form.text("password").is_empty()) {
        let email = form.text("email").to_owned();
        match authenticate(
            &state,
            &headers,
            &client,
            &email,
            form.get("password").unwrap_or(""),
        )
        .await
        {
            Ok(account) => {
                let (session, cookies) =
                    match session::start(&state, &account.address, &client).await {
                        Ok(x) => x,
                        Err(e) => return generic_error(&state, lang, &e),
                    };
                let lang = lang_of(&state, &headers, Some(&account));
                if account.must_register {
                    let r = register_page(
                        &state,
                        &theme,
                        lang,
                        account.address.as_str(),
                        session.csrf,
                        Some(&p.text),
                        None,
                        vec![],
                        "",
                    );
                    return with_cookies(r, &cookies);
                }
                return show(
                    &state,
                    &account,
                    &session,
                    lang,
                    p,
                    allow_remote,
                    &client,
                    &cookies,
                )
                .await;
            }
            Err(f) => {
                let errors = login_errors(&state, &theme, lang, &f);
                return login_page(
                    &state,
                    &theme,
                    lang,
                    &headers,
                    Some((&p, &header)),
                    &email,
                    errors,
                    None,
                );
            }
        }
    }
    match current {
        Some(AnySession { session, account }) if !account.must_register => {
            show(
                &state,
                &account,
                &session,
                lang,
                p,
                allow_remote,
                &client,
                &[],
            )
            .await
        }
        Some(AnySession { session, account }) => register_page(
            &state,
            &theme,
            lang,
            account.address.as_str(),
            session.csrf,
            Some(&p.text),
            None,
            vec![],
            "",
        ),
        None => {
            let errors = vec![theme.text(lang, "err_session_text")];
            login_page(
                &state,
                &theme,
                lang,
                &headers,
                Some((&p, &header)),
                "",
                errors,
                None,
            )
        }
    }
}

/// `POST /login` (without a container).
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    mp: Multipart,
) -> Response {
    let client = client_of(&ext);
    let lang = lang_of(&state, &headers, None);
    let Some(form) = Form::read(mp).await else {
        return bad_form(&state, lang);
    };
    let current = session::session_of(&state, &headers).await;
    if !check_csrf(
        &state,
        form.get("csrf"),
        current.as_ref().map(|s| &s.session),
        Csrf::Any,
    ) {
        return csrf_refused(&state, lang, &client, None);
    }
    let theme = state.themes.default_theme();
    let email = form.text("email").to_owned();
    match authenticate(
        &state,
        &headers,
        &client,
        &email,
        form.get("password").unwrap_or(""),
    )
    .await
    {
        Ok(account) => {
            let (session, cookies) = match session::start(&state, &account.address, &client).await {
                Ok(x) => x,
                Err(e) => return generic_error(&state, lang, &e),
            };
            let lang = lang_of(&state, &headers, Some(&account));
            let r = if account.must_register {
                register_page(
                    &state,
                    theme,
                    lang,
                    account.address.as_str(),
                    session.csrf,
                    None,
                    None,
                    vec![],
                    "",
                )
            } else {
                (
                    StatusCode::SEE_OTHER,
                    [(header::LOCATION, HeaderValue::from_static("/"))],
                )
                    .into_response()
            };
            with_cookies(r, &cookies)
        }
        Err(f) => {
            let errors = login_errors(&state, theme, lang, &f);
            let r = login_page(&state, theme, lang, &headers, None, &email, errors, None);
            (StatusCode::UNAUTHORIZED, r).into_response()
        }
    }
}

/// Checks a new password against the policy, the confirmation and the
/// history (all hashes, so timing says nothing).
async fn password_problems(
    state: &AppState,
    account: Option<&GinaAccount>,
    address: &Address,
    new: &str,
    confirm: &str,
) -> Result<Vec<Violation>, String> {
    let mut v = state
        .settings
        .policy
        .check(new, address, account.and_then(|a| a.name.as_deref()));
    if new != confirm {
        v.push(Violation::Mismatch);
    }
    if let Some(a) = account
        && state.settings.policy.history > 0
    {
        let mut hashes = vec![a.password_hash.clone()];
        hashes.extend(a.previous_hashes.iter().cloned());
        hashes.truncate(state.settings.policy.history);
        if state
            .hasher
            .matches_any(&Secret::new(new), &hashes)
            .await
            .map_err(|e| e.to_string())?
        {
            v.push(Violation::Reused);
        }
    }
    Ok(v)
}

/// `POST /register`: first login (initial password) or a confirmed
/// sign-up: own password and security question.
pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    mp: Multipart,
) -> Response {
    let client = client_of(&ext);
    let current = session::session_of(&state, &headers).await;
    let lang = lang_of(&state, &headers, current.as_ref().map(|s| &s.account));
    let Some(form) = Form::read(mp).await else {
        return bad_form(&state, lang);
    };
    if !check_csrf(
        &state,
        form.get("csrf"),
        current.as_ref().map(|s| &s.session),
        Csrf::Any,
    ) {
        return csrf_refused(&state, lang, &client, None);
    }
    let posted_container = posted(&form);
    let theme = posted_container.as_ref().map_or_else(
        || state.themes.default_theme().clone(),
        |p| theme_for(&state, &p.bytes).clone(),
    );
    let token = form
        .get("token")
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let now = state.now();
    // Who is registering: a signed-up address (token) or the session.
    let (address, account, csrf) = if let Some(t) = &token {
        match state
            .store
            .gina_tokens()
            .peek(&session::sha256_hex(t), "signup", now)
            .await
        {
            Ok(Some(rec)) => (rec.address, None, session::pre_token(&state)),
            _ => {
                return notice_response(
                    &state,
                    lang,
                    StatusCode::GONE,
                    "err_token_title",
                    "err_token_text",
                    None,
                );
            }
        }
    } else {
        match &current {
            Some(s) if s.account.must_register => (
                s.account.address.clone(),
                Some(s.account.clone()),
                s.session.csrf.clone(),
            ),
            Some(_) => {
                return (
                    StatusCode::SEE_OTHER,
                    [(header::LOCATION, HeaderValue::from_static("/"))],
                )
                    .into_response();
            }
            None => {
                return notice_response(
                    &state,
                    lang,
                    StatusCode::UNAUTHORIZED,
                    "err_session_title",
                    "err_session_text",
                    None,
                );
            }
        }
    };
    let new = form.get("new_password").unwrap_or("");
    let question = form.text("security_question");
    let answer = normalise_answer(form.get("security_answer").unwrap_or(""));
    let mut errors = match password_problems(
        &state,
        account.as_ref(),
        &address,
        new,
        form.get("new_password_confirm").unwrap_or(""),
    )
    .await
    {
        Ok(v) => violation_texts(&theme, lang, &v),
        Err(e) => return generic_error(&state, lang, &e),
    };
    if question.is_empty()
        || answer.is_empty()
        || question.len() > 500
        || question.chars().any(char::is_control)
    {
        errors.push(theme.text(lang, "err_question_missing"));
    }
    if !errors.is_empty() {
        return register_page(
            &state,
            &theme,
            lang,
            address.as_str(),
            csrf,
            posted_container.as_ref().map(|p| p.text.as_str()),
            token.as_deref(),
            errors,
            question,
        );
    }
    let (Ok(pw_hash), Ok(answer_hash)) = (
        state.hasher.hash(&Secret::new(new)).await,
        state.hasher.hash(&Secret::new(answer)).await,
    ) else {
        return generic_error(&state, lang, &"hashing failed");
    };
    let mut cookies = Vec::new();
    let (account, session) = if let Some(t) = &token {
        // The token is used now, exactly once.
        if !matches!(
            state
                .store
                .gina_tokens()
                .take(&session::sha256_hex(t), "signup", now)
                .await,
            Ok(Some(_))
        ) {
            return notice_response(
                &state,
                lang,
                StatusCode::GONE,
                "err_token_title",
                "err_token_text",
                None,
            );
        }
        let new_account = NewGinaAccount {
            address: address.clone(),
            name: None,
            password_hash: pw_hash,
            security_question: Some(question.to_owned()),
            answer_hash: Some(answer_hash),
            preferred_method: PreferredMethod::Gina,
            language: lang.tag().to_owned(),
        };
        let account = match state.store.gina().insert(&new_account).await {
            Ok(a) => a,
            Err(siegel_store::StoreError::Duplicate { .. }) => {
                return notice_response(
                    &state,
                    lang,
                    StatusCode::GONE,
                    "err_token_title",
                    "err_token_text",
                    None,
                );
            }
            Err(e) => return generic_error(&state, lang, &e),
        };
        state.audit(
            "register",
            Some(address.as_str()),
            None,
            &client,
            "signed up with a confirmed address",
        );
        match session::start(&state, &address, &client).await {
            Ok((s, c)) => {
                cookies = c;
                (account, s)
            }
            Err(e) => return generic_error(&state, lang, &e),
        }
    } else {
        if let Err(e) = state
            .store
            .gina()
            .register(&address, &pw_hash, question, &answer_hash)
            .await
        {
            return generic_error(&state, lang, &e);
        }
        // The language the recipient registered in becomes theirs.
        let _ = state.store.gina().set_language(&address, lang.tag()).await;
        state.audit(
            "register",
            Some(address.as_str()),
            None,
            &client,
            "initial password replaced",
        );
        let Some(s) = current else {
            return generic_error(&state, lang, &"session vanished");
        };
        // Other sessions (opened with the initial password) end.
        let _ = state
            .store
            .gina_sessions()
            .delete_for(&address, Some(&s.session.token_hash))
            .await;
        match state.store.gina().by_address(&address).await {
            Ok(Some(a)) => (a, s.session),
            _ => return generic_error(&state, lang, &"account vanished"),
        }
    };
    match posted_container {
        Some(p) => {
            show(
                &state, &account, &session, lang, p, false, &client, &cookies,
            )
            .await
        }
        None => with_cookies(
            (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, HeaderValue::from_static("/"))],
            )
                .into_response(),
            &cookies,
        ),
    }
}

pub async fn logout(
    State(state): State<AppState>,
    user: PortalUser,
    ext: axum::http::Extensions,
    mp: Multipart,
) -> Response {
    let client = client_of(&ext);
    let Some(form) = Form::read(mp).await else {
        return bad_form(&state, user.lang);
    };
    if !check_csrf(&state, form.get("csrf"), Some(&user.session), Csrf::Session) {
        return csrf_refused(&state, user.lang, &client, Some(user.address().as_str()));
    }
    let _ = state
        .store
        .gina_sessions()
        .delete(&user.session.token_hash)
        .await;
    state.audit("logout", Some(user.address().as_str()), None, &client, "");
    with_cookies(
        (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, HeaderValue::from_static("/?bye=1"))],
        )
            .into_response(),
        &session::end_cookies(),
    )
}

/// RFC 6266 `filename*` plus an ASCII fallback.
fn disposition(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut pct = String::new();
    for b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b".-_".contains(b) {
            pct.push(*b as char);
        } else {
            pct.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{pct}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// `POST /attachment`: one attachment of an opened container, always as a
/// download (never rendered by the browser inside our origin).
pub async fn attachment(
    State(state): State<AppState>,
    user: PortalUser,
    ext: axum::http::Extensions,
    mp: Multipart,
) -> Response {
    let client = client_of(&ext);
    let lang = user.lang;
    let Some(form) = Form::read(mp).await else {
        return bad_form(&state, lang);
    };
    if !check_csrf(&state, form.get("csrf"), Some(&user.session), Csrf::Session) {
        return csrf_refused(&state, lang, &client, Some(user.address().as_str()));
    }
    let Some(p) = posted(&form) else {
        return container_page(
            &state,
            state.themes.default_theme(),
            lang,
            ContainerProblem::Damaged,
            Some(user.address()),
        );
    };
    let theme = theme_for(&state, &p.bytes).clone();
    let (rec, plain) = match open_for(&state, &user.account, &p.bytes, &client).await {
        Ok(x) => x,
        Err(problem) => return container_page(&state, &theme, lang, problem, Some(user.address())),
    };
    let index: u32 = form.text("part").parse().unwrap_or(u32::MAX);
    let Some((name, bytes)) = mailview::attachment(&plain, index) else {
        return notice_response(
            &state,
            lang,
            StatusCode::NOT_FOUND,
            "err_not_found_title",
            "err_not_found_text",
            None,
        );
    };
    state.audit(
        "download",
        Some(user.address().as_str()),
        Some(&rec.container_id),
        &client,
        &name,
    );
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_DISPOSITION, disposition(&name)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; sandbox"),
            ),
        ],
        bytes,
    )
        .into_response()
}

fn is_internal(state: &AppState, a: &Address) -> bool {
    state
        .settings
        .internal_domains
        .iter()
        .any(|d| d == a.domain())
}

fn compose_page(state: &AppState, user: &PortalUser, ctx: Value) -> Response {
    html(
        state,
        Page {
            theme: state.themes.default_theme(),
            lang: user.lang,
            template: "compose.html",
            user: Some(user.address()),
            csrf: user.session.csrf.clone(),
            lang_next: None,
        },
        context! { max_upload => format!("{} MB", state.settings.max_upload / (1024 * 1024)), ..ctx },
    )
}

pub async fn compose_new(State(state): State<AppState>, user: PortalUser) -> Response {
    compose_page(&state, &user, context! { mode => "new" })
}

/// `POST /compose`: reply or reply-all to an opened container.
pub async fn compose_reply(
    State(state): State<AppState>,
    user: PortalUser,
    ext: axum::http::Extensions,
    mp: Multipart,
) -> Response {
    let client = client_of(&ext);
    let lang = user.lang;
    let Some(form) = Form::read(mp).await else {
        return bad_form(&state, lang);
    };
    if !check_csrf(&state, form.get("csrf"), Some(&user.session), Csrf::Session) {
        return csrf_refused(&state, lang, &client, Some(user.address().as_str()));
    }
    let Some(p) = posted(&form) else {
        return compose_page(&state, &user, context! { mode => "new" });
    };
    let theme = theme_for(&state, &p.bytes).clone();
    let (_, plain) = match open_for(&state, &user.account, &p.bytes, &client).await {
        Ok(x) => x,
        Err(problem) => return container_page(&state, &theme, lang, problem, Some(user.address())),
    };
    let view = mailview::view_mail(&plain, false, lang);
    let mut cc: Vec<String> = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    if form.text("mode") == "reply_all" {
        for a in &view.all_addresses {
            let Ok(addr) = Address::parse(a) else {
                continue;
            };
            if &addr == user.address() || addr.as_str() == view.from_address {
                continue;
            }
            if is_internal(&state, &addr) {
                cc.push(addr.as_str().to_owned());
            } else {
                dropped.push(addr.as_str().to_owned());
            }
        }
    }
    let prefix = theme.text(lang, "compose_reply_prefix");
    let subject = if view
        .subject
        .to_lowercase()
        .starts_with(&prefix.to_lowercase())
        || view.subject.to_lowercase().starts_with("re:")
    {
        view.subject.clone()
    } else {
        format!("{prefix}{}", view.subject)
    };
    let source_text = if view.text.is_empty() {
        String::new()
    } else {
        view.text.clone()
    };
    let quote_head = theme
        .text(lang, "compose_quote_header")
        .replace("{date}", &view.date)
        .replace("{sender}", &view.from);
    let quoted: String = source_text.lines().map(|l| format!("> {l}\n")).collect();
    let info = (!dropped.is_empty()).then(|| {
        theme
            .text(lang, "compose_dropped")
            .replace("{addresses}", &dropped.join(", "))
    });
    compose_page(
        &state,
        &user,
        context! {
            mode => "reply",
            to => view.from_address,
            cc => cc.join(", "),
            subject => subject,
            body => format!("\n\n{quote_head}\n{quoted}"),
            in_reply_to => view.message_id,
            references => view.references.join(" "),
            info => info,
        },
    )
}

fn split_addresses(s: &str) -> Vec<&str> {
    s.split([',', ';', ' ', '\n', '\r', '\t'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .collect()
}

fn header_text(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

fn message_id_list(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|x| x.trim_matches(['<', '>']))
        .filter(|x| {
            !x.is_empty()
                && x.len() < 500
                && x.contains('@')
                && !x.chars().any(|c| c.is_control() || c == '<' || c == '>')
        })
        .map(str::to_owned)
        .take(50)
        .collect()
}

/// `POST /send`: a reply or new mail, into Siegel's queue as inbound mail
/// from the logged-in address to internal users only.
pub async fn send(
    State(state): State<AppState>,
    user: PortalUser,
    ext: axum::http::Extensions,
    mp: Multipart,
) -> Response {
    let client = client_of(&ext);
    let lang = user.lang;
    let theme = state.themes.default_theme().clone();
    let Some(form) = Form::read(mp).await else {
        return bad_form(&state, lang);
    };
    if !check_csrf(&state, form.get("csrf"), Some(&user.session), Csrf::Session) {
        return csrf_refused(&state, lang, &client, Some(user.address().as_str()));
    }
    let mut errors = Vec::new();
    let mut to = Vec::new();
    let mut cc = Vec::new();
    let mut refused = Vec::new();
    for (field, list) in [("to", &mut to), ("cc", &mut cc)] {
        for a in split_addresses(form.text(field)) {
            match Address::parse(a) {
                Ok(addr) if is_internal(&state, &addr) => {
                    if !list.contains(&addr) {
                        list.push(addr);
                    }
                }
                Ok(addr) => refused.push(addr.as_str().to_owned()),
                Err(_) => errors.push(theme.text(lang, "err_bad_address").replace("{address}", a)),
            }
        }
    }
    if !refused.is_empty() {
        errors.push(
            theme
                .text(lang, "err_recipient_internal")
                .replace("{domains}", &state.settings.internal_domains.join(", "))
                .replace("{addresses}", &refused.join(", ")),
        );
    }
    if to.is_empty() && cc.is_empty() && errors.is_empty() {
        errors.push(theme.text(lang, "err_no_recipient"));
    }
    let total: usize = form.files.iter().map(|f| f.bytes.len()).sum();
    if total as u64 > state.settings.max_upload {
        errors.push(
            theme
                .text(lang, "err_too_large")
                .replace("{size}", &format!("{} MB", state.settings.max_upload >> 20)),
        );
    }
    let subject = header_text(form.text("subject"), 500);
    let body = form.get("body").unwrap_or("").replace("\r\n", "\n");
    if !errors.is_empty() {
        return compose_page(
            &state,
            &user,
            context! {
                mode => if form.text("in_reply_to").is_empty() { "new" } else { "reply" },
                errors => errors,
                to => form.text("to"), cc => form.text("cc"), subject => subject, body => body,
                in_reply_to => form.text("in_reply_to"), references => form.text("references"),
            },
        );
    }
    let Ok(message_id) = siegel_gina::mail::new_message_id(&state.settings.hostname) else {
        return generic_error(&state, lang, &"random failed");
    };
    let mb = |a: &Address| {
        mail_builder::headers::address::Address::new_address(None::<String>, a.as_str().to_owned())
    };
    let mut b = mail_builder::MessageBuilder::new()
        .from(mb(user.address()))
        .subject(subject.clone())
        .date(state.now())
        .message_id(message_id.clone())
        .header(
            "X-Siegel-Gina",
            mail_builder::headers::raw::Raw::new("portal"),
        )
        .text_body(body.clone());
    if !to.is_empty() {
        b = b.to(mail_builder::headers::address::Address::new_list(
            to.iter().map(mb).collect(),
        ));
    }
    if !cc.is_empty() {
        b = b.cc(mail_builder::headers::address::Address::new_list(
            cc.iter().map(mb).collect(),
        ));
    }
    let irt = message_id_list(form.text("in_reply_to"));
    if let Some(first) = irt.first() {
        b = b.in_reply_to(first.clone());
    }
    let refs = message_id_list(form.text("references"));
    if !refs.is_empty() {
        b = b.references(mail_builder::headers::message_id::MessageId::new_list(
            refs.into_iter(),
        ));
    }
    let mut names = Vec::new();
    for f in &form.files {
        let ct = if f.content_type.split('/').count() == 2
            && f.content_type.is_ascii()
            && !f.content_type.contains([';', ' ', '"'])
        {
            f.content_type.clone()
        } else {
            "application/octet-stream".to_owned()
        };
        let name = header_text(&f.name.replace(['/', '\\'], "_"), 200);
        names.push(name.clone());
        b = b.attachment(ct, name, f.bytes.clone());
    }
    let bytes = match b.write_to_vec() {
        Ok(b) => b,
        Err(e) => return generic_error(&state, lang, &e),
    };
    let all: Vec<Address> = to.iter().chain(cc.iter()).cloned().collect();
    let env = envelope(
        ReversePath::Address(user.address().clone()),
        &all,
        Direction::Inbound,
        "gina-portal",
        Some(message_id.clone()),
    );
    if let Err(e) = state.spool.inject(env, &bytes).await {
        return generic_error(&state, lang, &e);
    }
    state.audit(
        "send",
        Some(user.address().as_str()),
        None,
        &client,
        &format!(
            "<{message_id}> to {}",
            all.iter()
                .map(Address::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    html(
        &state,
        Page {
            theme: &theme,
            lang,
            template: "home.html",
            user: Some(user.address()),
            csrf: user.session.csrf.clone(),
            lang_next: None,
        },
        context! {
            info => theme.text(lang, "sent_info"),
            sent => context! {
                to => to.iter().map(Address::as_str).collect::<Vec<_>>().join(", "),
                cc => cc.iter().map(Address::as_str).collect::<Vec<_>>().join(", "),
                subject => subject,
                body => body,
                attachments => names,
            },
        },
    )
}

// ---- settings ------------------------------------------------------------------

fn settings_render(
    state: &AppState,
    user: &PortalUser,
    account: &GinaAccount,
    lang: Lang,
    errors: Vec<String>,
    info: Option<String>,
) -> Response {
    let theme = state.themes.default_theme();
    html(
        state,
        Page {
            theme,
            lang,
            template: "settings.html",
            user: Some(user.address()),
            csrf: user.session.csrf.clone(),
            lang_next: Some("/settings"),
        },
        context! {
            errors => errors,
            info => info,
            rules => rules(state),
            questions => questions(theme, lang),
            security_question => account.security_question,
            method => account.preferred_method.as_str(),
        },
    )
}

pub async fn settings_page(State(state): State<AppState>, user: PortalUser) -> Response {
    let account = user.account.clone();
    settings_render(&state, &user, &account, user.lang, vec![], None)
}

async fn settings_form(
    state: &AppState,
    user: &PortalUser,
    client: &str,
    mp: Multipart,
) -> Result<Form, Response> {
    let form = Form::read(mp)
        .await
        .ok_or_else(|| bad_form(state, user.lang))?;
    if !check_csrf(state, form.get("csrf"), Some(&user.session), Csrf::Session) {
        return Err(csrf_refused(
            state,
            user.lang,
            client,
            Some(user.address().as_str()),
        ));
    }
    Ok(form)
}

async fn current_password_ok(state: &AppState, user: &PortalUser, form: &Form) -> bool {
    state
        .hasher
        .verify(
            &Secret::new(form.get("password").unwrap_or("")),
            &user.account.password_hash,
        )
        .await
        .unwrap_or(false)
}

pub async fn settings_password(
    State(state): State<AppState>,
    user: PortalUser,
    ext: axum::http::Extensions,
    mp: Multipart,
) -> Response {
    let client = client_of(&ext);
    let form = match settings_form(&state, &user, &client, mp).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let theme = state.themes.default_theme();
    let lang = user.lang;
    if !current_password_ok(&state, &user, &form).await {
        state.audit(
            "password_change_failed",
            Some(user.address().as_str()),
            None,
            &client,
            "wrong current password",
        );
        return settings_render(
            &state,
            &user,
            &user.account,
            lang,
            vec![theme.text(lang, "err_login")],
            None,
        );
    }
    let new = form.get("new_password").unwrap_or("");
    let v = match password_problems(
        &state,
        Some(&user.account),
        user.address(),
        new,
        form.get("new_password_confirm").unwrap_or(""),
    )
    .await
    {
        Ok(v) => v,
        Err(e) => return generic_error(&state, lang, &e),
    };
    if !v.is_empty() {
        return settings_render(
            &state,
            &user,
            &user.account,
            lang,
            violation_texts(theme, lang, &v),
            None,
        );
    }
    let Ok(hash) = state.hasher.hash(&Secret::new(new)).await else {
        return generic_error(&state, lang, &"hashing failed");
    };
    if let Err(e) = state
        .store
        .gina()
        .change_password(user.address(), &hash)
        .await
    {
        return generic_error(&state, lang, &e);
    }
    let _ = state
        .store
        .gina_sessions()
        .delete_for(user.address(), Some(&user.session.token_hash))
        .await;
    state.audit(
        "password_changed",
        Some(user.address().as_str()),
        None,
        &client,
        "",
    );
    settings_render(
        &state,
        &user,
        &user.account,
        lang,
        vec![],
        Some(theme.text(lang, "settings_password_done")),
    )
}

pub async fn settings_question(
    State(state): State<AppState>,
    user: PortalUser,
    ext: axum::http::Extensions,
    mp: Multipart,
) -> Response {
    let client = client_of(&ext);
    let form = match settings_form(&state, &user, &client, mp).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let theme = state.themes.default_theme();
    let lang = user.lang;
    if !current_password_ok(&state, &user, &form).await {
        return settings_render(
            &state,
            &user,
            &user.account,
            lang,
            vec![theme.text(lang, "err_login")],
            None,
        );
    }
    let q = form.text("security_question");
    let a = normalise_answer(form.get("security_answer").unwrap_or(""));
    if q.is_empty() || a.is_empty() || q.len() > 500 || q.chars().any(char::is_control) {
        return settings_render(
            &state,
            &user,
            &user.account,
            lang,
            vec![theme.text(lang, "err_question_missing")],
            None,
        );
    }
    let Ok(h) = state.hasher.hash(&Secret::new(a)).await else {
        return generic_error(&state, lang, &"hashing failed");
    };
    if let Err(e) = state
        .store
        .gina()
        .set_security_question(user.address(), q, &h)
        .await
    {
        return generic_error(&state, lang, &e);
    }
    state.audit(
        "question_changed",
        Some(user.address().as_str()),
        None,
        &client,
        "",
    );
    let mut account = user.account.clone();
    account.security_question = Some(q.to_owned());
    settings_render(
        &state,
        &user,
        &account,
        lang,
        vec![],
        Some(theme.text(lang, "settings_question_done")),
    )
}

pub async fn settings_method(
    State(state): State<AppState>,
    user: PortalUser,
    ext: axum::http::Extensions,
    mp: Multipart,
) -> Response {
    let client = client_of(&ext);
    let form = match settings_form(&state, &user, &client, mp).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let theme = state.themes.default_theme();
    let lang = user.lang;
    let method = match form.text("method") {
        "smime" => PreferredMethod::Smime,
        "pgp" => PreferredMethod::Pgp,
        _ => PreferredMethod::Gina,
    };
    let mut account = user.account.clone();
    if method != PreferredMethod::Gina {
        let Some(file) = form
            .files
            .iter()
            .find(|f| f.field == "key_file" && !f.bytes.is_empty())
        else {
            return settings_render(
                &state,
                &user,
                &account,
                lang,
                vec![theme.text(lang, "err_key_missing")],
                None,
            );
        };
        let Some(importer) = &state.keys else {
            return generic_error(&state, lang, &"no key importer configured");
        };
        let key = match importer.import(method, user.address(), &file.bytes) {
            Ok(k) => k,
            Err(why) => {
                state.audit(
                    "key_refused",
                    Some(user.address().as_str()),
                    None,
                    &client,
                    &why,
                );
                return settings_render(
                    &state,
                    &user,
                    &account,
                    lang,
                    vec![
                        theme
                            .text(lang, "err_key_file")
                            .replace("{address}", user.address().as_str()),
                    ],
                    None,
                );
            }
        };
        let repo = if method == PreferredMethod::Smime {
            state.store.certificates()
        } else {
            state.store.pgp_keys()
        };
        match repo.insert(&key).await {
            Ok(_) | Err(siegel_store::StoreError::Duplicate { .. }) => {}
            Err(e) => return generic_error(&state, lang, &e),
        }
        state.audit(
            "key_uploaded",
            Some(user.address().as_str()),
            None,
            &client,
            &format!("{} {}", method.as_str(), key.fingerprint),
        );
    }
    if let Err(e) = state
        .store
        .gina()
        .set_preferred_method(user.address(), method)
        .await
    {
        return generic_error(&state, lang, &e);
    }
    state.audit(
        "method_changed",
        Some(user.address().as_str()),
        None,
        &client,
        method.as_str(),
    );
    account.preferred_method = method;
    settings_render(
        &state,
        &user,
        &account,
        lang,
        vec![],
        Some(theme.text(lang, "settings_method_done")),
    )
}

pub async fn settings_language(
    State(state): State<AppState>,
    user: PortalUser,
    ext: axum::http::Extensions,
    mp: Multipart,
) -> Response {
    let client = client_of(&ext);
    let form = match settings_form(&state, &user, &client, mp).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let lang = Lang::from_tag(form.text("language")).unwrap_or(user.lang);
    if let Err(e) = state
        .store
        .gina()
        .set_language(user.address(), lang.tag())
        .await
    {
        return generic_error(&state, lang, &e);
    }
    let mut account = user.account.clone();
    account.language = lang.tag().to_owned();
    let r = settings_render(
        &state,
        &user,
        &account,
        lang,
        vec![],
        Some(
            state
                .themes
                .default_theme()
                .text(lang, "settings_language_done"),
        ),
    );
    with_cookies(
        r,
        &[session::set_cookie(
            session::LANG,
            lang.tag(),
            Some(365 * 86_400),
            "Strict",
        )],
    )
}

// ---- reset ---------------------------------------------------------------------

fn reset_render(
    state: &AppState,
    lang: Lang,
    email: &str,
    question: Option<&str>,
    errors: Vec<String>,
) -> Response {
    html(
        state,
        Page {
            theme: state.themes.default_theme(),
            lang,
            template: "reset.html",
            user: None,
            csrf: session::pre_token(state),
            lang_next: if question.is_none() {
                Some("/reset")
            } else {
                None
            },
        },
        context! { email => email, question => question, errors => errors, rules => rules(state) },
    )
}

pub async fn reset_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    reset_render(&state, lang_of(&state, &headers, None), "", None, vec![])
}

/// The question for an address: its own, or — for an address without
/// account or question — one picked by a MAC of the address, the same
/// every time, so the page does not tell which addresses have accounts.
async fn question_for(
    state: &AppState,
    lang: Lang,
    address: &Address,
) -> (Option<GinaAccount>, String) {
    let account = state.store.gina().by_address(address).await.ok().flatten();
    if let Some(q) = account
        .as_ref()
        .filter(|a| a.answer_hash.is_some())
        .and_then(|a| a.security_question.clone())
    {
        return (account, q);
    }
    let tag = ring::hmac::sign(
        &state.form_key,
        format!("question\0{}", address.as_str()).as_bytes(),
    );
    let n = 1 + usize::from(tag.as_ref()[0]) % 5;
    (
        account,
        state
            .themes
            .default_theme()
            .text(lang, &format!("question_{n}")),
    )
}

pub async fn reset_start(
    State(state): State<AppState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    mp: Multipart,
) -> Response {
    let client = client_of(&ext);
    let lang = lang_of(&state, &headers, None);
    let Some(form) = Form::read(mp).await else {
        return bad_form(&state, lang);
    };
    if !check_csrf(&state, form.get("csrf"), None, Csrf::Any) {
        return csrf_refused(&state, lang, &client, None);
    }
    let email = form.text("email");
    let Ok(address) = Address::parse(email) else {
        let t = state
            .themes
            .default_theme()
            .text(lang, "err_bad_address")
            .replace("{address}", email);
        return reset_render(&state, lang, email, None, vec![t]);
    };
    let (_, q) = question_for(&state, lang, &address).await;
    reset_render(&state, lang, address.as_str(), Some(&q), vec![])
}

pub async fn reset_answer(
    State(state): State<AppState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    mp: Multipart,
) -> Response {
    let client = client_of(&ext);
    let lang = lang_of(&state, &headers, None);
    let theme = state.themes.default_theme();
    let Some(form) = Form::read(mp).await else {
        return bad_form(&state, lang);
    };
    if !check_csrf(&state, form.get("csrf"), None, Csrf::Any) {
        return csrf_refused(&state, lang, &client, None);
    }
    let Ok(address) = Address::parse(form.text("email")) else {
        return reset_render(
            &state,
            lang,
            "",
            None,
            vec![theme.text(lang, "err_answer_wrong")],
        );
    };
    let (account, question) = question_for(&state, lang, &address).await;
    let s = &state.settings;
    let now = state.now();
    let throttle = state.store.gina_throttle();
    let client_key = format!("client:{client}");
    let reset_key = format!("reset:{}", address.as_str());
    let window = s.client_window.as_secs() as i64;
    let lock_for = s.lock_for.as_secs() as i64;
    let known = session::known_device(&state, &headers, &address);
    let client_locked = throttle
        .state(&client_key)
        .await
        .ok()
        .flatten()
        .is_some_and(|t| t.locked(now));
    let reset_locked = !known
        && throttle
            .state(&reset_key)
            .await
            .ok()
            .flatten()
            .is_some_and(|t| t.locked(now));
    if client_locked || reset_locked {
        state.audit("reset_locked", Some(address.as_str()), None, &client, "");
        let msg = if client_locked {
            theme.text(lang, "err_throttled")
        } else {
            theme
                .text(lang, "err_locked")
                .replace("{minutes}", &(lock_for / 60).to_string())
        };
        return reset_render(&state, lang, address.as_str(), Some(&question), vec![msg]);
    }
    let answer = Secret::new(normalise_answer(form.get("security_answer").unwrap_or("")));
    let right = match account.as_ref().and_then(|a| a.answer_hash.as_deref()) {
        Some(h) => state.hasher.verify(&answer, h).await.unwrap_or(false),
        None => state.hasher.verify_nothing(&answer).await.unwrap_or(false),
    };
    let Some(account) = account.filter(|_| right) else {
        let _ = throttle
            .fail(&client_key, now, window, i64::from(s.client_limit), window)
            .await;
        if !known {
            let _ = throttle
                .fail(
                    &reset_key,
                    now,
                    lock_for.max(1),
                    i64::from(s.lock_after),
                    lock_for,
                )
                .await;
        }
        state.audit(
            "reset_failed",
            Some(address.as_str()),
            None,
            &client,
            "wrong answer",
        );
        return reset_render(
            &state,
            lang,
            address.as_str(),
            Some(&question),
            vec![theme.text(lang, "err_answer_wrong")],
        );
    };
    let new = form.get("new_password").unwrap_or("");
    let v = match password_problems(
        &state,
        Some(&account),
        &address,
        new,
        form.get("new_password_confirm").unwrap_or(""),
    )
    .await
    {
        Ok(v) => v,
        Err(e) => return generic_error(&state, lang, &e),
    };
    if !v.is_empty() {
        return reset_render(
            &state,
            lang,
            address.as_str(),
            Some(&question),
            violation_texts(theme, lang, &v),
        );
    }
    let Ok(hash) = state.hasher.hash(&Secret::new(new)).await else {
        return generic_error(&state, lang, &"hashing failed");
    };
    if let Err(e) = state.store.gina().change_password(&address, &hash).await {
        return generic_error(&state, lang, &e);
    }
    let _ = throttle.clear(&reset_key).await;
    let _ = throttle
        .clear(&format!("account:{}", address.as_str()))
        .await;
    let _ = state.store.gina_sessions().delete_for(&address, None).await;
    state.audit(
        "reset",
        Some(address.as_str()),
        None,
        &client,
        "by security answer",
    );
    let (session, cookies) = match session::start(&state, &address, &client).await {
        Ok(x) => x,
        Err(e) => return generic_error(&state, lang, &e),
    };
    let r = html(
        &state,
        Page {
            theme,
            lang,
            template: "home.html",
            user: Some(&address),
            csrf: session.csrf,
            lang_next: None,
        },
        context! { info => theme.text(lang, "reset_done") },
    );
    with_cookies(r, &cookies)
}

// ---- sign-up -----------------------------------------------------------------

fn signup_render(
    state: &AppState,
    lang: Lang,
    email: &str,
    sent: bool,
    errors: Vec<String>,
) -> Response {
    html(
        state,
        Page {
            theme: state.themes.default_theme(),
            lang,
            template: "signup.html",
            user: None,
            csrf: session::pre_token(state),
            lang_next: Some("/signup"),
        },
        context! { email => email, sent => sent, errors => errors },
    )
}

pub async fn signup_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let lang = lang_of(&state, &headers, None);
    if !state.settings.signup {
        return not_found_page(&state, lang);
    }
    signup_render(&state, lang, "", false, vec![])
}

/// `POST /signup`: sends the confirmation link. The page says the same
/// whether or not the address has an account (the mail differs).
pub async fn signup_send(
    State(state): State<AppState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    mp: Multipart,
) -> Response {
    let client = client_of(&ext);
    let lang = lang_of(&state, &headers, None);
    if !state.settings.signup {
        return not_found_page(&state, lang);
    }
    let theme = state.themes.default_theme();
    let Some(form) = Form::read(mp).await else {
        return bad_form(&state, lang);
    };
    if !check_csrf(&state, form.get("csrf"), None, Csrf::Any) {
        return csrf_refused(&state, lang, &client, None);
    }
    let email = form.text("email");
    let Ok(address) = Address::parse(email) else {
        return signup_render(
            &state,
            lang,
            email,
            false,
            vec![
                theme
                    .text(lang, "err_bad_address")
                    .replace("{address}", email),
            ],
        );
    };
    if is_internal(&state, &address) {
        // Internal users do not need (and must not get) portal accounts.
        return signup_render(&state, lang, address.as_str(), true, vec![]);
    }
    let now = state.now();
    let s = &state.settings;
    let window = s.client_window.as_secs() as i64;
    let throttle = state.store.gina_throttle();
    let client_key = format!("signup:{client}");
    if throttle
        .state(&client_key)
        .await
        .ok()
        .flatten()
        .is_some_and(|t| t.locked(now))
    {
        return signup_render(
            &state,
            lang,
            address.as_str(),
            false,
            vec![theme.text(lang, "err_throttled")],
        );
    }
    // Every request counts against the client (it sends mail to others).
    let _ = throttle
        .fail(&client_key, now, window, i64::from(s.client_limit), window)
        .await;
    // At most one mail per address per 10 minutes; the page stays the same.
    if state
        .store
        .gina_tokens()
        .count_since(&address, now - 600)
        .await
        .unwrap_or(1)
        > 0
    {
        return signup_render(&state, lang, address.as_str(), true, vec![]);
    }
    let Ok(token) = siegel_gina::accounts::new_token() else {
        return generic_error(&state, lang, &"random failed");
    };
    let valid = s.signup_link_valid.as_secs() as i64;
    if let Err(e) = state
        .store
        .gina_tokens()
        .create(
            &session::sha256_hex(&token),
            "signup",
            &address,
            now,
            now + valid,
        )
        .await
    {
        return generic_error(&state, lang, &e);
    }
    let exists = state
        .store
        .gina()
        .by_address(&address)
        .await
        .ok()
        .flatten()
        .is_some();
    let link = format!("{}/signup/verify?token={token}", s.public_url);
    let reset = format!("{}/reset", s.public_url);
    let mail = siegel_gina::mail::verification(
        theme,
        lang,
        &siegel_gina::mail::VerifyParams {
            from: &s.system_from,
            to: &address,
            link: (!exists).then_some(link.as_str()),
            reset_url: &reset,
            hours: u32::try_from(valid / 3600).unwrap_or(24),
            date: now,
            hostname: &s.hostname,
        },
    );
    match mail {
        Ok(bytes) => {
            let env = envelope(
                ReversePath::Address(s.system_from.clone()),
                std::slice::from_ref(&address),
                Direction::Outbound,
                "gina-signup",
                None,
            );
            if let Err(e) = state.spool.inject(env, &bytes).await {
                return generic_error(&state, lang, &e);
            }
        }
        Err(e) => return generic_error(&state, lang, &e),
    }
    state.audit(
        "signup_requested",
        Some(address.as_str()),
        None,
        &client,
        if exists { "account exists" } else { "" },
    );
    signup_render(&state, lang, address.as_str(), true, vec![])
}

#[derive(serde::Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

pub async fn signup_verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Query<TokenQuery>,
) -> Response {
    let lang = lang_of(&state, &headers, None);
    let token = q.token.clone().unwrap_or_default();
    match state
        .store
        .gina_tokens()
        .peek(&session::sha256_hex(&token), "signup", state.now())
        .await
    {
        Ok(Some(rec)) => register_page(
            &state,
            state.themes.default_theme(),
            lang,
            rec.address.as_str(),
            session::pre_token(&state),
            None,
            Some(&token),
            vec![],
            "",
        ),
        _ => notice_response(
            &state,
            lang,
            StatusCode::GONE,
            "err_token_title",
            "err_token_text",
            None,
        ),
    }
}

// ---- language, theme assets, 404 ---------------------------------------------

#[derive(serde::Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn set_lang(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(lang): Path<String>,
    q: Query<NextQuery>,
) -> Response {
    let lang = Lang::from_tag(&lang).unwrap_or(state.settings.default_lang);
    if let Some(s) = session::session_of(&state, &headers).await {
        let _ = state
            .store
            .gina()
            .set_language(&s.account.address, lang.tag())
            .await;
    }
    // Only our own paths: never an open redirect.
    let next = q
        .next
        .as_deref()
        .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && n.is_ascii())
        .unwrap_or("/");
    let loc = format!("{}{next}", base_path(&state));
    let r = (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(&loc).unwrap_or(HeaderValue::from_static("/")),
        )],
    )
        .into_response();
    with_cookies(
        r,
        &[session::set_cookie(
            session::LANG,
            lang.tag(),
            Some(365 * 86_400),
            "Lax",
        )],
    )
}

fn theme_named<'a>(state: &'a AppState, name: &str) -> &'a Arc<Theme> {
    if name == "default" {
        state.themes.default_theme()
    } else {
        state.themes.for_domain(name)
    }
}

pub async fn theme_css(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let theme = theme_named(&state, &name);
    match theme.render("portal.css", Lang::En, context! {}) {
        Ok(css) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/css; charset=utf-8"),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=3600"),
                ),
            ],
            css,
        )
            .into_response(),
        Err(e) => generic_error(&state, Lang::En, &e),
    }
}

pub async fn theme_logo(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let logo = theme_named(&state, &name).logo().clone();
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(logo.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
            // An SVG opened on its own must not run anything.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
            ),
        ],
        logo.bytes,
    )
        .into_response()
}

/// Browsers ask for it on every first visit; the default theme's logo.
pub async fn favicon(state: State<AppState>) -> Response {
    theme_logo(state, Path("default".to_owned())).await
}

fn not_found_page(state: &AppState, lang: Lang) -> Response {
    notice_response(
        state,
        lang,
        StatusCode::NOT_FOUND,
        "err_not_found_title",
        "err_not_found_text",
        None,
    )
}

pub async fn not_found(State(state): State<AppState>, headers: HeaderMap) -> Response {
    not_found_page(&state, lang_of(&state, &headers, None))
}
