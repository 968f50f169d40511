-- The change feed that keeps build-status caches correct (src/job_cache.rs): every job update or
-- delete, and every membership change or removal, is announced on channel `hivesync_changes` once
-- its transaction commits. PostgreSQL only; SQLite deployments read the Store on every poll.

CREATE FUNCTION hivesync_announce_job() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('hivesync_changes', 'job:' || OLD.id::text);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_announce AFTER UPDATE OR DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION hivesync_announce_job();

CREATE FUNCTION hivesync_announce_members() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('hivesync_changes', 'members');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER project_members_announce AFTER UPDATE OR DELETE ON project_members
    FOR EACH STATEMENT EXECUTE FUNCTION hivesync_announce_members();
