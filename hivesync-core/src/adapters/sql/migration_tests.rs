//! The migrations a build embeds are exactly the files in `migrations/`, and the ones that have
//! shipped are still byte for byte what existing databases applied.

use std::borrow::Cow;
use std::path::Path;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::SqlitePoolOptions;

use super::Backend;
use super::sqlite::SqlStore as SqliteStore;
use crate::ports::Store;

/// Migrations that have shipped: version, the description `_sqlx_migrations` recorded, and the
/// SHA-384 of the file that sqlx compares on every start. A database that applied one refuses to
/// start once its file changes ("migration N was previously applied but has been modified"), so
/// these files are never edited: a schema change is a new file.
///
/// The descriptions are those of the hand-written list that preceded `sqlx::migrate!`, which
/// derives them from the file name with `_` turned into ` `; sqlx never compares descriptions.
const RELEASED_SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        "4f573bd4d61e823edd5d907adf4574accba8f9f33bf20538\
         2afee6a801339ce8f73be67d1f2f0bb3e3194e50a6c4152b",
    ),
    (
        2,
        "queue",
        "dda28e37f3caccd1eb151822a1bc8336f71f4f911f136770\
         f2077730047289a2cc5a59759a24619b1285984558714dd1",
    ),
    (
        3,
        "job_keys",
        "1a75ee0e909af48aea74607f7355d68d8414647ede51023f\
         2ac06cba65a9fe2f042a131574ad25f0cde07191fb2743c3",
    ),
    (
        4,
        "shared repos",
        "ca71e6ed5956c9e61d22d6c121d03e4cab51d9a9e65454d0\
         0c3774029eacece80368db1b5873ebd040ab99c6fd994a68",
    ),
];

#[cfg(feature = "postgres")]
const RELEASED_POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        "a73250e1872722d8f7af506f03a177cb01a1222b70baeb2e\
         920114cef277433b16d51de1471d345f0b0946ba48bec05e",
    ),
    (
        2,
        "queue",
        "56bc49ac59ffe0b78beff5eade4f005c93e50939db210a3f\
         168140350ad6ef931b6187545b08a38a11038e815172fab4",
    ),
    (
        3,
        "job_keys",
        "b9becee8b9e33fafde8632c4f3148697b1ec8d1853155533\
         55156f6c0ea37d68a31743b0b82984a229bc8d1bbbab4d89",
    ),
    (
        4,
        "change_feed",
        "e826203dacf4248bb47c8d8c8ed6df3f4516f01a12da9a69\
         284608a08c7081d04e6e225e4fd2f90fed0c91c9737e4d4f",
    ),
    (
        5,
        "shared repos",
        "f339a548c7902049fb36cbb441e1f933e74a62b7ca345d5c\
         349204a34c811ba6bd00202b9bff6945810ead282d2dcb2e",
    ),
];

/// Version, description and checksum of each migration, as sqlx sees them.
type Listing = Vec<(i64, String, String)>;

fn embedded(migrator: &Migrator) -> Listing {
    migrator
        .iter()
        .map(|m| {
            (
                m.version,
                m.description.to_string(),
                hex::encode(&*m.checksum),
            )
        })
        .collect()
}

/// Reads `migrations/<dir>` as `sqlx::migrate!` does, but fails on a file it would skip without a
/// word (`5-users.sql`, `0005_users.SQL`, `0005_users.up.sql`) instead of ignoring it.
fn directory(dir: &str) -> Listing {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dir);
    let mut listing = Vec::new();
    for entry in std::fs::read_dir(&path).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let parsed = name
            .strip_suffix(".sql")
            .and_then(|stem| stem.split_once('_'))
            .filter(|(version, description)| {
                !version.is_empty()
                    && version.bytes().all(|b| b.is_ascii_digit())
                    && !description.is_empty()
                    && description
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            });
        let Some((version, description)) = parsed else {
            panic!(
                "migrations/{dir}/{name} is not named <version>_<description>.sql \
                 (lower case, digits and _), so sqlx would skip or misread it"
            );
        };
        let sql = std::fs::read_to_string(entry.path()).unwrap();
        // `Migration::new` computes the checksum the way sqlx does when it resolves a directory.
        let migration = Migration::new(
            version.parse().unwrap(),
            Cow::Owned(description.replace('_', " ")),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(sql).into_sql_str(),
            false,
        );
        listing.push((
            migration.version,
            migration.description.to_string(),
            hex::encode(&*migration.checksum),
        ));
    }
    listing.sort();
    listing
}

fn assert_embeds_directory(migrator: &Migrator, dir: &str) {
    assert_eq!(
        embedded(migrator),
        directory(dir),
        "the migrations built into this binary are not the files in migrations/{dir}: cargo \
         does not rerun `sqlx::migrate!` when only a new file appears, so touch \
         src/adapters/sql/{dir}.rs and build again"
    );
}

fn assert_released_unchanged(migrator: &Migrator, released: &[(i64, &str, &str)], dir: &str) {
    for &(version, _, checksum) in released {
        let migration = migrator.iter().find(|m| m.version == version);
        assert_eq!(
            migration.map(|m| hex::encode(&*m.checksum)).as_deref(),
            Some(checksum),
            "migrations/{dir} version {version} has shipped and must not change or go: databases \
             that applied it would refuse to start; put the change in a new migration"
        );
    }
}

#[test]
fn sqlite_embeds_every_migration_file() {
    assert_embeds_directory(sqlx::Sqlite::MIGRATOR, "sqlite");
}

#[test]
fn sqlite_released_migrations_are_unchanged() {
    assert_released_unchanged(sqlx::Sqlite::MIGRATOR, RELEASED_SQLITE, "sqlite");
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_embeds_every_migration_file() {
    assert_embeds_directory(sqlx::Postgres::MIGRATOR, "postgres");
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_released_migrations_are_unchanged() {
    assert_released_unchanged(sqlx::Postgres::MIGRATOR, RELEASED_POSTGRES, "postgres");
}

/// A database migrated by the hand-written list (descriptions with `_`) accepts the embedded
/// migrations, whose descriptions have ` `.
#[tokio::test]
async fn sqlite_databases_migrated_by_the_old_list_still_start() {
    // One connection: each connection to `sqlite::memory:` would open a database of its own.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let old = RELEASED_SQLITE
        .iter()
        .map(|&(version, description, _)| {
            let sql = sqlx::Sqlite::MIGRATOR
                .iter()
                .find(|m| m.version == version)
                .unwrap()
                .sql
                .clone();
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                sql,
                false,
            )
        })
        .collect();
    Migrator::with_migrations(old).run(&pool).await.unwrap();

    SqliteStore::from_pool(pool.clone())
        .migrate()
        .await
        .unwrap();
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(recorded[2], "job_keys");
}
