//! Serving our own users' OpenPGP keys by Web Key Directory
//! (draft-koch-openpgp-webkey-service), so that correspondents' mail
//! clients and gateways can encrypt to them without an exchange first.
//!
//! * `/.well-known/openpgpkey/{domain}/hu/{hash}` (advanced method, the
//!   portal reached as `openpgpkey.<domain>`) and
//!   `/.well-known/openpgpkey/hu/{hash}` (direct method, the domain taken
//!   from the `Host` header);
//! * `/.well-known/openpgpkey/[{domain}/]policy`: an empty policy file,
//!   which tells clients the domain takes part.
//!
//! Only internal domains are answered; anything else is 404, as is an
//! unknown user. The answer is the binary public certificate, never
//! secret parts ([`siegel_wkd::public_key_bytes`] strips them). With `l=`
//! the user is found directly (after checking that the parameter hashes
//! to the requested hash); without it, among the users of that domain.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use siegel_store::{KeyRecord, SourceKind};
use siegel_types::Address;

use crate::AppState;

/// The optional `l=` query parameter (the local part as the client has it).
#[derive(Debug, Deserialize)]
pub(crate) struct Wkd {
    l: Option<String>,
}

/// Users listed per store round trip while searching a hash.
const PAGE: i64 = 500;

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such key\n").into_response()
}

/// The domain of a `Host` header: without port, lower case; for the
/// policy file of the advanced method the `openpgpkey.` label is dropped.
fn host_domain(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    Some(name.trim_end_matches('.').to_ascii_lowercase())
}

impl AppState {
    fn internal(&self, domain: &str) -> Option<String> {
        let d = domain.to_ascii_lowercase();
        self.settings.internal_domains.contains(&d).then_some(d)
    }
}

/// Direct method: `/.well-known/openpgpkey/hu/{hash}`.
pub(crate) async fn direct(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(hash): Path<String>,
    Query(q): Query<Wkd>,
) -> Response {
    match host_domain(&headers) {
        Some(domain) => key(&state, &domain, &hash, q.l.as_deref()).await,
        None => not_found(),
    }
}

/// Advanced method: `/.well-known/openpgpkey/{domain}/hu/{hash}`.
pub(crate) async fn advanced(
    State(state): State<AppState>,
    Path((domain, hash)): Path<(String, String)>,
    Query(q): Query<Wkd>,
) -> Response {
    key(&state, &domain, &hash, q.l.as_deref()).await
}

/// Direct method's policy file; the Host may be the domain itself or
/// `openpgpkey.<domain>`.
pub(crate) async fn direct_policy(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(host) = host_domain(&headers) else {
        return not_found();
    };
    let domain = host.strip_prefix("openpgpkey.").unwrap_or(&host);
    policy(&state, domain)
}

/// Advanced method's policy file.
pub(crate) async fn advanced_policy(
    State(state): State<AppState>,
    Path(domain): Path<String>,
) -> Response {
    policy(&state, &domain)
}

fn policy(state: &AppState, domain: &str) -> Response {
    if state.internal(domain).is_none() {
        return not_found();
    }
    (
        [
            (header::CONTENT_TYPE, "text/plain"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        "",
    )
        .into_response()
}

async fn key(state: &AppState, domain: &str, hash: &str, l: Option<&str>) -> Response {
    let Some(domain) = state.internal(domain) else {
        return not_found();
    };
    if !siegel_wkd::is_local_hash(hash) {
        return not_found();
    }
    let found = match find(state, &domain, hash, l).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(target: "siegel::portal", error = %e, "WKD lookup in the store failed");
            return (StatusCode::SERVICE_UNAVAILABLE, "try again later\n").into_response();
        }
    };
    let Some(record) = found else {
        return not_found();
    };
    match siegel_wkd::public_key_bytes(&record.material) {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(target: "siegel::portal", fingerprint = %record.fingerprint, error = %e, "stored OpenPGP key cannot be served");
            not_found()
        }
    }
}

/// The key to serve for `hash` in `domain`: by `l=` when it matches the
/// hash, else by searching the domain's users.
async fn find(
    state: &AppState,
    domain: &str,
    hash: &str,
    l: Option<&str>,
) -> Result<Option<KeyRecord>, siegel_store::StoreError> {
    if let Some(local) = l.filter(|l| siegel_wkd::local_hash(l) == hash)
        && let Ok(address) = Address::parse(&format!("{local}@{domain}"))
        && let Some(k) = usable(state, &address).await?
    {
        return Ok(Some(k));
    }
    // No (matching) l=, or the user is stored in another spelling.
    let mut after: Option<Address> = None;
    loop {
        let users = state.store.users().list(after.as_ref(), PAGE).await?;
        let Some(last) = users.last() else {
            return Ok(None);
        };
        after = Some(last.address.clone());
        for u in &users {
            if u.address.domain() == domain && siegel_wkd::local_hash(u.address.local()) == hash {
                return usable(state, &u.address).await;
            }
        }
        if users.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
            return Ok(None);
        }
    }
}

/// Our own (issued or imported) key of the address that is neither revoked
/// nor superseded nor expired; the one valid longest.
async fn usable(
    state: &AppState,
    address: &Address,
) -> Result<Option<KeyRecord>, siegel_store::StoreError> {
    let now = state.now();
    Ok(state
        .store
        .pgp_keys()
        .for_address(address)
        .await?
        .into_iter()
        .find(|k| {
            matches!(k.source_kind, SourceKind::Issued | SourceKind::Imported)
                && !k.revoked
                && k.superseded_by.is_none()
                && k.not_before <= now
                && k.not_after >= now
        }))
}
