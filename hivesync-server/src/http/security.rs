//! Who is asking: the JWT bearer scheme.

use std::sync::Arc;

use hivesync_core::domain::UserId;
use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use super::error::ApiError;
use crate::state::AppState;

/// The authenticated caller of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
}

/// An access token from `POST /auth/login` or `POST /auth/register`, sent as
/// `Authorization: Bearer <token>`.
#[derive(Debug, SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_access_token")]
pub struct BearerAuth(pub Caller);

async fn check_access_token(req: &Request, bearer: Bearer) -> poem::Result<Caller> {
    let state = req
        .data::<Arc<AppState>>()
        .ok_or_else(|| poem::Error::from_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR))?;
    let claims = state
        .jwt
        .verify(&bearer.token)
        .map_err(|err| ApiError::unauthorized(err.message().to_owned()))?;
    Ok(Caller {
        user_id: claims.sub,
    })
}
