-- Leadership and group locks shared by every patchd process on this database (high
-- availability). Its twin is ../sqlite/0007_leadership.sql.
--
-- Times are written with the database's clock (clock_timestamp()), never a host's: two hosts
-- whose clocks disagree still agree on whether a lease has expired.
CREATE TABLE leases (
    -- `scheduler`: the one daemon that fires windows, resumes runs and syncs.
    name         TEXT PRIMARY KEY,
    -- A fresh id per process (a uuid): what renewals, resignations and fences compare.
    holder       TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    -- Grows by one at every change of holder (a takeover, or a holder that let its lease
    -- lapse and bid again). Every write of a run is conditional on it: the fencing token.
    epoch        BIGINT NOT NULL CHECK (epoch >= 1),
    acquired_at  TIMESTAMPTZ NOT NULL,
    renewed_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);

-- A group being patched in an account and region, by one run of one process. A row whose
-- expires_at has passed is free: its holder died or lost touch and stopped renewing it.
CREATE TABLE group_locks (
    account      TEXT NOT NULL,
    region       TEXT NOT NULL,
    group_name   TEXT NOT NULL,
    holder       TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    -- What holds it, for the error another run shows: `window <name>` or `manual:...`.
    purpose      TEXT NOT NULL,
    acquired_at  TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (account, region, group_name)
);
