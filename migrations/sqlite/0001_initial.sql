-- timproxy schema, SQLite flavour. Timestamps are Unix epoch milliseconds (BIGINT) so the
-- same Rust code reads both backends without timezone or text-format differences.

-- Accepted federation lists, newest first. `verified` records whether a signature (VZD JWS)
-- was checked; lists from the registration service are accepted unsigned. Rejected lists
-- are never stored, so a restart serves the last good list.
CREATE TABLE federation_snapshots (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    version     BIGINT  NOT NULL,
    fetched_at  BIGINT  NOT NULL,
    source      TEXT    NOT NULL,
    raw_payload BLOB    NOT NULL,
    verified    BOOLEAN NOT NULL
);
CREATE INDEX federation_snapshots_latest ON federation_snapshots (version DESC, fetched_at DESC);

-- Raw-data (performance) reports waiting for delivery. The idempotency key travels with
-- every delivery attempt so the collector can drop duplicates after a lost response.
CREATE TABLE rawdata_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT    NOT NULL UNIQUE,
    created_at      BIGINT  NOT NULL,
    payload         TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    delivered_at    BIGINT,
    last_error      TEXT
);
CREATE INDEX rawdata_outbox_due ON rawdata_outbox (next_attempt_at) WHERE delivered_at IS NULL;
CREATE INDEX rawdata_outbox_created ON rawdata_outbox (created_at);

-- Orphaned-room cleanup (A_28564-01): the last decision per room and when it was purged.
CREATE TABLE orphaned_rooms (
    room_id      TEXT   PRIMARY KEY,
    first_seen   BIGINT NOT NULL,
    last_checked BIGINT NOT NULL,
    decision     TEXT   NOT NULL,
    reason       TEXT   NOT NULL,
    deleted_at   BIGINT
);
