//! The PostgreSQL `Store`.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgPoolOptions;

use super::Dialect;
use crate::error::{Error, Result};

type Db = sqlx::Postgres;

const DIALECT: Dialect = Dialect {
    begin_write: "BEGIN",
    lock_project: "SELECT id FROM projects WHERE id = $1 FOR UPDATE",
};

static MIGRATIONS: std::sync::LazyLock<Migrator> = std::sync::LazyLock::new(|| {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("queue"),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0002_queue.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("job_keys"),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0003_job_keys.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            Cow::Borrowed("change_feed"),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0004_change_feed.sql").into_sql_str(),
            false,
        ),
    ])
});

include!("store_impl.rs");

impl SqlStore {
    /// Connects to a `postgres://` URL with a pool of `max_connections`.
    pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| Error::unavailable("cannot connect to PostgreSQL").with_source(e))?;
        Ok(SqlStore::from_pool(pool))
    }
}

/// The channel the change-feed triggers notify (migration `0004_change_feed.sql`).
pub const CHANGE_CHANNEL: &str = "hivesync_changes";

/// [`watch_changes`] with an owned URL, for spawning.
pub async fn watch_changes_owned(
    url: String,
    cache: std::sync::Arc<crate::job_cache::MemberJobCache>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    watch_changes(&url, cache, shutdown).await;
}

/// Listens to the change feed at `url` until `shutdown`, applying each change to `cache`. The
/// cache serves from memory only while the listening connection is up; on any loss it is emptied
/// and turned off until listening resumes.
pub async fn watch_changes(
    url: &str,
    cache: std::sync::Arc<crate::job_cache::MemberJobCache>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use crate::job_cache::Change;

    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect(url).await?;
            listener.listen(CHANGE_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            listener = listener => listener,
            () = shutdown.cancelled() => break,
        };
        match listener.as_mut() {
            Ok(listener) => {
                cache.set_live(true);
                backoff = Duration::from_millis(100);
                loop {
                    let next = tokio::select! {
                        next = listener.try_recv() => next,
                        () = shutdown.cancelled() => break,
                    };
                    match next {
                        Ok(Some(notification)) => {
                            let change = notification
                                .payload()
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
                                "the change feed was interrupted; status reads bypass the cache until it is back"
                            );
                            break;
                        }
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
