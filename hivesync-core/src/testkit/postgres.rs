//! A throwaway PostgreSQL database per test run.

use sqlx::{Connection, PgConnection};

use crate::error::{Error, Result};

/// A database created for one test run, named `hivesync_test_<unix time>_<random>`.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

/// Leftover databases older than this (from runs that panicked before dropping theirs) are removed
/// when a new one is created.
const STALE_AFTER_SECONDS: i64 = 6 * 3600;

impl TestDatabase {
    /// Creates a fresh database on the server that `admin_url` points at.
    pub async fn create(admin_url: &str) -> Result<Self> {
        let now = chrono::Utc::now().timestamp();
        let name = format!("hivesync_test_{now}_{}", super::unique_suffix());
        let mut admin = PgConnection::connect(admin_url)
            .await
            .map_err(|e| Error::unavailable("cannot connect to PostgreSQL").with_source(e))?;
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname LIKE 'hivesync\\_test\\_%'",
        )
        .fetch_all(&mut admin)
        .await
        .map_err(crate::adapters::sql::db_error)?;
        for old in stale {
            let created = old
                .split('_')
                .nth(2)
                .and_then(|t| t.parse::<i64>().ok())
                .unwrap_or(now);
            if now - created > STALE_AFTER_SECONDS {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{old}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await;
            }
        }
        // The name is generated above from digits and hex only, so it is safe to splice.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .map_err(crate::adapters::sql::db_error)?;
        let mut url = url::Url::parse(admin_url)
            .map_err(|e| Error::validation("DATABASE_URL is not a URL").with_source(e))?;
        url.set_path(&format!("/{name}"));
        Ok(TestDatabase {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    /// The URL of the new database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database (closing other connections to it first).
    pub async fn drop_database(self) -> Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .map_err(|e| Error::unavailable("cannot connect to PostgreSQL").with_source(e))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .map_err(crate::adapters::sql::db_error)?;
        Ok(())
    }
}
