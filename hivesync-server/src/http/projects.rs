//! Projects (`/projects`, `/projects/{id}`) and their members (`/projects/{id}/members`).
//!
//! Authorization: a non-member gets the same `404 NOT_FOUND` for a project that exists as for one
//! that does not, so ids cannot be probed. Members get `403 FORBIDDEN` for what their role does not
//! allow: viewers read; editors also edit the project; owners also delete it and manage members.

use std::sync::Arc;

use hivesync_core::domain::{self, Email, NewProject, Page, ProjectId, ProjectPatch, Role, UserId};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use uuid::Uuid;

use super::error::ApiError;
use super::security::{BearerAuth, Caller};
use super::text::Text;
use super::views::{MemberList, MemberView, NoContent, ProjectList, ProjectView, RoleView};
use crate::state::AppState;

#[derive(Tags)]
enum ProjectTags {
    /// Projects the caller belongs to.
    Projects,
    /// Who belongs to a project, and with which role.
    Members,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
struct CreateProject {
    /// 1 to 100 characters, not all spaces, no control characters.
    #[oai(validator(
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    ))]
    name: Text,
    /// Up to 2000 characters; no control characters but newlines and tabs.
    #[oai(validator(
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
    ))]
    description: Option<Text>,
}

/// Fields to change; absent fields stay as they are.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
struct UpdateProject {
    /// 1 to 100 characters, not all spaces, no control characters.
    #[oai(validator(
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    ))]
    name: Option<Text>,
    /// Up to 2000 characters; no control characters but newlines and tabs.
    #[oai(validator(
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
    ))]
    description: Option<Text>,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
struct AddMember {
    /// The e-mail address of an existing account.
    #[oai(validator(
        max_length = 254,
        pattern = r"^\s*[!-?A-~]{1,64}@(localhost|[!-,/-?A-~][!-\-/-?A-~]*(\.[!-,/-?A-~][!-\-/-?A-~]*)+)\s*$"
    ))]
    email: Text,
    role: RoleView,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
struct ChangeRole {
    role: RoleView,
}

#[derive(ApiResponse)]
enum ProjectCreated {
    /// The project was created; the caller is its owner.
    #[oai(status = 201)]
    Created(Json<ProjectView>),
}

#[derive(ApiResponse)]
enum MemberAdded {
    /// The user is now a member.
    #[oai(status = 201)]
    Created(Json<MemberView>),
}

/// What an action needs of the caller's role.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Needs {
    Read,
    Edit,
    Manage,
}

