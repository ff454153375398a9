-- Vendor advisory feeds: which feed dated each patch, and how each feed's fetches went. Its twin
-- is ../postgres/0009_advisory_feeds.sql.

-- The configured source (`amazon-linux-2023`, `import:dates.csv`) whose advisory gave
-- advisory_released_at: reports name where every clock comes from.
ALTER TABLE patches ADD COLUMN advisory_source TEXT;

-- One row per feed (advisory sources and the KEV catalog), shared by every host and the CLI.
CREATE TABLE feed_status (
    name             TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    location         TEXT NOT NULL,
    last_attempt_at  TEXT,
    -- The latest fetch that left good data in place (imported, or not modified since).
    last_success_at  TEXT,
    -- The latest fetch whose data was new and imported.
    last_changed_at  TEXT,
    advisories       INTEGER NOT NULL DEFAULT 0 CHECK (advisories >= 0),
    -- Failed fetches since the last success; the data of that success stays in use.
    failures         INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_error       TEXT
) STRICT;
