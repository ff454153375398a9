-- Window runs carry the account and region they ran in. With several accounts and regions a
-- window's occurrence runs once per scope, so the occurrence key becomes (window, scheduled
-- start, account, region). Its twin is ../postgres/0005_scoped_window_runs.sql.
--
-- SQLite cannot change a UNIQUE constraint in place: the table is rebuilt with the same ids, so
-- window_tasks keeps pointing at the same rows. The store applies SQLite migrations on a
-- connection with foreign keys off (SQLite's documented table-rebuild procedure) and runs
-- `PRAGMA foreign_key_check` afterwards.
--
-- Runs recorded before this migration were all made in the single scope patchd then knew,
-- labelled 'default'. The region is recovered from the instances a run's tasks reached; patchd
-- relabels what is left (and the account) with the real account id and home region the first
-- time it starts after the upgrade.

CREATE TABLE window_runs_scoped (
    id               INTEGER PRIMARY KEY,
    window_name      TEXT NOT NULL,
    scheduled_start  TEXT NOT NULL,
    -- The 12-digit account id and the region the run's commands went to.
    account          TEXT NOT NULL,
    region           TEXT NOT NULL,
    started_at       TEXT,
    ended_at         TEXT,
    status           TEXT NOT NULL CHECK (status IN ('scheduled', 'running', 'succeeded', 'failed',
                         'cancelled', 'missed', 'late')),
    UNIQUE (window_name, scheduled_start, account, region)
) STRICT;

INSERT INTO window_runs_scoped
    (id, window_name, scheduled_start, account, region, started_at, ended_at, status)
SELECT r.id, r.window_name, r.scheduled_start, 'default',
       COALESCE((SELECT i.region FROM window_tasks t
                   JOIN invocations v ON v.task_id = t.id
                   JOIN instances i ON i.id = v.instance_ref
                  WHERE t.run_id = r.id LIMIT 1), 'default'),
       r.started_at, r.ended_at, r.status
  FROM window_runs r;

DROP TABLE window_runs;
ALTER TABLE window_runs_scoped RENAME TO window_runs;
CREATE INDEX window_runs_scheduled ON window_runs (scheduled_start);
