-- Open findings by patch: `patchd report sla` counts open findings per patch (its totals) and
-- lists the findings of the most urgent patches first. Both read this index alone, in order,
-- without touching the table: counting a million open findings is an index scan, not a
-- million row lookups. SQLite treats a partial index as covering only when it also holds the
-- columns of its own WHERE clause, hence `installed_at` (always NULL here); without it the
-- count took 3.3 s instead of 0.09 s over 1,000,000 findings.
CREATE INDEX findings_open_by_patch ON findings (patch_ref, instance_ref, installed_at)
    WHERE installed_at IS NULL;
