//! The `Store` on SQL, written once for SQLite and PostgreSQL.
//!
//! Every statement here runs unchanged on both databases because their schemas are kept column
//! for column identical (`migrations/{sqlite,postgres}`); the few that cannot be shared come from
//! [`Backend`]. The `where` clauses spell out what sqlx does not promise for every database (that
//! a connection runs queries, that a Rust type fits a column): rustc does not carry such bounds
//! over from a trait to the code that uses it, so each generic `impl` block repeats them.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, Pool, Row, Type};
use uuid::Uuid;

use super::{Backend, ColumnType, db_error, first_row, now, only_row, repo_object};
use crate::domain::{
    Credentials, Email, Job, JobCount, JobFilter, JobId, JobState, JobUpdate, Member, NewJob,
    NewNotification, NewProject, NewUser, Notification, NotificationId, Page, Project, ProjectId,
    ProjectPatch, ProjectWithRole, RefUpdate, RepoBranch, RepoObject, RepoRef, Role, User, UserId,
    UserPatch,
};
use crate::error::{Error, ErrorKind, Result};
use crate::ports::Store;

/// A `Store` on a sqlx connection pool: [`SqliteStore`](crate::adapters::SqliteStore) or
/// [`PostgresStore`](crate::adapters::PostgresStore).
///
/// Writes go through `pool`, reads through `readers`. On PostgreSQL both are the same pool; on
/// SQLite, which takes one writer at a time, `pool` holds two connections, so writers mostly wait
/// in the pool's queue (first come, first served) instead of in SQLite's busy handler, which
/// sleeps and retries, while reads run beside them on their own connections.
#[derive(Debug)]
pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
    readers: Pool<DB>,
}

// Not derived: the derive would require `DB: Clone`, which sqlx's database types are not.
impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            readers: self.readers.clone(),
        }
    }
}

impl<DB: Database> SqlStore<DB> {
    /// Wraps an existing pool, for reads and writes alike (migrations are not run; call
    /// [`Store::migrate`]).
    pub fn from_pool(pool: Pool<DB>) -> Self {
        SqlStore {
            readers: pool.clone(),
            pool,
        }
    }

    /// Reads through `readers` from now on, writes still through the pool given first.
    pub fn with_readers(mut self, readers: Pool<DB>) -> Self {
        self.readers = readers;
        self
    }

    /// The pool writes go through, for adapters that share the database (the SQL-backed job
    /// queue), so that their writes queue with the store's.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Closes both pools: every later call fails.
    pub async fn close(&self) {
        self.pool.close().await;
        self.readers.close().await;
    }
}

const MEMBER_SELECT: &str = "SELECT m.project_id, m.user_id, u.email, u.display_name, \
    m.role, m.added_at \
    FROM project_members m JOIN users u ON u.id = m.user_id \
    WHERE m.project_id = $1 AND m.user_id = $2";

