//! The PostgreSQL `Store`.

use std::time::Duration;

use sqlx::Postgres;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions, PgQueryResult};

use super::{Backend, db_error, links_json, repo_object};
use crate::domain::RepoObject;
use crate::error::{Error, Result};

/// The `Store` on PostgreSQL.
pub type SqlStore = super::SqlStore<Postgres>;

impl Backend for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const LOCK_PROJECT: &'static str = "SELECT id FROM projects WHERE id = $1 FOR UPDATE";
    // The whole directory rather than a list, so that no migration can be left out of it.
    const MIGRATOR: &'static Migrator = &sqlx::migrate!("./migrations/postgres");
    const REPO_BRANCH: &'static str = "WITH RECURSIVE reach (id, is_target) AS ( \
             SELECT target, 1 FROM repo_refs WHERE project_id = $1 AND name = $2 \
           UNION \
             SELECT link.id, 0 FROM reach \
             JOIN repo_objects o ON o.project_id = $1 AND o.id = reach.id \
             CROSS JOIN LATERAL jsonb_array_elements_text(COALESCE(o.links, '[]')::jsonb) \
               AS link (id) \
         ) \
         SELECT reach.id, reach.is_target, o.data, o.links FROM reach \
         LEFT JOIN repo_objects o ON o.project_id = $1 AND o.id = reach.id";

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    // Arrays rather than a list of parameters: one statement text whatever the count, so each
    // connection prepares it once (a list prepares one statement per count, and a new server's
    // connections pay a round trip for each).
    async fn get_repo_objects(
        pool: &PgPool,
        project: uuid::Uuid,
        ids: &[String],
    ) -> Result<Vec<RepoObject>> {
        let rows: Vec<(String, Vec<u8>, Option<String>)> = sqlx::query_as(
            "SELECT id, data, links FROM repo_objects WHERE project_id = $1 AND id = ANY($2)",
        )
        .bind(project)
        .bind(ids)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|(id, data, links)| repo_object(id, data, links))
            .collect()
    }

    async fn put_repo_objects(
        pool: &PgPool,
        project: uuid::Uuid,
        objects: &[RepoObject],
    ) -> Result<()> {
        let ids: Vec<&str> = objects.iter().map(|o| o.id.as_str()).collect();
        let data: Vec<&[u8]> = objects.iter().map(|o| o.data.as_slice()).collect();
        let links: Vec<String> = objects.iter().map(links_json).collect();
        sqlx::query(
            "INSERT INTO repo_objects (project_id, id, data, links) \
             SELECT $1, id, data, links \
             FROM UNNEST($2::text[], $3::bytea[], $4::text[]) AS o (id, data, links) \
             ON CONFLICT (project_id, id) DO NOTHING",
        )
        .bind(project)
        .bind(ids)
        .bind(data)
        .bind(links)
        .execute(pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

impl SqlStore {
    /// Connects to a `postgres://` URL with a pool of `max_connections`.
    pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| Box::pin(super::fit_to_lend(conn, meta)))
            .after_release(|conn, _| Box::pin(super::fit_for_reuse(conn)))
            .connect(url)
            .await
            .map_err(|e| Error::unavailable("cannot connect to PostgreSQL").with_source(e))?;
        Ok(SqlStore::from_pool(pool))
    }
}

/// The channel the change-feed triggers notify (migration `0004_change_feed.sql`).
pub const CHANGE_CHANNEL: &str = "hivesync_changes";

/// How often the change feed proves it still delivers: a ping sent through another connection
/// must come back through the listening one before the next.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Listens to the change feed at `url` until `shutdown`, applying each change to `cache`. The
/// cache serves from memory only while the feed is proven to deliver: the listening connection is
/// up and a ping sent every [`HEARTBEAT`] through a second connection came back. A half-open
/// connection, a failover that left the listener on an old primary, or a pooler that swallows
/// `LISTEN` therefore turn the cache off within one heartbeat.
pub async fn watch_changes(
    url: String,
    cache: std::sync::Arc<crate::job_cache::MemberJobCache>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use sqlx::Connection;

    use crate::job_cache::Change;

    // Tells this listener's pings from other servers' on the shared channel.
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let connect = async {
            let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
            listener.listen(CHANGE_CHANNEL).await?;
            let pinger = sqlx::postgres::PgConnection::connect(&url).await?;
            Ok::<_, sqlx::Error>((listener, pinger))
        };
        let connected = tokio::select! {
            connected = connect => connected,
            () = shutdown.cancelled() => break,
        };
        match connected {
            Ok((mut listener, mut pinger)) => {
                let (mut sent, mut seen) = (0_u64, 0_u64);
                let mut tick = tokio::time::interval(HEARTBEAT);
                loop {
                    tokio::select! {
                        next = listener.try_recv() => match next {
                            Ok(Some(notification)) => {
                                let payload = notification.payload();
                                if let Some(ping) = payload.strip_prefix("ping:") {
                                    if let Some(n) = ping
                                        .strip_prefix(instance.as_str())
                                        .and_then(|rest| rest.strip_prefix(':'))
                                        .and_then(|n| n.parse::<u64>().ok())
                                    {
                                        seen = seen.max(n);
                                        if seen == 1 {
                                            // The first ping proves the feed: serve from now on.
                                            cache.set_live(true);
                                            backoff = Duration::from_millis(100);
                                        }
                                    }
                                    continue;
                                }
                                let change = payload
                                    .strip_prefix("job:")
                                    .and_then(|id| uuid::Uuid::parse_str(id).ok())
                                    .map_or(Change::Members, |id| {
                                        Change::Job(crate::domain::JobId::from_uuid(id))
                                    });
                                cache.apply(change);
                            }
                            // The connection was lost: what was said meanwhile is unknown.
                            Ok(None) | Err(_) => {
                                tracing::warn!(
                                    "the change feed was interrupted; \
                                     status reads bypass the cache until it is back"
                                );
                                break;
                            }
                        },
                        _ = tick.tick() => {
                            if sent > seen {
                                tracing::warn!(
                                    "the change feed stopped delivering; \
                                     status reads bypass the cache until it is back"
                                );
                                break;
                            }
                            sent += 1;
                            let ping = sqlx::query("SELECT pg_notify($1, $2)")
                                .bind(CHANGE_CHANNEL)
                                .bind(format!("ping:{instance}:{sent}"))
                                .execute(&mut pinger)
                                .await;
                            if let Err(err) = ping {
                                tracing::warn!(error = %err, "the change feed cannot be checked");
                                break;
                            }
                        }
                        () = shutdown.cancelled() => break,
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen to the change feed");
            }
        }
        cache.set_live(false);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    cache.set_live(false);
}
