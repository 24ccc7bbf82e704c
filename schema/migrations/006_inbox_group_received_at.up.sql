-- Each consumer cleans its own group's inbox rows, with its own retention
-- (DELETE ... WHERE consumer_group = $1 AND received_at < $2). An index on
-- received_at alone would make a short-retention group's cleaner walk
-- every other group's older rows on each pass; this one reaches just its
-- own. The old index served only the cleaner, which now filters by group.
--
-- Built in the migration's transaction: writes to the inbox (OnTx
-- handlers) wait while it builds, briefly on an inbox of ordinary size.
CREATE INDEX IF NOT EXISTS eventbus_inbox_group_received_at ON eventbus_inbox (consumer_group, received_at);
DROP INDEX IF EXISTS eventbus_inbox_received_at;
