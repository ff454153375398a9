-- Canary waves: each batch belongs to a wave, and a wave's gate is judged once, before the next
-- wave may be released. Its twin is ../postgres/0010_rollout_waves.sql.

-- Plans stored before waves existed are one wave.
ALTER TABLE rollout_batches ADD COLUMN wave INTEGER NOT NULL DEFAULT 1 CHECK (wave >= 1);

-- One row per wave whose gate was judged. A failed gate is final: a restarted rollout reads it
-- instead of judging again, so a gate that would pass later cannot undo a halt.
CREATE TABLE rollout_gates (
    task_id     INTEGER NOT NULL REFERENCES rollouts (task_id),
    wave        INTEGER NOT NULL CHECK (wave >= 1),
    outcome     TEXT NOT NULL CHECK (outcome IN ('passed', 'failed')),
    -- Why it failed, in words; empty when it passed.
    reason      TEXT NOT NULL,
    -- Each check's outcome (budget, reboot truth, url, alarm, command and its output).
    checks      TEXT NOT NULL CHECK (json_valid(checks)),
    decided_at  TEXT NOT NULL,
    PRIMARY KEY (task_id, wave)
) STRICT;
