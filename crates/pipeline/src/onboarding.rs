//! Onboarding: a sender of an internal domain whom the administrator's
//! `[users] onboard` list names becomes one of Siegel's users on their
//! first outbound mail, taking a licence seat, as PRODUCT.md describes it
//! for the directory group that entitles a user. From then on their mail is
//! signed and the mPKI and OpenPGP auto-enrolment issue their certificate
//! and key.
//!
//! Anyone the list does not name stays unknown and is never signed for:
//! a printer or a role account gets no certificate behind the
//! administrator's back. `exclude` wins over `onboard` and is recorded, so
//! the decision shows in `siegel user list`.

use siegel_store::{LicenceState, NewUser, Store, StoreError};
use siegel_types::{Address, AddressPattern};

/// Who is onboarded.
#[derive(Debug, Clone, Default)]
pub struct Onboarding {
    pub onboard: Vec<AddressPattern>,
    pub exclude: Vec<AddressPattern>,
}

impl Onboarding {
    /// The licence state of `sender` (already known to be of an internal
    /// domain): the stored one, else — when `onboard` names the sender —
    /// the one given now: excluded, licensed while a seat is free, else
    /// unlicensed. `None`: not a user. `now` (Unix seconds) decides which
    /// licences are valid.
    pub async fn licence_state(
        &self,
        store: &Store,
        sender: &Address,
        now: u64,
    ) -> Result<Option<LicenceState>, StoreError> {
        if let Some(state) = store.users().licence_state(sender).await? {
            return Ok(Some(state));
        }
        if !self.onboard.iter().any(|p| p.matches(sender)) {
            return Ok(None);
        }
        let state = if self.exclude.iter().any(|p| p.matches(sender)) {
            LicenceState::Excluded
        } else if seat_free(store, now).await? {
            LicenceState::Licensed
        } else {
            LicenceState::Unlicensed
        };
        let user = NewUser {
            address: sender.clone(),
            display_name: None,
            attributes: Default::default(),
            licence_state: state,
        };
        match store.users().insert(&user).await {
            Ok(_) => {
                if state == LicenceState::Unlicensed {
                    tracing::warn!(target: "siegel::users", address = %sender, "onboarded without a licence: every seat is taken; mail passes unsigned");
                } else {
                    tracing::info!(target: "siegel::users", address = %sender, state = state.as_str(), "onboarded on the first mail");
                }
                Ok(Some(state))
            }
            // Another node (or mail) onboarded the sender meanwhile.
            Err(StoreError::Duplicate { .. }) => store.users().licence_state(sender).await,
            Err(e) => Err(e),
        }
    }
}

/// Whether the installed licences valid at `now` leave a seat free. With
/// no licence installed there is no limit.
async fn seat_free(store: &Store, now: u64) -> Result<bool, StoreError> {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let licences = store.licences().valid_at(now).await?;
    if licences.is_empty() {
        return Ok(true);
    }
    let seats: i64 = licences.iter().map(|l| l.licence.seats).sum();
    Ok(store.users().count(LicenceState::Licensed).await? < seats)
}