impl<DB> SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Type<DB> + Encode<'a, DB> + Decode<'a, DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> Json<&'a Value>: Type<DB> + Encode<'a, DB>,
    Uuid: ColumnType<DB>,
    Option<Uuid>: ColumnType<DB>,
    String: ColumnType<DB>,
    Option<String>: ColumnType<DB>,
    Json<Value>: ColumnType<DB>,
    Option<Json<Value>>: ColumnType<DB>,
    DateTime<Utc>: ColumnType<DB>,
    bool: ColumnType<DB>,
    i32: ColumnType<DB>,
    Option<i32>: ColumnType<DB>,
    i64: ColumnType<DB>,
    f64: ColumnType<DB>,
    Vec<u8>: ColumnType<DB>,
    Option<Vec<u8>>: ColumnType<DB>,
{
    pub fn into_dyn(self) -> Arc<dyn Store> {
        Arc::new(self)
    }

    fn user_from_row(row: &DB::Row) -> Result<User> {
        Ok(User {
            id: UserId::from_uuid(row.try_get("id").map_err(db_error)?),
            email: Email::parse(row.try_get::<&str, _>("email").map_err(db_error)?)?,
            display_name: row.try_get("display_name").map_err(db_error)?,
            preferences: row
                .try_get::<Json<Value>, _>("preferences")
                .map_err(db_error)?
                .0,
            is_admin: row.try_get("is_admin").map_err(db_error)?,
            created_at: row.try_get("created_at").map_err(db_error)?,
            updated_at: row.try_get("updated_at").map_err(db_error)?,
        })
    }

    fn project_from_row(row: &DB::Row) -> Result<Project> {
        Ok(Project {
            id: ProjectId::from_uuid(row.try_get("id").map_err(db_error)?),
            name: row.try_get("name").map_err(db_error)?,
            description: row.try_get("description").map_err(db_error)?,
            created_by: UserId::from_uuid(row.try_get("created_by").map_err(db_error)?),
            created_at: row.try_get("created_at").map_err(db_error)?,
            updated_at: row.try_get("updated_at").map_err(db_error)?,
        })
    }

    fn role_from_row(row: &DB::Row) -> Result<Role> {
        row.try_get::<&str, _>("role").map_err(db_error)?.parse()
    }

    fn member_from_row(row: &DB::Row) -> Result<Member> {
        Ok(Member {
            project_id: ProjectId::from_uuid(row.try_get("project_id").map_err(db_error)?),
            user_id: UserId::from_uuid(row.try_get("user_id").map_err(db_error)?),
            email: Email::parse(row.try_get::<&str, _>("email").map_err(db_error)?)?,
            display_name: row.try_get("display_name").map_err(db_error)?,
            role: Self::role_from_row(row)?,
            added_at: row.try_get("added_at").map_err(db_error)?,
        })
    }

    fn job_from_row(row: &DB::Row) -> Result<Job> {
        let attempts: i32 = row.try_get("attempts").map_err(db_error)?;
        Ok(Job {
            id: JobId::from_uuid(row.try_get("id").map_err(db_error)?),
            kind: row.try_get("kind").map_err(db_error)?,
            queue: row.try_get("queue").map_err(db_error)?,
            project_id: row
                .try_get::<Option<Uuid>, _>("project_id")
                .map_err(db_error)?
                .map(ProjectId::from_uuid),
            user_id: row
                .try_get::<Option<Uuid>, _>("user_id")
                .map_err(db_error)?
                .map(UserId::from_uuid),
            state: row.try_get::<&str, _>("state").map_err(db_error)?.parse()?,
            progress: row.try_get("progress").map_err(db_error)?,
            phase: row.try_get("phase").map_err(db_error)?,
            attempts: attempts.max(0) as u32,
            error_code: row.try_get("error_code").map_err(db_error)?,
            error_message: row.try_get("error_message").map_err(db_error)?,
            payload: row
                .try_get::<Json<Value>, _>("payload")
                .map_err(db_error)?
                .0,
            result: row
                .try_get::<Option<Json<Value>>, _>("result")
                .map_err(db_error)?
                .map(|j| j.0),
            dedup_key: row.try_get("dedup_key").map_err(db_error)?,
            created_at: row.try_get("created_at").map_err(db_error)?,
            updated_at: row.try_get("updated_at").map_err(db_error)?,
            started_at: row.try_get("started_at").map_err(db_error)?,
            finished_at: row.try_get("finished_at").map_err(db_error)?,
        })
    }

    fn notification_from_row(row: &DB::Row) -> Result<Notification> {
        Ok(Notification {
            id: NotificationId::from_uuid(row.try_get("id").map_err(db_error)?),
            user_id: UserId::from_uuid(row.try_get("user_id").map_err(db_error)?),
            kind: row.try_get("kind").map_err(db_error)?,
            title: row.try_get("title").map_err(db_error)?,
            body: row.try_get("body").map_err(db_error)?,
            data: row.try_get::<Json<Value>, _>("data").map_err(db_error)?.0,
            created_at: row.try_get("created_at").map_err(db_error)?,
            read_at: row.try_get("read_at").map_err(db_error)?,
        })
    }

    /// Fails with `NotFound` unless the project exists; under `DB::LOCK_PROJECT` this also
    /// serialises membership changes of one project.
    async fn lock_project(
        tx: &mut sqlx::Transaction<'static, DB>,
        project: ProjectId,
    ) -> Result<()> {
        let found = sqlx::query(DB::LOCK_PROJECT)
            .bind(project.as_uuid())
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
        match found {
            Some(_) => Ok(()),
            None => Err(Error::not_found("no such project").with_context("project_id", project)),
        }
    }

    async fn member_in_tx(
        tx: &mut sqlx::Transaction<'static, DB>,
        project: ProjectId,
        user: UserId,
    ) -> Result<Option<Member>> {
        sqlx::query(MEMBER_SELECT)
            .bind(project.as_uuid())
            .bind(user.as_uuid())
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(Self::member_from_row)
            .transpose()
    }

    /// Fails with `Conflict` if `user` is the project's only owner.
    async fn ensure_not_last_owner(
        tx: &mut sqlx::Transaction<'static, DB>,
        project: ProjectId,
        user: UserId,
    ) -> Result<()> {
        let others: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM project_members WHERE project_id = $1 AND role = 'owner' \
             AND user_id <> $2",
        )
        .bind(project.as_uuid())
        .bind(user.as_uuid())
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?;
        if others == 0 {
            return Err(Error::conflict("a project must keep at least one owner")
                .with_context("project_id", project));
        }
        Ok(())
    }
}

