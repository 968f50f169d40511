//! The JSON shapes the API sends, converted from domain types.

use chrono::{DateTime, Utc};
use hivesync_core::domain::{Member, Project, ProjectWithRole, Role, User};
use poem_openapi::{ApiResponse, Enum, Object};
use uuid::Uuid;

/// A member's role in a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum RoleView {
    /// Manages members, edits and deletes the project.
    Owner,
    /// Edits the project's contents and settings.
    Editor,
    /// Reads the project.
    Viewer,
}

impl From<Role> for RoleView {
    fn from(role: Role) -> Self {
        match role {
            Role::Owner => RoleView::Owner,
            Role::Editor => RoleView::Editor,
            Role::Viewer => RoleView::Viewer,
        }
    }
}

impl From<RoleView> for Role {
    fn from(role: RoleView) -> Self {
        match role {
            RoleView::Owner => Role::Owner,
            RoleView::Editor => Role::Editor,
            RoleView::Viewer => Role::Viewer,
        }
    }
}

/// A user's profile.
#[derive(Debug, Clone, Object)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    /// Free-form client preferences (a JSON object of at most 16 KiB).
    pub preferences: serde_json::Value,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        UserView {
            id: user.id.as_uuid(),
            email: user.email.to_string(),
            display_name: user.display_name,
            preferences: user.preferences,
            is_admin: user.is_admin,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// A project, with the caller's role in it.
#[derive(Debug, Clone, Object)]
pub struct ProjectView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The caller's role.
    pub role: RoleView,
}

impl ProjectView {
    pub fn new(project: Project, role: Role) -> Self {
        ProjectView {
            id: project.id.as_uuid(),
            name: project.name,
            description: project.description,
            created_by: project.created_by.as_uuid(),
            created_at: project.created_at,
            updated_at: project.updated_at,
            role: role.into(),
        }
    }
}

impl From<ProjectWithRole> for ProjectView {
    fn from(p: ProjectWithRole) -> Self {
        ProjectView::new(p.project, p.role)
    }
}

/// One page of projects.
#[derive(Debug, Clone, Object)]
pub struct ProjectList {
    pub items: Vec<ProjectView>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<Uuid>,
}

/// A project member.
#[derive(Debug, Clone, Object)]
pub struct MemberView {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: RoleView,
    pub added_at: DateTime<Utc>,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        MemberView {
            user_id: m.user_id.as_uuid(),
            email: m.email.to_string(),
            display_name: m.display_name,
            role: m.role.into(),
            added_at: m.added_at,
        }
    }
}

#[derive(Debug, Clone, Object)]
pub struct MemberList {
    pub items: Vec<MemberView>,
}

/// A `204 No Content` answer.
#[derive(Debug, ApiResponse)]
pub enum NoContent {
    /// Done.
    #[oai(status = 204)]
    Done,
}
