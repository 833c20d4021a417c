-- Siegel store, version 1 (SQLite). Keep in step with ../postgres/0001_initial.sql:
-- same tables, same columns, same constraints; only the column types differ.
-- Times are Unix seconds (INTEGER), JSON is TEXT, secrets are sealed BLOBs.

CREATE TABLE master_key_check (
    key_id      TEXT PRIMARY KEY,
    check_value BLOB NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('current', 'pending'))
);

CREATE TABLE users (
    address       TEXT PRIMARY KEY,
    display_name  TEXT,
    attributes    TEXT NOT NULL DEFAULT '{}',
    licence_state TEXT NOT NULL CHECK (licence_state IN ('licensed', 'unlicensed', 'excluded')),
    created_at    INTEGER NOT NULL,
    last_seen     INTEGER
);

CREATE TABLE certificates (
    id                INTEGER PRIMARY KEY,
    address           TEXT NOT NULL,
    fingerprint       TEXT NOT NULL UNIQUE,
    issuer            TEXT NOT NULL,
    serial            TEXT NOT NULL,
    not_before        INTEGER NOT NULL,
    not_after         INTEGER NOT NULL,
    key_usage         TEXT NOT NULL,
    source_kind       TEXT NOT NULL CHECK (source_kind IN ('issued', 'imported', 'harvested')),
    source_message_id TEXT,
    revoked           BOOLEAN NOT NULL DEFAULT FALSE,
    superseded_by     TEXT,
    material          BLOB NOT NULL,
    private_key_enc   BLOB,
    created_at        INTEGER NOT NULL,
    CHECK (not_before <= not_after)
);
CREATE INDEX certificates_address ON certificates (address);

CREATE TABLE pgp_keys (
    id                INTEGER PRIMARY KEY,
    address           TEXT NOT NULL,
    fingerprint       TEXT NOT NULL UNIQUE,
    issuer            TEXT NOT NULL,
    serial            TEXT NOT NULL,
    not_before        INTEGER NOT NULL,
    not_after         INTEGER NOT NULL,
    key_usage         TEXT NOT NULL,
    source_kind       TEXT NOT NULL CHECK (source_kind IN ('issued', 'imported', 'harvested')),
    source_message_id TEXT,
    revoked           BOOLEAN NOT NULL DEFAULT FALSE,
    superseded_by     TEXT,
    material          BLOB NOT NULL,
    private_key_enc   BLOB,
    created_at        INTEGER NOT NULL,
    CHECK (not_before <= not_after)
);
CREATE INDEX pgp_keys_address ON pgp_keys (address);

CREATE TABLE domain_keys (
    id              INTEGER PRIMARY KEY,
    domain          TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('smime', 'pgp')),
    ownership       TEXT NOT NULL CHECK (ownership IN ('own', 'partner')),
    fingerprint     TEXT NOT NULL UNIQUE,
    material        BLOB NOT NULL,
    private_key_enc BLOB,
    created_at      INTEGER NOT NULL
);
CREATE INDEX domain_keys_domain ON domain_keys (domain);

CREATE TABLE gina_accounts (
    id                INTEGER PRIMARY KEY,
    address           TEXT NOT NULL UNIQUE,
    name              TEXT,
    password_hash     TEXT NOT NULL,
    previous_hashes   TEXT NOT NULL DEFAULT '[]',
    security_question TEXT,
    answer_hash       TEXT,
    failed_logins     INTEGER NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until      INTEGER,
    preferred_method  TEXT NOT NULL CHECK (preferred_method IN ('gina', 'smime', 'pgp')),
    language          TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    last_login        INTEGER
);

CREATE TABLE tracking (
    id              INTEGER PRIMARY KEY,
    message_id      TEXT,
    queue_id        TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    method          TEXT NOT NULL,
    key_fingerprint TEXT,
    reason          TEXT NOT NULL,
    at              INTEGER NOT NULL,
    node            TEXT NOT NULL
);
CREATE INDEX tracking_queue_id ON tracking (queue_id);
CREATE INDEX tracking_message_id ON tracking (message_id);

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE licences (
    id           INTEGER PRIMARY KEY,
    licence_id   TEXT NOT NULL UNIQUE,
    holder       TEXT NOT NULL,
    seats        INTEGER NOT NULL CHECK (seats >= 0),
    valid_from   INTEGER NOT NULL,
    valid_until  INTEGER NOT NULL,
    document     TEXT NOT NULL,
    installed_at INTEGER NOT NULL,
    CHECK (valid_from <= valid_until)
);
