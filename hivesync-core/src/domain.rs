//! Domain types shared by every crate: identifiers, users, projects, members, jobs, notifications.
//!
//! Constructors that take user input validate it (`Email::parse`, `ProjectName::parse`, ...), so a
//! value of these types is always well-formed and adapters never re-check it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) identifier.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Uuid::parse_str(s).map(Self).map_err(|_| {
                    Error::validation(concat!("not a valid ", stringify!($name)))
                        .with_context("value", crate::domain::truncate_for_display(s))
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

define_id!(
    /// Identifies a user.
    UserId
);
define_id!(
    /// Identifies a project.
    ProjectId
);
define_id!(
    /// Identifies a job (preview build, AI request, cleanup run, ...).
    JobId
);
define_id!(
    /// Identifies a notification.
    NotificationId
);

/// Shortens user input before it is echoed back in an error, so errors stay small.
pub fn truncate_for_display(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push('…');
        out
    }
}

fn has_control_chars(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A normalised (trimmed, lower-case) e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// The longest address SMTP allows.
    pub const MAX_LEN: usize = 254;

    /// Validates and normalises an address. Only the shape is checked (one `@`, a non-empty local
    /// part of at most 64 bytes, a domain with a dot or `localhost`, no spaces or control
    /// characters); whether it receives mail is not HiveSync's business.
    pub fn parse(input: &str) -> Result<Self> {
        let normalised = input.trim().to_lowercase();
        let invalid = |why: &'static str| {
            Error::validation(format!("email is invalid: {why}")).with_context("field", "email")
        };
        if normalised.is_empty() {
            return Err(invalid("it is empty"));
        }
        if normalised.len() > Self::MAX_LEN {
            return Err(invalid("it is longer than 254 bytes"));
        }
        if normalised
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid("it contains spaces or control characters"));
        }
        let Some((local, domain)) = normalised.split_once('@') else {
            return Err(invalid("it has no @"));
        };
        if local.is_empty() || local.len() > 64 || domain.contains('@') {
            return Err(invalid(
                "the part before @ is empty, too long, or there are two @",
            ));
        }
        let domain_ok = domain == "localhost"
            || (domain.contains('.')
                && domain
                    .split('.')
                    .all(|label| !label.is_empty() && !label.starts_with('-')));
        if !domain_ok {
            return Err(invalid("the domain is not a host name"));
        }
        Ok(Email(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Email {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Email::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

/// Validates a short, human-readable name (display name, project name): trimmed, 1 to `max`
/// characters, no control characters.
pub fn validate_name(field: &'static str, input: &str, max: usize) -> Result<String> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(
            Error::validation(format!("{field} must not be empty")).with_context("field", field)
        );
    }
    if trimmed.chars().count() > max {
        return Err(
            Error::validation(format!("{field} must be at most {max} characters"))
                .with_context("field", field),
        );
    }
    if has_control_chars(trimmed) {
        return Err(
            Error::validation(format!("{field} must not contain control characters"))
                .with_context("field", field),
        );
    }
    Ok(trimmed.to_owned())
}

/// Validates free text (a description): at most `max` characters; newlines and tabs allowed,
/// other control characters not.
pub fn validate_text(field: &'static str, input: &str, max: usize) -> Result<String> {
    if input.chars().count() > max {
        return Err(
            Error::validation(format!("{field} must be at most {max} characters"))
                .with_context("field", field),
        );
    }
    if input
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(
            Error::validation(format!("{field} must not contain control characters"))
                .with_context("field", field),
        );
    }
    Ok(input.to_owned())
}

/// User preferences: a JSON object of bounded size.
pub fn validate_preferences(value: &serde_json::Value) -> Result<()> {
    const MAX_BYTES: usize = 16 * 1024;
    if !value.is_object() {
        return Err(Error::validation("preferences must be a JSON object")
            .with_context("field", "preferences"));
    }
    let size = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_BYTES {
        return Err(
            Error::validation("preferences must be at most 16 KiB of JSON")
                .with_context("field", "preferences"),
        );
    }
    Ok(())
}

pub const DISPLAY_NAME_MAX: usize = 100;
pub const PROJECT_NAME_MAX: usize = 100;
pub const PROJECT_DESCRIPTION_MAX: usize = 2000;

/// A user as the rest of the system sees it (never with the password hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub display_name: String,
    pub preferences: serde_json::Value,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What registration stores. The password arrives already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub display_name: String,
    pub password_hash: String,
}

/// A partial update of a user's profile; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub display_name: Option<String>,
    pub preferences: Option<serde_json::Value>,
}

