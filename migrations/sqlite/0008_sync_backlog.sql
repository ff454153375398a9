-- A compliance sync that could not read some instances (throttling, errors that outlasted its
-- retries) remembers them here until a later sync reads them; and a window run whose commands
-- all finished but whose results were not all read says so. Its twin is
-- ../postgres/0008_sync_backlog.sql.

-- One row per instance whose latest Scan or Install is still unread.
CREATE TABLE sync_backlog (
    account          TEXT NOT NULL,
    region           TEXT NOT NULL,
    instance_id      TEXT NOT NULL,
    first_failed_at  TEXT NOT NULL,
    last_failed_at   TEXT NOT NULL,
    attempts         INTEGER NOT NULL CHECK (attempts >= 1),
    last_error       TEXT NOT NULL,
    PRIMARY KEY (account, region, instance_id)
) STRICT;

-- window_runs gains the status `incomplete` and the number of instances its sync could not
-- read. SQLite cannot change a CHECK constraint in place: the table is rebuilt with the same
-- ids, as in 0005 (foreign keys off while migrating, checked afterwards).
CREATE TABLE window_runs_with_sync (
    id               INTEGER PRIMARY KEY,
    window_name      TEXT NOT NULL,
    scheduled_start  TEXT NOT NULL,
    account          TEXT NOT NULL,
    region           TEXT NOT NULL,
    started_at       TEXT,
    ended_at         TEXT,
    status           TEXT NOT NULL CHECK (status IN ('scheduled', 'running', 'succeeded', 'failed',
                         'cancelled', 'missed', 'late', 'incomplete')),
    -- Instances whose results the run's compliance sync could not read (0 when it read all).
    sync_unread      INTEGER NOT NULL DEFAULT 0 CHECK (sync_unread >= 0),
    UNIQUE (window_name, scheduled_start, account, region)
) STRICT;

INSERT INTO window_runs_with_sync
    (id, window_name, scheduled_start, account, region, started_at, ended_at, status)
SELECT id, window_name, scheduled_start, account, region, started_at, ended_at, status
  FROM window_runs;

DROP TABLE window_runs;
ALTER TABLE window_runs_with_sync RENAME TO window_runs;
CREATE INDEX window_runs_scheduled ON window_runs (scheduled_start);