/// The caller's role in `project`, if it is enough for `needs`. Non-members get `NOT_FOUND`.
pub(crate) async fn authorize(
    state: &AppState,
    caller: Caller,
    project: ProjectId,
    needs: Needs,
) -> Result<Role, ApiError> {
    let role = state
        .store
        .get_role(project, caller.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such project"))?;
    let allowed = match needs {
        Needs::Read => true,
        Needs::Edit => role.can_edit(),
        Needs::Manage => role.can_manage(),
    };
    if allowed {
        Ok(role)
    } else {
        Err(ApiError::forbidden(match needs {
            Needs::Edit => "only owners and editors can change this project",
            _ => "only owners can do this",
        }))
    }
}

#[derive(Debug)]
pub struct ProjectsApi {
    pub state: Arc<AppState>,
}

impl ProjectsApi {
    async fn authorize(
        &self,
        caller: Caller,
        project: ProjectId,
        needs: Needs,
    ) -> Result<Role, ApiError> {
        authorize(&self.state, caller, project, needs).await
    }

    async fn project_view(&self, project: ProjectId, role: Role) -> Result<ProjectView, ApiError> {
        let project = self
            .state
            .store
            .get_project(project)
            .await?
            .ok_or_else(|| ApiError::not_found("no such project"))?;
        Ok(ProjectView::new(project, role))
    }
}

#[OpenApi]
impl ProjectsApi {
    /// List the caller's projects
    ///
    /// Oldest first, `limit` (1 to 200, default 50) at a time; pass the previous page's
    /// `next_after` as `after` for the next one.
    #[oai(
        path = "/projects",
        method = "get",
        operation_id = "listProjects",
        tag = "ProjectTags::Projects"
    )]
    async fn list(
        &self,
        auth: BearerAuth,
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))] limit: Query<Option<u32>>,
        after: Query<Option<Uuid>>,
    ) -> Result<Json<ProjectList>, ApiError> {
        let limit = limit.0.unwrap_or(50);
        if limit == 0 || limit > Page::<ProjectId>::MAX_LIMIT {
            return Err(
                hivesync_core::Error::validation("limit must be between 1 and 200")
                    .with_context("field", "limit")
                    .into(),
            );
        }
        let page = Page::after(limit, after.0.map(ProjectId::from_uuid));
        let items: Vec<ProjectView> = self
            .state
            .store
            .list_projects_for_user(auth.0.user_id, page)
            .await?
            .into_iter()
            .map(ProjectView::from)
            .collect();
        let next_after = (items.len() == limit as usize)
            .then(|| items.last().map(|p| p.id))
            .flatten();
        Ok(Json(ProjectList { items, next_after }))
    }

    /// Create a project
    #[oai(
        path = "/projects",
        method = "post",
        operation_id = "createProject",
        tag = "ProjectTags::Projects"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        body: Json<CreateProject>,
    ) -> Result<ProjectCreated, ApiError> {
        let name = domain::validate_name("name", body.name.as_str(), domain::PROJECT_NAME_MAX)?;
        let description = domain::validate_text(
            "description",
            body.description.as_ref().map_or("", Text::as_str),
            domain::PROJECT_DESCRIPTION_MAX,
        )?;
        let project = self
            .state
            .store
            .create_project(NewProject {
                name,
                description,
                owner: auth.0.user_id,
            })
            .await?;
        // The repository is made now so the first sync finds it; should this fail, the first
        // sync makes it instead.
        let repos = self.state.repos.clone();
        let id = project.id;
        match tokio::task::spawn_blocking(move || repos.create(id)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(project_id = %id, error = ?err, "cannot create the project repository yet")
            }
            Err(err) => {
                tracing::warn!(project_id = %id, error = %err, "cannot create the project repository yet")
            }
        }
        tracing::info!(project_id = %project.id, "project created");
        Ok(ProjectCreated::Created(Json(ProjectView::new(
            project,
            Role::Owner,
        ))))
    }

    /// Get a project
    #[oai(
        path = "/projects/:id",
        method = "get",
        operation_id = "getProject",
        tag = "ProjectTags::Projects"
    )]
    async fn get(&self, auth: BearerAuth, id: Path<Uuid>) -> Result<Json<ProjectView>, ApiError> {
        let project = ProjectId::from_uuid(id.0);
        let role = self.authorize(auth.0, project, Needs::Read).await?;
        Ok(Json(self.project_view(project, role).await?))
    }

    /// Update a project
    ///
    /// Owners and editors.
    #[oai(
        path = "/projects/:id",
        method = "patch",
        operation_id = "updateProject",
        tag = "ProjectTags::Projects"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        id: Path<Uuid>,
        body: Json<UpdateProject>,
    ) -> Result<Json<ProjectView>, ApiError> {
        let project = ProjectId::from_uuid(id.0);
        let body = body.0;
        // Validation depends on the body alone, so answering it first reveals nothing about
        // the project.
        let patch = ProjectPatch {
            name: body
                .name
                .map(|n| domain::validate_name("name", n.as_str(), domain::PROJECT_NAME_MAX))
                .transpose()?,
            description: body
                .description
                .map(|d| {
                    domain::validate_text(
                        "description",
                        d.as_str(),
                        domain::PROJECT_DESCRIPTION_MAX,
                    )
                })
                .transpose()?,
        };
        let role = self.authorize(auth.0, project, Needs::Edit).await?;
        let updated = self.state.store.update_project(project, patch).await?;
        Ok(Json(ProjectView::new(updated, role)))
    }

    /// Delete a project
    ///
    /// Owners only. Removes the project and its memberships; its repository moves to
    /// `DATA_DIR/tmp`, where cleanup removes it after `TMP_RETENTION_SECONDS`.
    #[oai(
        path = "/projects/:id",
        method = "delete",
        operation_id = "deleteProject",
        tag = "ProjectTags::Projects"
    )]
    async fn delete(&self, auth: BearerAuth, id: Path<Uuid>) -> Result<NoContent, ApiError> {
        let project = ProjectId::from_uuid(id.0);
        self.authorize(auth.0, project, Needs::Manage).await?;
        self.state.store.delete_project(project).await?;
        let repos = self.state.repos.clone();
        match tokio::task::spawn_blocking(move || repos.retire(project)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::warn!(project_id = %project, error = ?err, "cannot retire the project repository")
            }
            Err(err) => {
                tracing::warn!(project_id = %project, error = %err, "cannot retire the project repository")
            }
        }
        if let Some(shared) = self.state.repos.shared().cloned() {
            // Its contents in the bucket: in the background, as there may be many.
            tokio::spawn(async move {
                match shared.remove_contents(project).await {
                    Ok(removed) => {
                        tracing::info!(project_id = %project, removed, "removed the deleted project's shared contents")
                    }
                    Err(err) => {
                        tracing::warn!(project_id = %project, error = ?err, "cannot remove the deleted project's shared contents")
                    }
                }
            });
        }
        tracing::info!(project_id = %project, "project deleted");
        Ok(NoContent::Done)
    }

    /// List a project's members
    #[oai(
        path = "/projects/:id/members",
        method = "get",
        operation_id = "listMembers",
        tag = "ProjectTags::Members"
    )]
    async fn members(
        &self,
        auth: BearerAuth,
        id: Path<Uuid>,
    ) -> Result<Json<MemberList>, ApiError> {
        let project = ProjectId::from_uuid(id.0);
        self.authorize(auth.0, project, Needs::Read).await?;
        let items = self
            .state
            .store
            .list_members(project)
            .await?
            .into_iter()
            .map(MemberView::from)
            .collect();
        Ok(Json(MemberList { items }))
    }

    /// Add a member
    ///
    /// Owners only. The new member is named by the e-mail address of their account: `409` when
    /// no account has it, or when it is already a member.
    #[oai(
        path = "/projects/:id/members",
        method = "post",
        operation_id = "addMember",
        tag = "ProjectTags::Members"
    )]
    async fn add_member(
        &self,
        auth: BearerAuth,
        id: Path<Uuid>,
        body: Json<AddMember>,
    ) -> Result<MemberAdded, ApiError> {
        let project = ProjectId::from_uuid(id.0);
        let email = Email::parse(body.email.as_str())?;
        self.authorize(auth.0, project, Needs::Manage).await?;
        let user = self
            .state
            .store
            .get_user_by_email(&email)
            .await?
            // 409, not 404: the project is there; the account the request names is not.
            .ok_or_else(|| {
                ApiError::from(
                    hivesync_core::Error::conflict(
                        "no account with this email; they must register first",
                    )
                    .with_context("field", "email"),
                )
            })?;
        let member = self
            .state
            .store
            .add_member(project, user.id, body.role.into())
            .await?;
        tracing::info!(project_id = %project, user_id = %user.id, role = %member.role, "member added");
        Ok(MemberAdded::Created(Json(member.into())))
    }

    /// Change a member's role
    ///
    /// Owners only. The last owner cannot be demoted (409).
    #[oai(
        path = "/projects/:id/members/:user_id",
        method = "patch",
        operation_id = "changeMemberRole",
        tag = "ProjectTags::Members"
    )]
    async fn change_role(
        &self,
        auth: BearerAuth,
        id: Path<Uuid>,
        user_id: Path<Uuid>,
        body: Json<ChangeRole>,
    ) -> Result<Json<MemberView>, ApiError> {
        let project = ProjectId::from_uuid(id.0);
        self.authorize(auth.0, project, Needs::Manage).await?;
        let member = self
            .state
            .store
            .set_member_role(project, UserId::from_uuid(user_id.0), body.role.into())
            .await?;
        tracing::info!(project_id = %project, user_id = %member.user_id, role = %member.role, "member role changed");
        Ok(Json(member.into()))
    }

    /// Remove a member
    ///
    /// Owners remove anyone; every member may remove themselves (leave). The last owner cannot
    /// leave (409).
    #[oai(
        path = "/projects/:id/members/:user_id",
        method = "delete",
        operation_id = "removeMember",
        tag = "ProjectTags::Members"
    )]
    async fn remove_member(
        &self,
        auth: BearerAuth,
        id: Path<Uuid>,
        user_id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let project = ProjectId::from_uuid(id.0);
        let target = UserId::from_uuid(user_id.0);
        let leaving = target == auth.0.user_id;
        self.authorize(
            auth.0,
            project,
            if leaving { Needs::Read } else { Needs::Manage },
        )
        .await?;
        self.state.store.remove_member(project, target).await?;
        tracing::info!(project_id = %project, user_id = %target, "member removed");
        Ok(NoContent::Done)
    }
}
