-- Rollouts: how a task's AWS-RunPatchBaseline commands are cut into batches, and how far each
-- batch got. Its twin is ../postgres/0002_rollouts.sql.
--
-- SendCommand has no idempotency token. A rollout therefore plans every batch (its instances
-- and the exact Comment it is sent with) before sending anything, records the intent to send a
-- batch before SendCommand and the command id after it. A restarted patchd finds a batch left
-- in 'sending' by its Comment (ListCommands) instead of sending it a second time.

-- One per task that rolls out a command: the parameters every batch of it shares.
CREATE TABLE rollouts (
    task_id          INTEGER PRIMARY KEY REFERENCES window_tasks (id),
    -- The run id written into every batch's Comment.
    run_key          TEXT NOT NULL,
    -- AWS-RunPatchBaseline's SnapshotId: one approved patch set for every batch.
    snapshot_id      TEXT NOT NULL,
    -- The task's limits resolved against its targets, kept so a resumed rollout keeps them.
    max_concurrency  INTEGER NOT NULL CHECK (max_concurrency >= 1),
    max_errors       INTEGER NOT NULL CHECK (max_errors >= 0),
    planned_at       TEXT NOT NULL
) STRICT;

-- One per SendCommand a rollout makes (or would make), numbered from 1 in sending order.
CREATE TABLE rollout_batches (
    task_id       INTEGER NOT NULL REFERENCES rollouts (task_id),
    batch_no      INTEGER NOT NULL CHECK (batch_no >= 1),
    -- SendCommand's Comment, unique so that a lookup by comment names one batch.
    comment       TEXT NOT NULL UNIQUE,
    instance_ids  TEXT NOT NULL CHECK (json_valid(instance_ids)),
    -- planned: not sent; sending: the intent is recorded, SendCommand may or may not have
    -- happened; sent: SSM answered with command_id; rejected: SSM refused the batch.
    state         TEXT NOT NULL CHECK (state IN ('planned', 'sending', 'sent', 'rejected')),
    command_id    TEXT UNIQUE,
    -- The first attempt to send: a lookup by comment need not look further back.
    sending_at    TEXT,
    sent_at       TEXT,
    -- Why SSM rejected the batch.
    error         TEXT,
    PRIMARY KEY (task_id, batch_no),
    CHECK ((state = 'sent') = (command_id IS NOT NULL)),
    CHECK (state = 'planned' OR sending_at IS NOT NULL)
) STRICT;
