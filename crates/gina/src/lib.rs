//! GINA without HTTP: what the pipeline (sealing a mail for a recipient
//! without keys) and the portal (opening it again) share.
//!
//! * [`container`]: seal/open of the encrypted container (AES-256-GCM,
//!   STREAM segments, authenticated header);
//! * [`html`]: the HTML file that carries a container to the recipient;
//! * [`accounts`]: initial passwords, the password policy, argon2id hashing;
//! * [`theme`]: per-domain themes (CSS, logo, texts, templates) with
//!   professional defaults in German and English;
//! * [`mail`]: the mails GINA sends (carrier, initial-password notice,
//!   address verification, read receipt).
//!
//! See docs/design/gina.md for the key handling and the threat model.

pub mod accounts;
pub mod container;
pub mod html;
pub mod mail;
pub mod theme;

pub use accounts::{Hasher, PasswordPolicy, Secret, Violation, new_initial_password};
pub use container::{
    ContainerId, ContentKey, Header, OpenError, SealError, SealParams, SealedContainer,
};
pub use theme::{Lang, Theme, ThemeError, Themes};
