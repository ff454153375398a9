-- Open findings by patch: `patchd report sla` counts open findings per patch (its totals) and
-- lists the findings of the most urgent patches first. Both read this index alone, in order,
-- without touching the table: counting a million open findings is an index scan, not a
-- million row lookups.
CREATE INDEX findings_open_by_patch ON findings (patch_ref, instance_ref) WHERE installed_at IS NULL;