/// What login needs: the user's id and their stored password hash.
#[derive(Clone)]
pub struct Credentials {
    pub user_id: UserId,
    pub password_hash: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user_id", &self.user_id)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// A member's role in a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Editor,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
        }
    }

    /// Whether this role may change the project's contents and settings.
    pub fn can_edit(self) -> bool {
        matches!(self, Role::Owner | Role::Editor)
    }

    /// Whether this role may add, change and remove members, and delete the project.
    pub fn can_manage(self) -> bool {
        self == Role::Owner
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "owner" => Ok(Role::Owner),
            "editor" => Ok(Role::Editor),
            "viewer" => Ok(Role::Viewer),
            other => Err(
                Error::validation("role must be one of owner, editor, viewer")
                    .with_context("value", truncate_for_display(other)),
            ),
        }
    }
}

/// A project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub description: String,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A project together with the caller's role in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectWithRole {
    pub project: Project,
    pub role: Role,
}

#[derive(Debug, Clone)]
pub struct NewProject {
    pub name: String,
    pub description: String,
    /// Becomes the project's first owner.
    pub owner: UserId,
}

#[derive(Debug, Clone, Default)]
pub struct ProjectPatch {
    pub name: Option<String>,
    pub description: Option<String>,
}

/// A project member, with enough of the user to show in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub email: Email,
    pub display_name: String,
    pub role: Role,
    pub added_at: DateTime<Utc>,
}

/// Paging through a list ordered by id: at most `limit` items with ids after `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page<Id> {
    pub limit: u32,
    pub after: Option<Id>,
}

impl<Id> Page<Id> {
    pub const MAX_LIMIT: u32 = 200;

    /// A first page of `limit` items (clamped to 1..=200).
    pub fn first(limit: u32) -> Self {
        Page {
            limit: limit.clamp(1, Self::MAX_LIMIT),
            after: None,
        }
    }

    pub fn after(limit: u32, after: Option<Id>) -> Self {
        Page {
            limit: limit.clamp(1, Self::MAX_LIMIT),
            after,
        }
    }
}

/// The state of a job. Generic jobs use `queued → running → success | failed`; preview builds use
/// `queued → building → bundling → uploading → success | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Building,
    Bundling,
    Uploading,
    Success,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Running,
        JobState::Building,
        JobState::Bundling,
        JobState::Uploading,
        JobState::Success,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Building => "building",
            JobState::Bundling => "bundling",
            JobState::Uploading => "uploading",
            JobState::Success => "success",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether no further transition can happen.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Success | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                Error::validation("unknown job state")
                    .with_context("value", truncate_for_display(s))
            })
    }
}

/// A job record: what was asked, where it stands, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub kind: String,
    pub queue: String,
    pub project_id: Option<ProjectId>,
    pub user_id: Option<UserId>,
    pub state: JobState,
    /// From 0.0 to 1.0.
    pub progress: f64,
    pub phase: Option<String>,
    pub attempts: u32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub payload: serde_json::Value,
    pub result: Option<serde_json::Value>,
    /// While this job is unfinished, no other job of its queue has the same key.
    pub dedup_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub kind: String,
    pub queue: String,
    pub project_id: Option<ProjectId>,
    pub user_id: Option<UserId>,
    pub payload: serde_json::Value,
    /// When set, an unfinished job of the same queue with the same key is returned instead of
    /// creating this one.
    pub dedup_key: Option<String>,
}

/// A change to a running job's state and progress.
#[derive(Debug, Clone, PartialEq)]
pub struct JobUpdate {
    pub state: JobState,
    pub progress: f64,
    pub phase: Option<String>,
    /// Counts one more delivery attempt (set when a worker starts the job).
    pub new_attempt: bool,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub result: Option<serde_json::Value>,
    /// When set, the update applies only while the job's attempt count is this: a worker whose
    /// delivery was superseded by a later one (its lease expired) can no longer write.
    pub expected_attempts: Option<u32>,
}

impl JobUpdate {
    /// The same update, fenced to attempt `attempts` (see [`JobUpdate::expected_attempts`]).
    pub fn for_attempt(mut self, attempts: u32) -> Self {
        self.expected_attempts = Some(attempts);
        self
    }

    /// A terminal `cancelled` state, keeping `progress`.
    pub fn cancelled(progress: f64, why: impl Into<String>) -> Self {
        JobUpdate {
            state: JobState::Cancelled,
            progress,
            phase: Some("cancelled".to_owned()),
            new_attempt: false,
            error_code: None,
            error_message: Some(why.into()),
            result: None,
            expected_attempts: None,
        }
    }

