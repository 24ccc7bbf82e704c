-- Registers the relay groups that relayed before groups were registered:
-- every group with an offsets row ("<group>/<lane>"). The cleaner deletes
-- an outbox row only once every registered group has acknowledged it, so
-- without this a group that is not running while the database is upgraded
-- would lose its backlog to another group's cleaner. A group registered
-- here that is not needed any more is retired with `eventbus groups drop`.
INSERT INTO eventbus_relay_groups (consumer_group)
SELECT DISTINCT substring(consumer_group FROM '^(.*)/[0-9]+$')
FROM eventbus_offsets
WHERE consumer_group ~ '^.+/[0-9]+$'
ON CONFLICT (consumer_group) DO NOTHING;
