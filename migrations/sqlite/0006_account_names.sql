-- Account names: the 12-digit id behind each account name of the configuration, as patchd
-- last learned it. A member account's id is in its role ARN, but the home account's is only
-- known by asking STS, which reports (offline, from this database) cannot do: `patchd report
-- --account home` reads it here. Its twin is ../postgres/0006_account_names.sql.
CREATE TABLE account_names (
    -- `[aws] name` or an `[[aws.account]]` name.
    name         TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL CHECK (length(account_id) = 12),
    -- When patchd last connected to the account under this name.
    learned_at   TEXT NOT NULL
) STRICT;
