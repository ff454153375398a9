-- patchd's patch history, SQLite dialect. Its twin is ../postgres/0001_history.sql: the two
-- files define the same tables, columns, constraints and indexes, each in its own types.
--
-- Conventions:
-- * Timestamps are TEXT in RFC 3339 UTC as sqlx writes them
--   (`2026-11-28T10:00:00.123456+00:00`). patchd-store is the only writer and always writes
--   UTC truncated to microseconds, so text order is time order and range filters use indexes.
-- * Booleans are INTEGER 0/1; JSON is TEXT checked with json_valid.
-- * Tables are STRICT so that a value of the wrong type is an error, not a silent coercion.
-- * `*_ref` columns are surrogate keys of instances and patches: findings and transitions
--   reference two integers instead of repeating (account, region, instance id, patch id),
--   which keeps a million-finding table small and its joins cheap.

CREATE TABLE instances (
    id           INTEGER PRIMARY KEY,
    account      TEXT NOT NULL,
    region       TEXT NOT NULL,
    instance_id  TEXT NOT NULL,
    name         TEXT,
    platform     TEXT,
    tags         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(tags)),
    ssm_managed  INTEGER NOT NULL CHECK (ssm_managed IN (0, 1)),
    ping_status  TEXT CHECK (ping_status IN ('Online', 'ConnectionLost', 'Inactive')),
    first_seen   TEXT NOT NULL,
    last_seen    TEXT NOT NULL,
    UNIQUE (account, region, instance_id)
) STRICT;

-- A patch as SSM names it (KBId), fleet-wide. Rows exist for patches that were ever part of a
-- finding, and for patches an advisory import dated before any instance missed them.
CREATE TABLE patches (
    id                    INTEGER PRIMARY KEY,
    patch_id              TEXT NOT NULL UNIQUE,
    title                 TEXT,
    classification        TEXT,
    severity              TEXT,
    cve_ids               TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(cve_ids)),
    -- Release dates by source; the SLA clock prefers the advisory's. Both are kept as evidence.
    ssm_released_at       TEXT,
    advisory_released_at  TEXT,
    -- The earliest time any instance was seen missing the patch: the SLA clock when no release
    -- date is known. Only ever moves earlier, and survives the findings that set it.
    first_seen_missing    TEXT
) STRICT;

-- One compliance sync: written in the same transaction as everything it changed, so a row here
-- means the whole sync is committed.
CREATE TABLE syncs (
    id               INTEGER PRIMARY KEY,
    source           TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    instances        INTEGER NOT NULL DEFAULT 0,
    stale_instances  INTEGER NOT NULL DEFAULT 0,
    opened           INTEGER NOT NULL DEFAULT 0,
    transitions      INTEGER NOT NULL DEFAULT 0,
    remediated       INTEGER NOT NULL DEFAULT 0,
    reopened         INTEGER NOT NULL DEFAULT 0
) STRICT;

-- A patch seen missing on an instance at some point. Open while installed_at is NULL.
-- NOT_APPLICABLE is never a finding state.
CREATE TABLE findings (
    instance_ref        INTEGER NOT NULL REFERENCES instances (id),
    patch_ref           INTEGER NOT NULL REFERENCES patches (id),
    state               TEXT NOT NULL CHECK (state IN ('MISSING', 'FAILED', 'INSTALLED_PENDING_REBOOT',
                            'AVAILABLE_SECURITY_UPDATE', 'INSTALLED_REJECTED', 'INSTALLED', 'INSTALLED_OTHER')),
    first_seen_missing  TEXT NOT NULL,
    last_seen           TEXT NOT NULL,
    installed_at        TEXT,
    PRIMARY KEY (instance_ref, patch_ref),
    CHECK ((installed_at IS NULL) = (state NOT IN ('INSTALLED', 'INSTALLED_OTHER')))
) STRICT, WITHOUT ROWID;

-- Open findings are what dashboards read; remediated ones accumulate forever. A covering
-- partial index keeps reading the open ones proportional to their number, not to history.
-- installed_at (always NULL here) is included because SQLite only treats an index as covering
-- when it holds every column the query names, its WHERE clause included.
CREATE INDEX findings_open ON findings (instance_ref, patch_ref, state, first_seen_missing, last_seen, installed_at)
    WHERE installed_at IS NULL;
