-- Leadership and group locks shared by every patchd process on this database (high
-- availability). Its twin is ../postgres/0007_leadership.sql.
--
-- Times are written with the database's clock, never a host's: strftime('%Y-%m-%dT%H:%M:%fZ',
-- 'now'), RFC 3339 text in UTC to the millisecond, which sorts in time order. (SQLite serves one
-- host, so the clock is that host's; the rule is kept so that both dialects share one design.)
CREATE TABLE leases (
    -- `scheduler`: the one daemon that fires windows, resumes runs and syncs.
    name         TEXT PRIMARY KEY,
    -- A fresh id per process (a uuid): what renewals, resignations and fences compare.
    holder       TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    -- Grows by one at every change of holder (a takeover, or a holder that let its lease
    -- lapse and bid again). Every write of a run is conditional on it: the fencing token.
    epoch        INTEGER NOT NULL CHECK (epoch >= 1),
    acquired_at  TEXT NOT NULL,
    renewed_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
) STRICT;

-- A group being patched in an account and region, by one run of one process. Only the
-- PostgreSQL store uses this table: with SQLite, group locks are files under state_dir.
-- (The twins keep the same tables.) A row whose
-- expires_at has passed is free: its holder died or lost touch and stopped renewing it.
CREATE TABLE group_locks (
    account      TEXT NOT NULL,
    region       TEXT NOT NULL,
    group_name   TEXT NOT NULL,
    holder       TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    -- What holds it, for the error another run shows: `window <name>` or `manual:...`.
    purpose      TEXT NOT NULL,
    acquired_at  TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    PRIMARY KEY (account, region, group_name)
) STRICT;
