//! `GET|PATCH /users/me`.

use std::collections::BTreeMap;
use std::sync::Arc;

use hivesync_core::domain::{self, UserPatch};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{Object, OpenApi, Tags};

use super::error::ApiError;
use super::security::BearerAuth;
use super::text::Text;
use super::views::UserView;
use crate::state::AppState;

#[derive(Tags)]
enum UserTags {
    /// The caller's profile.
    Users,
}

/// Fields to change; absent fields stay as they are.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
struct UpdateProfile {
    /// 1 to 100 characters, not all spaces, no control characters.
    #[oai(validator(
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    ))]
    display_name: Option<Text>,
    /// Replaces the stored preferences: a JSON object of at most 16 KiB; `null` resets them to
    /// `{}`.
    preferences: MaybeUndefined<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug)]
pub struct UsersApi {
    pub state: Arc<AppState>,
}

#[OpenApi(prefix_path = "/users", tag = "UserTags::Users")]
impl UsersApi {
    /// The caller's profile
    #[oai(path = "/me", method = "get", operation_id = "getMe")]
    async fn me(&self, auth: BearerAuth) -> Result<Json<UserView>, ApiError> {
        let user = self
            .state
            .store
            .get_user(auth.0.user_id)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
        Ok(Json(user.into()))
    }

    /// Update the caller's profile
    #[oai(path = "/me", method = "patch", operation_id = "updateMe")]
    async fn update_me(
        &self,
        auth: BearerAuth,
        body: Json<UpdateProfile>,
    ) -> Result<Json<UserView>, ApiError> {
        let body = body.0;
        let display_name = body
            .display_name
            .map(|name| {
                domain::validate_name("display_name", name.as_str(), domain::DISPLAY_NAME_MAX)
            })
            .transpose()?;
        let preferences = match body.preferences {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(serde_json::json!({})),
            MaybeUndefined::Value(preferences) => {
                let preferences = serde_json::Value::Object(preferences.into_iter().collect());
                domain::validate_preferences(&preferences)?;
                Some(preferences)
            }
        };
        let user = self
            .state
            .store
            .update_user(
                auth.0.user_id,
                UserPatch {
                    display_name,
                    preferences,
                },
            )
            .await
            .map_err(|err| match err.kind() {
                hivesync_core::ErrorKind::NotFound => {
                    ApiError::unauthorized("the account no longer exists")
                }
                _ => err.into(),
            })?;
        Ok(Json(user.into()))
    }
}