-- Remediation over a period (the assessor's "history" question). In a WITHOUT ROWID table the
-- primary key is appended, so this orders by (installed_at, instance_ref, patch_ref).
CREATE INDEX findings_remediated ON findings (installed_at) WHERE installed_at IS NOT NULL;
-- Every instance with a given patch.
CREATE INDEX findings_patch ON findings (patch_ref);

-- Every state change of a finding, the first sighting included (from_state NULL).
CREATE TABLE finding_transitions (
    id            INTEGER PRIMARY KEY,
    instance_ref  INTEGER NOT NULL,
    patch_ref     INTEGER NOT NULL,
    from_state    TEXT CHECK (from_state IN ('MISSING', 'FAILED', 'INSTALLED_PENDING_REBOOT',
                      'AVAILABLE_SECURITY_UPDATE', 'INSTALLED_REJECTED', 'INSTALLED', 'INSTALLED_OTHER')),
    to_state      TEXT NOT NULL CHECK (to_state IN ('MISSING', 'FAILED', 'INSTALLED_PENDING_REBOOT',
                      'AVAILABLE_SECURITY_UPDATE', 'INSTALLED_REJECTED', 'INSTALLED', 'INSTALLED_OTHER')),
    at            TEXT NOT NULL,
    sync_id       INTEGER NOT NULL REFERENCES syncs (id),
    command_id    TEXT,
    FOREIGN KEY (instance_ref, patch_ref) REFERENCES findings (instance_ref, patch_ref)
) STRICT;

CREATE INDEX finding_transitions_finding ON finding_transitions (instance_ref, patch_ref, at);

-- The latest scan of each instance, counts by state: compliance counts include patches that
-- were installed at first sight and never became findings.
CREATE TABLE compliance_summaries (
    instance_ref               INTEGER PRIMARY KEY REFERENCES instances (id),
    sync_id                    INTEGER NOT NULL REFERENCES syncs (id),
    scanned_at                 TEXT NOT NULL,
    command_id                 TEXT,
    operation                  TEXT CHECK (operation IN ('Scan', 'Install')),
    operation_start            TEXT,
    operation_end              TEXT,
    baseline_id                TEXT,
    snapshot_id                TEXT,
    patch_group                TEXT,
    installed                  INTEGER NOT NULL,
    installed_other            INTEGER NOT NULL,
    installed_pending_reboot   INTEGER NOT NULL,
    installed_rejected         INTEGER NOT NULL,
    missing                    INTEGER NOT NULL,
    failed                     INTEGER NOT NULL,
    not_applicable             INTEGER NOT NULL,
    available_security_update  INTEGER NOT NULL
) STRICT;

CREATE TABLE window_runs (
    id               INTEGER PRIMARY KEY,
    window_name      TEXT NOT NULL,
    scheduled_start  TEXT NOT NULL,
    started_at       TEXT,
    ended_at         TEXT,
    status           TEXT NOT NULL CHECK (status IN ('scheduled', 'running', 'succeeded', 'failed',
                         'cancelled', 'missed', 'late')),
    UNIQUE (window_name, scheduled_start)
) STRICT;

CREATE INDEX window_runs_scheduled ON window_runs (scheduled_start);

CREATE TABLE window_tasks (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES window_runs (id),
    task_name   TEXT NOT NULL,
    operation   TEXT NOT NULL CHECK (operation IN ('Scan', 'Install')),
    command_id  TEXT,
    status      TEXT NOT NULL CHECK (status IN ('Pending', 'InProgress', 'Delayed', 'Success',
                    'Cancelled', 'TimedOut', 'Failed', 'Cancelling')),
    started_at  TEXT,
    ended_at    TEXT,
    UNIQUE (run_id, task_name)
) STRICT;

CREATE TABLE invocations (
    id              INTEGER PRIMARY KEY,
    task_id         INTEGER NOT NULL REFERENCES window_tasks (id),
    instance_ref    INTEGER NOT NULL REFERENCES instances (id),
    command_id      TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('Pending', 'InProgress', 'Delayed', 'Success',
                        'Cancelled', 'TimedOut', 'Failed', 'Cancelling')),
    status_details  TEXT,
    requested_at    TEXT,
    started_at      TEXT,
    ended_at        TEXT,
    UNIQUE (task_id, instance_ref)
) STRICT;

CREATE INDEX invocations_command ON invocations (command_id);

-- Snapshots of the configured exceptions, kept as evidence of what was accepted when. A new
-- snapshot is taken only when the configured set changes.
CREATE TABLE exception_snapshots (
    id        INTEGER PRIMARY KEY,
    taken_at  TEXT NOT NULL
) STRICT;

CREATE INDEX exception_snapshots_taken ON exception_snapshots (taken_at);

CREATE TABLE exceptions (
    snapshot_id  INTEGER NOT NULL REFERENCES exception_snapshots (id),
    name         TEXT NOT NULL,
    patches      TEXT NOT NULL CHECK (json_valid(patches)),
    -- Exactly one scope: a JSON array of instance ids, or a group name.
    instances    TEXT CHECK (instances IS NULL OR json_valid(instances)),
    group_name   TEXT,
    reason       TEXT NOT NULL,
    owner        TEXT NOT NULL,
    expires      TEXT NOT NULL,
    origin       TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, name),
    CHECK ((instances IS NULL) <> (group_name IS NULL))
) STRICT;

-- Every action patchd takes. Append-only: the store has no update or delete for it, and the
-- triggers refuse them from anyone else.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    command_id  TEXT,
    request_id  TEXT,
    details     TEXT CHECK (details IS NULL OR json_valid(details))
) STRICT;

CREATE INDEX audit_log_at ON audit_log (at);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
