-- Event announcements: what patchd has already published, so that an event about a lasting
-- condition (an SLA breach, a coverage gap) goes out once per subject and level, not on every
-- sync. Its twin is ../sqlite/0004_event_announcements.sql.
--
-- A subject is announced at a level; announcing it again at the same or a lower level does
-- nothing. For SLA events the level is 1 for due-soon and 2 for breached, so a finding is
-- announced once when it becomes due soon and once when it breaches, in that order or not.
CREATE TABLE event_announcements (
    -- What kind of event: `sla`, `coverage-gap`.
    kind          TEXT NOT NULL,
    -- What it is about, e.g. `<account>/<region>/<instance>/<patch>`.
    subject       TEXT NOT NULL,
    level         BIGINT NOT NULL CHECK (level >= 1),
    -- The state announced at that level (`due-soon`, `breached`, `not-managed`...).
    state         TEXT NOT NULL,
    announced_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, subject)
);
