-- created_at becomes TIMESTAMPTZ, an instant, on eventbus_outbox and
-- (ALTER TABLE without ONLY recurses) every lane table; lane tables made
-- later by eventbus_ensure_lanes inherit the new type and default. Until
-- now it was a TIMESTAMP filled by CURRENT_TIMESTAMP: the local time of the
-- producing session's time zone, so that ages and "since" queries were off
-- by the zone difference between processes.
--
-- Existing values: the database cannot know which zone each producer's
-- session ran in. The cast reads them as local times of the TimeZone of
-- the session that runs this migration, which is the server's TimeZone
-- setting (postgresql.conf, or ALTER DATABASE/ROLE ... SET timezone) unless
-- the migrating client sets its own (PGTZ, timezone=... in the URL). That
-- is the zone CURRENT_TIMESTAMP used for every producer that did not set
-- one. If your producers ran in another zone, run this migration with that
-- zone set for its session.
--
-- The ALTER rewrites the lane tables and their indexes (when the session's
-- zone is UTC, PostgreSQL rebuilds only the created_at indexes) and holds
-- them locked until it commits: producers and relays wait meanwhile.
ALTER TABLE eventbus_outbox
    ALTER COLUMN created_at TYPE TIMESTAMPTZ,
    ALTER COLUMN created_at SET DEFAULT now();
