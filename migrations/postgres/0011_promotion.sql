-- Promotion: a task that installs only what another window's last successful run installed.
-- Its twin is ../sqlite/0011_promotion.sql.

-- What an install task installed, read back from SSM when the task ended (only for windows
-- another task promotes from). A task without a row here cannot be promoted from: patchd
-- never guesses a set it did not read in full.
CREATE TABLE task_installs (
    task_id      BIGINT PRIMARY KEY REFERENCES window_tasks (id),
    -- The instances whose installs were read: those the task's command succeeded on.
    instances    BIGINT NOT NULL CHECK (instances >= 0),
    -- [{"id", "title", "classification", "severity", "instances"}], ordered by id.
    patches      JSONB NOT NULL,
    captured_at  TIMESTAMPTZ NOT NULL
);

-- The set a promoting task installs, chosen once, when the task first starts: a resumed task
-- installs the set it chose, even if the source window has run again since.
CREATE TABLE promotions (
    task_id        BIGINT PRIMARY KEY REFERENCES window_tasks (id),
    from_window    TEXT NOT NULL,
    source_run_id  BIGINT NOT NULL REFERENCES window_runs (id),
    -- Where the install list was put; AWS-RunPatchBaseline's InstallOverrideList.
    list_url       TEXT NOT NULL,
    patches        JSONB NOT NULL,
    decided_at     TIMESTAMPTZ NOT NULL
);
