-- Window runs carry the account and region they ran in. With several accounts and regions a
-- window's occurrence runs once per scope, so the occurrence key becomes (window, scheduled
-- start, account, region). Its twin is ../sqlite/0005_scoped_window_runs.sql.
--
-- Runs recorded before this migration were all made in the single scope patchd then knew,
-- labelled 'default'. The region is recovered from the instances a run's tasks reached; patchd
-- relabels what is left (and the account) with the real account id and home region the first
-- time it starts after the upgrade.

ALTER TABLE window_runs
    ADD COLUMN account TEXT NOT NULL DEFAULT 'default',
    ADD COLUMN region  TEXT NOT NULL DEFAULT 'default';

UPDATE window_runs r
   SET region = COALESCE((SELECT i.region FROM window_tasks t
                            JOIN invocations v ON v.task_id = t.id
                            JOIN instances i ON i.id = v.instance_ref
                           WHERE t.run_id = r.id LIMIT 1), 'default');

ALTER TABLE window_runs
    ALTER COLUMN account DROP DEFAULT,
    ALTER COLUMN region DROP DEFAULT,
    DROP CONSTRAINT window_runs_window_name_scheduled_start_key,
    ADD CONSTRAINT window_runs_occurrence_key UNIQUE (window_name, scheduled_start, account, region);
