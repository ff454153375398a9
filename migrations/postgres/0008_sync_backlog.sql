-- A compliance sync that could not read some instances (throttling, errors that outlasted its
-- retries) remembers them here until a later sync reads them; and a window run whose commands
-- all finished but whose results were not all read says so. Its twin is
-- ../sqlite/0008_sync_backlog.sql.

-- One row per instance whose latest Scan or Install is still unread.
CREATE TABLE sync_backlog (
    account          TEXT NOT NULL,
    region           TEXT NOT NULL,
    instance_id      TEXT NOT NULL,
    first_failed_at  TIMESTAMPTZ NOT NULL,
    last_failed_at   TIMESTAMPTZ NOT NULL,
    attempts         BIGINT NOT NULL CHECK (attempts >= 1),
    last_error       TEXT NOT NULL,
    PRIMARY KEY (account, region, instance_id)
);

ALTER TABLE window_runs DROP CONSTRAINT window_runs_status_check;
ALTER TABLE window_runs
    ADD CONSTRAINT window_runs_status_check CHECK (status IN ('scheduled', 'running', 'succeeded',
        'failed', 'cancelled', 'missed', 'late', 'incomplete')),
    -- Instances whose results the run's compliance sync could not read (0 when it read all).
    ADD COLUMN sync_unread BIGINT NOT NULL DEFAULT 0 CHECK (sync_unread >= 0);