/// The columns `job_from_row` reads, in one place for every query that returns jobs.
macro_rules! job_columns {
    () => {
        "id, kind, queue, project_id, user_id, state, progress, phase, attempts, error_code, \
         error_message, payload, result, dedup_key, created_at, updated_at, started_at, finished_at"
    };
}

#[async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Type<DB> + Encode<'a, DB> + Decode<'a, DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> Json<&'a Value>: Type<DB> + Encode<'a, DB>,
    Uuid: ColumnType<DB>,
    Option<Uuid>: ColumnType<DB>,
    String: ColumnType<DB>,
    Option<String>: ColumnType<DB>,
    Json<Value>: ColumnType<DB>,
    Option<Json<Value>>: ColumnType<DB>,
    DateTime<Utc>: ColumnType<DB>,
    bool: ColumnType<DB>,
    i32: ColumnType<DB>,
    Option<i32>: ColumnType<DB>,
    i64: ColumnType<DB>,
    f64: ColumnType<DB>,
    Vec<u8>: ColumnType<DB>,
    Option<Vec<u8>>: ColumnType<DB>,
{
    async fn migrate(&self) -> Result<()> {
        DB::MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| Error::unavailable("database migration failed").with_source(e))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn create_user(&self, user: NewUser) -> Result<User> {
        let now = now();
        let row = sqlx::query(
            "INSERT INTO users (id, email, display_name, password_hash, preferences, is_admin, \
             created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, FALSE, $6, $6) \
             RETURNING id, email, display_name, preferences, is_admin, created_at, updated_at",
        )
        .bind(UserId::new().as_uuid())
        .bind(user.email.as_str())
        .bind(&user.display_name)
        .bind(&user.password_hash)
        .bind(Json(Value::Object(Default::default())))
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .and_then(only_row)
        .map_err(|e| match db_error(e) {
            err if err.kind() == ErrorKind::Conflict => {
                Error::conflict("an account with this email already exists")
                    .with_context("field", "email")
            }
            err => err,
        })?;
        Self::user_from_row(&row)
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>> {
        sqlx::query(
            "SELECT id, email, display_name, preferences, is_admin, created_at, updated_at \
             FROM users WHERE id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.readers)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(Self::user_from_row)
        .transpose()
    }

    async fn get_user_by_email(&self, email: &Email) -> Result<Option<User>> {
        sqlx::query(
            "SELECT id, email, display_name, preferences, is_admin, created_at, updated_at \
             FROM users WHERE email = $1",
        )
        .bind(email.as_str())
        .fetch_optional(&self.readers)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(Self::user_from_row)
        .transpose()
    }

    async fn get_credentials(&self, email: &Email) -> Result<Option<Credentials>> {
        let row = sqlx::query("SELECT id, password_hash FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&self.readers)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            Ok(Credentials {
                user_id: UserId::from_uuid(row.try_get("id").map_err(db_error)?),
                password_hash: row.try_get("password_hash").map_err(db_error)?,
            })
        })
        .transpose()
    }

    async fn update_user(&self, id: UserId, patch: UserPatch) -> Result<User> {
        sqlx::query(
            "UPDATE users SET display_name = COALESCE($2, display_name), \
             preferences = COALESCE($3, preferences), updated_at = $4 WHERE id = $1 \
             RETURNING id, email, display_name, preferences, is_admin, created_at, updated_at",
        )
        .bind(id.as_uuid())
        .bind(patch.display_name)
        .bind(patch.preferences.map(Json))
        .bind(now())
        .fetch_all(&self.pool)
        .await
        .map(first_row)
        .map_err(db_error)?
        .as_ref()
        .map(Self::user_from_row)
        .transpose()?
        .ok_or_else(|| Error::not_found("no such user").with_context("user_id", id))
    }

    async fn set_admin(&self, id: UserId, is_admin: bool) -> Result<()> {
        let done = sqlx::query("UPDATE users SET is_admin = $2, updated_at = $3 WHERE id = $1")
            .bind(id.as_uuid())
            .bind(is_admin)
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if DB::rows_affected(&done) == 0 {
            return Err(Error::not_found("no such user").with_context("user_id", id));
        }
        Ok(())
    }

    async fn create_project(&self, project: NewProject) -> Result<Project> {
        let now = now();
        let id = ProjectId::new();
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        let row = sqlx::query(
            "INSERT INTO projects (id, name, description, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             RETURNING id, name, description, created_by, created_at, updated_at",
        )
        .bind(id.as_uuid())
        .bind(&project.name)
        .bind(&project.description)
        .bind(project.owner.as_uuid())
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .and_then(only_row)
        .map_err(|e| match db_error(e) {
            err if err.kind() == ErrorKind::Validation => {
                Error::not_found("no such user").with_context("user_id", project.owner)
            }
            err => err,
        })?;
        sqlx::query(
            "INSERT INTO project_members (project_id, user_id, role, added_at) \
             VALUES ($1, $2, 'owner', $3)",
        )
        .bind(id.as_uuid())
        .bind(project.owner.as_uuid())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Self::project_from_row(&row)
    }

    async fn get_project(&self, id: ProjectId) -> Result<Option<Project>> {
        sqlx::query(
            "SELECT id, name, description, created_by, created_at, updated_at FROM projects \
             WHERE id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.readers)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(Self::project_from_row)
        .transpose()
    }

    async fn list_projects_for_user(
        &self,
        user: UserId,
        page: Page<ProjectId>,
    ) -> Result<Vec<ProjectWithRole>> {
        let rows = sqlx::query(
            "SELECT p.id, p.name, p.description, p.created_by, p.created_at, p.updated_at, m.role \
             FROM project_members m JOIN projects p ON p.id = m.project_id \
             WHERE m.user_id = $1 AND ($2 IS NULL OR p.id > $2) \
             ORDER BY p.id LIMIT $3",
        )
        .bind(user.as_uuid())
        .bind(page.after.map(|id| id.as_uuid()))
        .bind(i64::from(page.limit))
        .fetch_all(&self.readers)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(ProjectWithRole {
                    project: Self::project_from_row(row)?,
                    role: Self::role_from_row(row)?,
                })
            })
            .collect()
    }

    async fn update_project(&self, id: ProjectId, patch: ProjectPatch) -> Result<Project> {
        sqlx::query(
            "UPDATE projects SET name = COALESCE($2, name), \
             description = COALESCE($3, description), \
             updated_at = $4 WHERE id = $1 \
             RETURNING id, name, description, created_by, created_at, updated_at",
        )
        .bind(id.as_uuid())
        .bind(patch.name)
        .bind(patch.description)
        .bind(now())
        .fetch_all(&self.pool)
        .await
        .map(first_row)
        .map_err(db_error)?
        .as_ref()
        .map(Self::project_from_row)
        .transpose()?
        .ok_or_else(|| Error::not_found("no such project").with_context("project_id", id))
    }

    async fn delete_project(&self, id: ProjectId) -> Result<()> {
        let done = sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(id.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if DB::rows_affected(&done) == 0 {
            return Err(Error::not_found("no such project").with_context("project_id", id));
        }
        Ok(())
    }

    async fn get_role(&self, project: ProjectId, user: UserId) -> Result<Option<Role>> {
        sqlx::query("SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2")
            .bind(project.as_uuid())
            .bind(user.as_uuid())
            .fetch_optional(&self.readers)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(Self::role_from_row)
            .transpose()
    }

    async fn list_members(&self, project: ProjectId) -> Result<Vec<Member>> {
        let rows = sqlx::query(
            "SELECT m.project_id, m.user_id, u.email, u.display_name, m.role, m.added_at \
             FROM project_members m JOIN users u ON u.id = m.user_id \
             WHERE m.project_id = $1 ORDER BY m.added_at, m.user_id",
        )
        .bind(project.as_uuid())
        .fetch_all(&self.readers)
        .await
        .map_err(db_error)?;
        rows.iter().map(Self::member_from_row).collect()
    }

    async fn add_member(&self, project: ProjectId, user: UserId, role: Role) -> Result<Member> {
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        Self::lock_project(&mut tx, project).await?;
        let user_exists = sqlx::query("SELECT 1 FROM users WHERE id = $1")
            .bind(user.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .is_some();
        if !user_exists {
            return Err(Error::not_found("no such user").with_context("user_id", user));
        }
        sqlx::query(
            "INSERT INTO project_members (project_id, user_id, role, added_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(project.as_uuid())
        .bind(user.as_uuid())
        .bind(role.as_str())
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(|e| match db_error(e) {
            err if err.kind() == ErrorKind::Conflict => {
                Error::conflict("the user is already a member of this project")
                    .with_context("user_id", user)
            }
            err => err,
        })?;
        let member = Self::member_in_tx(&mut tx, project, user)
            .await?
            .ok_or_else(|| Error::internal("a member vanished inside its own transaction"))?;
        tx.commit().await.map_err(db_error)?;
        Ok(member)
    }

    async fn set_member_role(
        &self,
        project: ProjectId,
        user: UserId,
        role: Role,
    ) -> Result<Member> {
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        Self::lock_project(&mut tx, project).await?;
        let current = Self::member_in_tx(&mut tx, project, user)
            .await?
            .ok_or_else(|| Error::not_found("no such member").with_context("user_id", user))?;
        if current.role == role {
            return Ok(current);
        }
        if current.role == Role::Owner {
            Self::ensure_not_last_owner(&mut tx, project, user).await?;
        }
        sqlx::query("UPDATE project_members SET role = $3 WHERE project_id = $1 AND user_id = $2")
            .bind(project.as_uuid())
            .bind(user.as_uuid())
            .bind(role.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(Member { role, ..current })
    }

    async fn remove_member(&self, project: ProjectId, user: UserId) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        Self::lock_project(&mut tx, project).await?;
        let current = Self::member_in_tx(&mut tx, project, user)
            .await?
            .ok_or_else(|| Error::not_found("no such member").with_context("user_id", user))?;
        if current.role == Role::Owner {
            Self::ensure_not_last_owner(&mut tx, project, user).await?;
        }
        sqlx::query("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2")
            .bind(project.as_uuid())
            .bind(user.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }

    async fn create_job(&self, job: NewJob) -> Result<Job> {
        // A conflict on the dedup index means an unfinished twin exists: return it. It may finish
        // between the failed insert and the lookup, hence one more round.
        for _ in 0..2 {
            let inserted = sqlx::query(concat!(
                "INSERT INTO jobs (id, kind, queue, project_id, user_id, state, progress, \
                 attempts, payload, dedup_key, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 'queued', 0, 0, $6, $7, $8, $8) \
                 RETURNING ",
                job_columns!()
            ))
            .bind(job.id.as_uuid())
            .bind(&job.kind)
            .bind(&job.queue)
            .bind(job.project_id.map(|id| id.as_uuid()))
            .bind(job.user_id.map(|id| id.as_uuid()))
            .bind(Json(&job.payload))
            .bind(job.dedup_key.as_deref())
            .bind(now())
            .fetch_all(&self.pool)
            .await
            .and_then(only_row)
            .map_err(db_error);
            let err = match inserted {
                Ok(row) => return Self::job_from_row(&row),
                Err(err) => err,
            };
            let Some(key) = job
                .dedup_key
                .as_deref()
                .filter(|_| err.kind() == ErrorKind::Conflict)
            else {
                return Err(err);
            };
            let twin = sqlx::query(concat!(
                "SELECT ",
                job_columns!(),
                " \
                 FROM jobs WHERE queue = $1 AND dedup_key = $2 \
                 AND state NOT IN ('success', 'failed', 'cancelled')"
            ))
            .bind(&job.queue)
            .bind(key)
            .fetch_optional(&self.readers)
            .await
            .map_err(db_error)?;
            if let Some(row) = twin {
                return Self::job_from_row(&row);
            }
        }
        Err(Error::conflict(
            "a job with this dedup key keeps appearing and finishing; try again",
        ))
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " \
             FROM jobs WHERE id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.readers)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(Self::job_from_row)
        .transpose()
    }

    async fn get_member_job(&self, id: JobId, user: UserId) -> Result<Option<Job>> {
        sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = $1 AND EXISTS (SELECT 1 FROM project_members m \
                 WHERE m.project_id = jobs.project_id AND m.user_id = $2)"
        ))
        .bind(id.as_uuid())
        .bind(user.as_uuid())
        .fetch_optional(&self.readers)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(Self::job_from_row)
        .transpose()
    }

    async fn update_job(&self, id: JobId, update: JobUpdate) -> Result<Job> {
        if !(0.0..=1.0).contains(&update.progress) {
            return Err(Error::validation("progress must be between 0 and 1")
                .with_context("progress", update.progress));
        }
        let now = now();
        let terminal = update.state.is_terminal();
        let started = update.state != JobState::Queued;
        // The WHERE clause refuses to touch a finished job, atomically with the update.
        let row = sqlx::query(concat!(
            "UPDATE jobs SET state = $2, progress = $3, phase = $4, \
             attempts = attempts + $5, error_code = $6, error_message = $7, \
             result = COALESCE($8, result), updated_at = $9, \
             started_at = CASE WHEN $10 AND started_at IS NULL THEN $9 ELSE started_at END, \
             finished_at = CASE WHEN $11 THEN $9 ELSE finished_at END \
             WHERE id = $1 AND state NOT IN ('success', 'failed', 'cancelled') \
             AND ($12 IS NULL OR attempts = $12) \
             RETURNING ",
            job_columns!()
        ))
        .bind(id.as_uuid())
        .bind(update.state.as_str())
        .bind(update.progress)
        .bind(update.phase)
        .bind(i32::from(update.new_attempt))
        .bind(update.error_code)
        .bind(update.error_message)
        .bind(update.result.map(Json))
        .bind(now)
        .bind(started)
        .bind(terminal)
        .bind(update.expected_attempts.map(|n| n as i32))
        .fetch_all(&self.pool)
        .await
        .map(first_row)
        .map_err(db_error)?;
        match row {
            Some(row) => Self::job_from_row(&row),
            None => match self.get_job(id).await? {
                Some(job) if job.state.is_terminal() => {
                    Err(Error::conflict("the job has already finished")
                        .with_context("job_id", id)
                        .with_context("state", job.state))
                }
                Some(job) => Err(
                    Error::conflict("a later attempt of the job superseded this one")
                        .with_context("job_id", id)
                        .with_context("attempts", job.attempts),
                ),
                None => Err(Error::not_found("no such job").with_context("job_id", id)),
            },
        }
    }

    async fn reset_job(&self, id: JobId) -> Result<Job> {
        let row = sqlx::query(concat!(
            "UPDATE jobs SET state = 'queued', progress = 0, phase = 'retried', error_code = NULL, \
             error_message = NULL, result = NULL, finished_at = NULL, updated_at = $2 \
             WHERE id = $1 AND state IN ('failed', 'cancelled') \
             RETURNING ",
            job_columns!()
        ))
        .bind(id.as_uuid())
        .bind(now())
        .fetch_all(&self.pool)
        .await
        .map(first_row)
        .map_err(|e| match db_error(e) {
            // Another unfinished job took its dedup key meanwhile.
            err if err.kind() == ErrorKind::Conflict => {
                Error::conflict("an unfinished job with the same dedup key exists")
                    .with_context("job_id", id)
            }
            err => err,
        })?;
        match row {
            Some(row) => Self::job_from_row(&row),
            None => match self.get_job(id).await? {
                Some(job) => Err(
                    Error::conflict("only failed or cancelled jobs can be reset")
                        .with_context("job_id", id)
                        .with_context("state", job.state),
                ),
                None => Err(Error::not_found("no such job").with_context("job_id", id)),
            },
        }
    }

    async fn list_jobs(&self, filter: &JobFilter, page: Page<JobId>) -> Result<Vec<Job>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " \
             FROM jobs WHERE ($1 IS NULL OR queue = $1) AND ($2 IS NULL OR state = $2) \
             AND ($3 IS NULL OR project_id = $3) AND ($4 IS NULL OR kind = $4) \
             AND ($5 IS NULL OR dedup_key = $5) \
             AND ($6 IS NULL OR id < $6) ORDER BY id DESC LIMIT $7"
        ))
        .bind(filter.queue.as_deref())
        .bind(filter.state.map(JobState::as_str))
        .bind(filter.project_id.map(|id| id.as_uuid()))
        .bind(filter.kind.as_deref())
        .bind(filter.dedup_key.as_deref())
        .bind(page.after.map(|id| id.as_uuid()))
        .bind(i64::from(page.limit))
        .fetch_all(&self.readers)
        .await
        .map_err(db_error)?;
        rows.iter().map(Self::job_from_row).collect()
    }

    async fn count_jobs(&self) -> Result<Vec<JobCount>> {
        let rows = sqlx::query(
            "SELECT queue, state, COUNT(*) AS n FROM jobs GROUP BY queue, state \
             ORDER BY queue, state",
        )
        .fetch_all(&self.readers)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(JobCount {
                    queue: row.try_get("queue").map_err(db_error)?,
                    state: row.try_get::<&str, _>("state").map_err(db_error)?.parse()?,
                    count: row.try_get::<i64, _>("n").map_err(db_error)?.max(0) as u64,
                })
            })
            .collect()
    }

    async fn create_notification(&self, notification: NewNotification) -> Result<Notification> {
        let row = sqlx::query(
            "INSERT INTO notifications (id, user_id, kind, title, body, data, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             RETURNING id, user_id, kind, title, body, data, created_at, read_at",
        )
        .bind(NotificationId::new().as_uuid())
        .bind(notification.user_id.as_uuid())
        .bind(&notification.kind)
        .bind(&notification.title)
        .bind(&notification.body)
        .bind(Json(&notification.data))
        .bind(now())
        .fetch_all(&self.pool)
        .await
        .and_then(only_row)
        .map_err(|e| match db_error(e) {
            err if err.kind() == ErrorKind::Validation => {
                Error::not_found("no such user").with_context("user_id", notification.user_id)
            }
            err => err,
        })?;
        Self::notification_from_row(&row)
    }

    async fn list_notifications(
        &self,
        user: UserId,
        unread_only: bool,
        page: Page<NotificationId>,
    ) -> Result<Vec<Notification>> {
        let rows = sqlx::query(
            "SELECT id, user_id, kind, title, body, data, created_at, read_at FROM notifications \
             WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL) AND ($3 IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(user.as_uuid())
        .bind(unread_only)
        .bind(page.after.map(|id| id.as_uuid()))
        .bind(i64::from(page.limit))
        .fetch_all(&self.readers)
        .await
        .map_err(db_error)?;
        rows.iter().map(Self::notification_from_row).collect()
    }

    async fn mark_notifications_read(&self, user: UserId, ids: &[NotificationId]) -> Result<u64> {
        let now = now();
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        let mut changed = 0;
        for id in ids {
            let done = sqlx::query(
                "UPDATE notifications SET read_at = $3 \
                 WHERE id = $1 AND user_id = $2 AND read_at IS NULL",
            )
            .bind(id.as_uuid())
            .bind(user.as_uuid())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            changed += DB::rows_affected(&done);
        }
        tx.commit().await.map_err(db_error)?;
        Ok(changed)
    }

    async fn list_repo_refs(&self, project: ProjectId) -> Result<Vec<RepoRef>> {
        let rows =
            sqlx::query("SELECT name, target FROM repo_refs WHERE project_id = $1 ORDER BY name")
                .bind(project.as_uuid())
                .fetch_all(&self.readers)
                .await
                .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(RepoRef {
                    name: row.try_get("name").map_err(db_error)?,
                    target: row.try_get("target").map_err(db_error)?,
                })
            })
            .collect()
    }

    async fn get_repo_ref(&self, project: ProjectId, name: &str) -> Result<Option<String>> {
        sqlx::query("SELECT target FROM repo_refs WHERE project_id = $1 AND name = $2")
            .bind(project.as_uuid())
            .bind(name)
            .fetch_optional(&self.readers)
            .await
            .map_err(db_error)?
            .map(|row| row.try_get("target").map_err(db_error))
            .transpose()
    }

    async fn swap_repo_ref(
        &self,
        project: ProjectId,
        name: &str,
        expected: Option<&str>,
        new: &str,
    ) -> Result<RefUpdate> {
        // One statement either way, so the database decides a race: the row is inserted or
        // updated only while it is as the caller saw it.
        let done = match expected {
            None => sqlx::query(
                "INSERT INTO repo_refs (project_id, name, target, updated_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (project_id, name) DO NOTHING",
            )
            .bind(project.as_uuid())
            .bind(name)
            .bind(new)
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(db_error)?,
            Some(expected) => sqlx::query(
                "UPDATE repo_refs SET target = $1, updated_at = $2 \
                 WHERE project_id = $3 AND name = $4 AND target = $5",
            )
            .bind(new)
            .bind(now())
            .bind(project.as_uuid())
            .bind(name)
            .bind(expected)
            .execute(&self.pool)
            .await
            .map_err(db_error)?,
        };
        if DB::rows_affected(&done) == 1 {
            return Ok(RefUpdate::Updated);
        }
        Ok(RefUpdate::Moved {
            current: self.get_repo_ref(project, name).await?,
        })
    }

    async fn put_repo_objects(&self, project: ProjectId, objects: &[RepoObject]) -> Result<()> {
        DB::put_repo_objects(&self.pool, project.as_uuid(), objects).await
    }

    async fn get_repo_objects(
        &self,
        project: ProjectId,
        ids: &[String],
    ) -> Result<Vec<RepoObject>> {
        DB::get_repo_objects(&self.readers, project.as_uuid(), ids).await
    }

    async fn get_repo_branch(&self, project: ProjectId, name: &str) -> Result<Option<RepoBranch>> {
        let rows: Vec<BranchRow> = sqlx::query_as(DB::REPO_BRANCH)
            .bind(project.as_uuid())
            .bind(name)
            .fetch_all(&self.readers)
            .await
            .map_err(db_error)?;
        repo_branch(rows)
    }
}

/// A row of a branch query: id, whether it is the reference's target (1) or reached from it
/// (0), and the object's data and links (absent for a target that is not stored).
type BranchRow = (String, i32, Option<Vec<u8>>, Option<String>);

/// The rows of a branch query as the reference's target and its objects; no rows: no such
/// reference.
fn repo_branch(rows: Vec<BranchRow>) -> Result<Option<RepoBranch>> {
    let mut target = None;
    let mut objects = Vec::with_capacity(rows.len());
    for (id, is_target, data, links) in rows {
        if is_target == 1 {
            target = Some(id.clone());
        }
        if let Some(data) = data {
            objects.push(repo_object(id, data, links)?);
        }
    }
    Ok(target.map(|target| RepoBranch { target, objects }))
}
