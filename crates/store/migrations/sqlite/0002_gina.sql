-- Siegel store, version 2 (SQLite): GINA containers, portal sessions,
-- one-time tokens, throttling, the portal's audit trail and its secrets.
-- Keep in step with ../postgres/0002_gina.sql.

-- An account created with an initial password must register (own password,
-- security question) at its next login.
ALTER TABLE gina_accounts ADD COLUMN must_register BOOLEAN NOT NULL DEFAULT FALSE;

-- One row per container sent. The mail itself is never stored: only its
-- content key, sealed under the master key. Revoking or expiring a
-- container sets key_enc to NULL (crypto-shredding): every copy of the
-- container becomes unreadable for good.
CREATE TABLE gina_containers (
    id               INTEGER PRIMARY KEY,
    container_id     TEXT NOT NULL UNIQUE,
    message_id       TEXT,
    sender           TEXT NOT NULL,
    recipient        TEXT NOT NULL,
    key_enc          BLOB,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    revoked_at       INTEGER,
    shredded_at      INTEGER,
    first_opened_at  INTEGER,
    receipt_to       TEXT,
    CHECK (created_at <= expires_at)
);
CREATE INDEX gina_containers_message_id ON gina_containers (message_id);
CREATE INDEX gina_containers_recipient ON gina_containers (recipient);
CREATE INDEX gina_containers_expires ON gina_containers (expires_at);

-- Portal sessions, shared by every node. The cookie holds a random token;
-- only its SHA-256 is stored, so a copy of the table opens no session.
CREATE TABLE gina_sessions (
    token_hash   TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    client       TEXT NOT NULL
);
CREATE INDEX gina_sessions_address ON gina_sessions (address);

-- One-time tokens (address verification links), stored as SHA-256.
CREATE TABLE gina_tokens (
    token_hash  TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL CHECK (purpose IN ('signup')),
    address     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX gina_tokens_address ON gina_tokens (address);

-- Failure counters for throttling and lock-out, keyed by what is limited
-- ("account:<address>", "client:<ip>", …), for known and unknown accounts
-- alike so the answers do not differ.
CREATE TABLE gina_throttle (
    key          TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL CHECK (failures >= 0),
    window_start INTEGER NOT NULL,
    locked_until INTEGER
);

-- The portal's audit trail: logins, failures, lock-outs, resets, opens.
CREATE TABLE gina_audit (
    id           INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    event        TEXT NOT NULL,
    address      TEXT,
    container_id TEXT,
    client       TEXT,
    detail       TEXT NOT NULL,
    node         TEXT NOT NULL
);
CREATE INDEX gina_audit_address ON gina_audit (address);
CREATE INDEX gina_audit_at ON gina_audit (at);

-- Secrets of the portal shared by all nodes (the form-token key), sealed
-- under the master key like every private key.
CREATE TABLE gina_secrets (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    value_enc  BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
