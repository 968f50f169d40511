//! The `/api/v1` HTTP service: routes, the OpenAPI spec, Swagger UI, and the middleware every
//! request passes through.
//!
//! A request flows: [`middleware::request_context`] (request id, span, access log) →
//! [`error::standard_error_response`] (any escaped error becomes `{code, message, details}`) →
//! `CatchPanic` (a panicking handler becomes a 500 in the same shape) →
//! [`middleware::limit_body`] → the route's handler, which checks who is asking through
//! [`security::BearerAuth`] and calls the ports on [`AppState`].

use std::sync::Arc;

use poem::endpoint::BoxEndpoint;
use poem::middleware::CatchPanic;
use poem::{Endpoint, EndpointExt, Response, Route};
use poem_openapi::OpenApiService;

use crate::state::AppState;

pub mod auth;
pub mod error;
pub mod health;
pub mod middleware;
pub mod projects;
pub mod security;
pub mod text;
pub mod users;
pub mod views;

/// The prefix of every API route.
pub const API_PREFIX: &str = "/api/v1";

type Apis = (
    auth::AuthApi,
    users::UsersApi,
    projects::ProjectsApi,
    health::HealthApi,
);

fn api_service(state: &Arc<AppState>) -> OpenApiService<Apis, ()> {
    let apis = (
        auth::AuthApi {
            state: state.clone(),
        },
        users::UsersApi {
            state: state.clone(),
        },
        projects::ProjectsApi {
            state: state.clone(),
        },
        health::HealthApi {
            state: state.clone(),
        },
    );
    OpenApiService::new(apis, "HiveSync", env!("CARGO_PKG_VERSION"))
        .description("Self-hostable backend for previewing React Native / Expo apps and documenting code with AI.")
        .server(API_PREFIX)
}

/// The OpenAPI document, as served at `/api/v1/openapi.json`.
pub fn openapi_json(state: &Arc<AppState>) -> String {
    api_service(state).spec()
}

/// The whole HTTP application.
pub fn app(state: Arc<AppState>) -> BoxEndpoint<'static, Response> {
    let service = api_service(&state);
    let spec = service.spec_endpoint();
    let docs = service.swagger_ui();
    let routes = Route::new()
        .nest(API_PREFIX, service)
        .at(format!("{API_PREFIX}/openapi.json"), spec)
        .nest("/docs", docs);
    with_middleware(routes, state)
}

/// Wraps `routes` in the middleware every request passes through (see the module docs).
pub fn with_middleware<E>(routes: E, state: Arc<AppState>) -> BoxEndpoint<'static, Response>
where
    E: Endpoint + 'static,
{
    let max_body = state.config.http.max_body_bytes;
    routes
        .around(move |ep, req| middleware::limit_body(ep, req, max_body))
        .with(CatchPanic::new().with_handler(error::panic_response))
        .catch_all_error(error::standard_error_response)
        .data(state)
        .around(middleware::request_context)
        .boxed()
}