    /// A progress step in a non-terminal state.
    pub fn progress(state: JobState, progress: f64, phase: impl Into<String>) -> Self {
        JobUpdate {
            state,
            progress,
            phase: Some(phase.into()),
            new_attempt: false,
            error_code: None,
            error_message: None,
            result: None,
            expected_attempts: None,
        }
    }

    /// The job finished successfully with an optional result.
    pub fn success(result: Option<serde_json::Value>) -> Self {
        JobUpdate {
            state: JobState::Success,
            progress: 1.0,
            phase: Some("done".to_owned()),
            new_attempt: false,
            error_code: None,
            error_message: None,
            result,
            expected_attempts: None,
        }
    }

    /// The job failed with a standard error code and a message.
    pub fn failed(code: impl Into<String>, message: impl Into<String>) -> Self {
        JobUpdate {
            state: JobState::Failed,
            progress: 1.0,
            phase: Some("failed".to_owned()),
            new_attempt: false,
            error_code: Some(code.into()),
            error_message: Some(message.into()),
            result: None,
            expected_attempts: None,
        }
    }
}

/// Filters for listing jobs; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    pub project_id: Option<ProjectId>,
    pub kind: Option<String>,
    /// Jobs submitted with this dedup key, finished or not (finding an earlier identical job).
    pub dedup_key: Option<String>,
}

/// How many jobs of a queue are in a state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCount {
    pub queue: String,
    pub state: JobState,
    pub count: u64,
}

/// A reference of a project repository as the `Store` keeps it: `refs/heads/main` → a commit id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub name: String,
    pub target: String,
}

/// A git object of a shared repository as the `Store` keeps it: its id, its loose-format bytes
/// and the ids of the stored objects it names (a commit's tree, a tree's subtrees), which
/// [`Store::get_repo_branch`](crate::ports::Store::get_repo_branch) follows. Objects stored
/// before links were kept read back with none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoObject {
    pub id: String,
    pub data: Vec<u8>,
    pub links: Vec<String>,
}

/// A reference's target and the stored objects reached from it by following links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoBranch {
    pub target: String,
    pub objects: Vec<RepoObject>,
}

/// What a compare-and-swap of a repository reference did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefUpdate {
    Updated,
    /// The reference was not at the expected value; nothing changed.
    Moved {
        current: Option<String>,
    },
}

/// An in-app notification for one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: NotificationId,
    pub user_id: UserId,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewNotification {
    pub user_id: UserId,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub data: serde_json::Value,
}

/// The phone platform a preview targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Ios,
    Android,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ios" => Ok(Platform::Ios),
            "android" => Ok(Platform::Android),
            other => Err(Error::validation("platform must be ios or android")
                .with_context("value", truncate_for_display(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_normalised_and_validated() {
        assert_eq!(
            Email::parse("  Ada@Example.ORG ").unwrap().as_str(),
            "ada@example.org"
        );
        assert_eq!(
            Email::parse("dev@localhost").unwrap().as_str(),
            "dev@localhost"
        );
        for bad in [
            "",
            "no-at",
            "@example.org",
            "a@b",
            "a b@example.org",
            "a@@example.org",
            "a@.org",
            "a@example..org",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("{}@example.org", "a".repeat(65));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(validate_name("name", "  Hive  ", 10).unwrap(), "Hive");
        assert!(validate_name("name", "   ", 10).is_err());
        assert!(validate_name("name", "a\u{7}b", 10).is_err());
        assert!(validate_name("name", &"x".repeat(11), 10).is_err());
        assert!(validate_text("description", "line\nline", 20).is_ok());
        assert!(validate_text("description", "bell\u{7}", 20).is_err());
    }

    #[test]
    fn preferences_must_be_a_small_object() {
        assert!(validate_preferences(&serde_json::json!({"theme": "dark"})).is_ok());
        assert!(validate_preferences(&serde_json::json!([1, 2])).is_err());
        let big = serde_json::json!({"x": "y".repeat(17 * 1024)});
        assert!(validate_preferences(&big).is_err());
    }

    #[test]
    fn roles_and_states_round_trip_their_wire_names() {
        for role in [Role::Owner, Role::Editor, Role::Viewer] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("admin".parse::<Role>().is_err());
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
        }
        assert!(Role::Owner.can_manage() && !Role::Editor.can_manage());
        assert!(Role::Editor.can_edit() && !Role::Viewer.can_edit());
    }

    #[test]
    fn ids_parse_and_reject_garbage() {
        let id = ProjectId::new();
        assert_eq!(id.to_string().parse::<ProjectId>().unwrap(), id);
        let err = "not-a-uuid".parse::<ProjectId>().unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Validation);
    }
}
