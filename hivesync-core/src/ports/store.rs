//! The `Store` port: users, projects, members, jobs and notifications.

use async_trait::async_trait;

use crate::domain::{
    Credentials, Email, Job, JobCount, JobFilter, JobId, JobUpdate, Member, NewJob,
    NewNotification, NewProject, NewUser, Notification, NotificationId, Page, Project, ProjectId,
    ProjectPatch, ProjectWithRole, RefUpdate, RepoBranch, RepoObject, RepoRef, Role, User, UserId,
    UserPatch,
};
use crate::error::Result;

/// Durable records of users, projects, memberships, jobs and notifications.
///
/// Adapters: SQLite (embedded default) and PostgreSQL, both through sqlx with their own migrations.
/// The conformance suite in `testkit::store` checks every point below against each adapter.
///
/// # Behavior
///
/// - `migrate` applies the adapter's migrations and is idempotent.
/// - E-mail addresses are unique: `create_user` with an address already taken fails with
///   `Conflict`, whatever the case of the input (addresses are normalised by [`Email`]).
/// - Getters return `Ok(None)` for unknown ids; updates and deletes of unknown ids fail with
///   `NotFound`.
/// - `create_project` makes its `owner` the first member with role owner, atomically.
/// - A project always has at least one owner: changing the role of, or removing, its last owner
///   fails with `Conflict` and changes nothing. Concurrent changes cannot get around this.
/// - `add_member` of someone already a member fails with `Conflict`; of an unknown user or into
///   an unknown project with `NotFound`.
/// - `delete_project` removes the project and its memberships; its jobs stay (with no project)
///   for the operators' history.
/// - Lists are ordered by id and paged with [`Page`]: projects oldest first, jobs and
///   notifications newest first; `after` continues after the given id in that order.
/// - `update_job` on a job in a terminal state fails with `Conflict`, and so does an update whose
///   `expected_attempts` differs from the job's attempt count; a progress outside 0..=1 is a
///   `Validation` error. Leaving `queued` sets `started_at` once; a terminal state sets
///   `finished_at`.
/// - `reset_job` works only on `failed` and `cancelled` jobs (`Conflict` otherwise, `NotFound` for
///   unknown ids).
/// - `mark_notifications_read` only touches the given user's notifications and returns how many
///   changed from unread to read.
/// - Repository references (the branch heads of repositories shared by several machines) move
///   only by compare-and-swap: `swap_repo_ref` with `expected: None` creates the reference if it
///   does not exist, with `Some(old)` moves it only while it still points at `old`; otherwise it
///   changes nothing and answers [`RefUpdate::Moved`] with the current target. Concurrent swaps
///   from one value: exactly one wins. A swap into an unknown project is `Validation`. References
///   go with their project.
/// - Repository objects are immutable and named by their content: `put_repo_objects` of an id
///   already stored keeps the stored bytes; `get_repo_objects` returns those it has of the ids
///   asked (any number of them) and skips the rest. They go with their project.
/// - Backend failures are `Unavailable` (retryable); nothing is partially written.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;
    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;

    async fn create_user(&self, user: NewUser) -> Result<User>;
    async fn get_user(&self, id: UserId) -> Result<Option<User>>;
    async fn get_user_by_email(&self, email: &Email) -> Result<Option<User>>;
    /// The password hash of the account with this address, for login only.
    async fn get_credentials(&self, email: &Email) -> Result<Option<Credentials>>;
    async fn update_user(&self, id: UserId, patch: UserPatch) -> Result<User>;
    async fn set_admin(&self, id: UserId, is_admin: bool) -> Result<()>;

    async fn create_project(&self, project: NewProject) -> Result<Project>;
    async fn get_project(&self, id: ProjectId) -> Result<Option<Project>>;
    /// The projects `user` belongs to, with their role in each.
    async fn list_projects_for_user(
        &self,
        user: UserId,
        page: Page<ProjectId>,
    ) -> Result<Vec<ProjectWithRole>>;
    async fn update_project(&self, id: ProjectId, patch: ProjectPatch) -> Result<Project>;
    async fn delete_project(&self, id: ProjectId) -> Result<()>;

    /// `user`'s role in `project`, or `None` when they are not a member (or either is unknown).
    async fn get_role(&self, project: ProjectId, user: UserId) -> Result<Option<Role>>;
    /// Members ordered by when they joined.
    async fn list_members(&self, project: ProjectId) -> Result<Vec<Member>>;
    async fn add_member(&self, project: ProjectId, user: UserId, role: Role) -> Result<Member>;
    async fn set_member_role(&self, project: ProjectId, user: UserId, role: Role)
    -> Result<Member>;
    async fn remove_member(&self, project: ProjectId, user: UserId) -> Result<()>;

    async fn create_job(&self, job: NewJob) -> Result<Job>;
    async fn get_job(&self, id: JobId) -> Result<Option<Job>>;
    /// The job `id` if it belongs to a project `user` is a member of, in one read (the hot path
    /// of build status polling); `None` for a missing job, a job without a project, or a
    /// non-member.
    async fn get_member_job(&self, id: JobId, user: UserId) -> Result<Option<Job>>;
    async fn update_job(&self, id: JobId, update: JobUpdate) -> Result<Job>;
    /// Puts a `failed` or `cancelled` job back to `queued` for another run (an operator retrying a
    /// dead letter): progress, error and `finished_at` are cleared, attempts kept.
    async fn reset_job(&self, id: JobId) -> Result<Job>;
    async fn list_jobs(&self, filter: &JobFilter, page: Page<JobId>) -> Result<Vec<Job>>;
    /// Jobs per queue and state, for metrics and the admin view (states with none are absent).
    async fn count_jobs(&self) -> Result<Vec<JobCount>>;

    async fn create_notification(&self, notification: NewNotification) -> Result<Notification>;
    async fn list_notifications(
        &self,
        user: UserId,
        unread_only: bool,
        page: Page<NotificationId>,
    ) -> Result<Vec<Notification>>;
    async fn mark_notifications_read(&self, user: UserId, ids: &[NotificationId]) -> Result<u64>;

    /// A project repository's references, ordered by name.
    async fn list_repo_refs(&self, project: ProjectId) -> Result<Vec<RepoRef>>;
    async fn get_repo_ref(&self, project: ProjectId, name: &str) -> Result<Option<String>>;
    /// Moves reference `name` from `expected` (`None`: it must not exist) to `new`.
    async fn swap_repo_ref(
        &self,
        project: ProjectId,
        name: &str,
        expected: Option<&str>,
        new: &str,
    ) -> Result<RefUpdate>;
    /// Stores repository objects (commits and trees); one already stored is left as it is.
    async fn put_repo_objects(&self, project: ProjectId, objects: &[RepoObject]) -> Result<()>;
    /// Those of `ids` that are stored, in no particular order.
    async fn get_repo_objects(&self, project: ProjectId, ids: &[String])
    -> Result<Vec<RepoObject>>;
    /// Reference `name`'s target and, in one read, every stored object reached from it by
    /// following links (the target's own object included when stored), in no particular order;
    /// `None` when there is no such reference.
    async fn get_repo_branch(&self, project: ProjectId, name: &str) -> Result<Option<RepoBranch>>;
}
