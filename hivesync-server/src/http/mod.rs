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
use poem::{Endpoint, EndpointExt, IntoResponse, Response, Route};
use poem_openapi::OpenApiService;

use crate::state::AppState;

pub mod admin;
pub mod ai;
pub mod auth;
mod conditional;
mod dashboard;
pub mod error;
pub mod health;
pub mod middleware;
pub mod preview;
pub mod projects;
pub mod security;
pub mod serve;
pub mod spec;
pub mod sync;
pub mod text;
pub mod users;
pub mod views;

/// The prefix of every API route.
pub const API_PREFIX: &str = "/api/v1";

type Apis = (
    auth::AuthApi,
    users::UsersApi,
    projects::ProjectsApi,
    sync::SyncApi,
    preview::PreviewApi,
    ai::AiApi,
    admin::AdminApi,
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
        sync::SyncApi {
            state: state.clone(),
        },
        preview::PreviewApi {
            state: state.clone(),
        },
        ai::AiApi {
            state: state.clone(),
        },
        admin::AdminApi {
            state: state.clone(),
        },
        health::HealthApi {
            state: state.clone(),
        },
    );
    OpenApiService::new(apis, "HiveSync", env!("CARGO_PKG_VERSION"))
        .description("Self-hostable backend for previewing React Native / Expo apps and documenting code with AI. No text may contain the NUL character (U+0000): a request with one, in its URL or its JSON body, is answered 400.")
        .server(API_PREFIX)
}

/// The OpenAPI document, as served at `/api/v1/openapi.json`.
pub fn openapi_json(state: &Arc<AppState>) -> String {
    spec::conformed(
        &api_service(state).spec(),
        &spec::configured_bounds(&state.config),
    )
}

/// The whole HTTP application.
pub fn app(state: Arc<AppState>) -> BoxEndpoint<'static, Response> {
    let service = api_service(&state);
    let document = spec::conformed(&service.spec(), &spec::configured_bounds(&state.config));
    let methods = Arc::new(spec::Methods::of(
        &document,
        API_PREFIX,
        &[
            (
                &format!("{API_PREFIX}/projects/{{id}}/files/{{*path}}"),
                &["GET"],
            ),
            (&format!("{API_PREFIX}/openapi.json"), &["GET"]),
            ("/metrics", &["GET"]),
            ("/admin", &["GET"]),
            ("/admin/admin.js", &["GET"]),
            ("/admin/admin.css", &["GET"]),
            ("/preview", &["GET"]),
            ("/preview/preview.js", &["GET"]),
        ],
    ));
    let spec = poem::endpoint::make_sync(move |_| {
        Response::builder()
            .content_type("application/json; charset=utf-8")
            .body(document.clone())
    });
    let docs = service.swagger_ui();
    let routes = Route::new()
        .nest(API_PREFIX, service)
        // Paths with `/` in them, which the OpenAPI `readFile` route cannot take.
        .at(
            format!("{API_PREFIX}/projects/:id/files/*path"),
            poem::get(sync::file_route),
        )
        .at(format!("{API_PREFIX}/openapi.json"), spec)
        .nest("/docs", docs)
        .at("/metrics", poem::get(metrics_endpoint))
        .at("/admin", poem::get(dashboard::page))
        .at("/admin/admin.js", poem::get(dashboard::script))
        .at("/admin/admin.css", poem::get(dashboard::style))
        .at("/preview", poem::get(dashboard::preview_page))
        .at("/preview/preview.js", poem::get(dashboard::preview_script))
        .around(move |ep, req| allow_methods(ep, req, methods.clone()));
    with_middleware(routes, state)
}

/// A `405` names the methods the path takes (`Allow`), as RFC 9110 asks.
async fn allow_methods<E: Endpoint>(
    ep: E,
    req: poem::Request,
    methods: Arc<spec::Methods>,
) -> poem::Result<Response> {
    let path = req.uri().path().to_owned();
    let response = match ep.call(req).await {
        Ok(output) => output.into_response(),
        Err(err) if err.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED => {
            error::standard_error_response(err).await
        }
        Err(err) => return Err(err),
    };
    if response.status() != poem::http::StatusCode::METHOD_NOT_ALLOWED {
        return Ok(response);
    }
    let mut response = response;
    if let Some(allow) = methods.allow(&path)
        && let Ok(value) = poem::http::HeaderValue::from_str(&allow)
    {
        response
            .headers_mut()
            .insert(poem::http::header::ALLOW, value);
    }
    Ok(response)
}

/// Wraps `routes` in the middleware every request passes through (see the module docs).
pub fn with_middleware<E>(routes: E, state: Arc<AppState>) -> BoxEndpoint<'static, Response>
where
    E: Endpoint + 'static,
{
    let limits = middleware::BodyLimits {
        json: state.config.http.max_body_bytes as u64,
        manifest: state.config.sync.max_manifest_bytes,
        upload: state.config.sync.max_upload_bytes,
    };
    routes
        .around(move |ep, req| middleware::limit_body(ep, req, limits))
        .with(CatchPanic::new().with_handler(error::panic_response))
        .catch_all_error(error::standard_error_response)
        .data(state)
        .around(middleware::request_context)
        .boxed()
}

/// `GET /metrics`: Prometheus exposition, for admins or the holder of `METRICS_TOKEN`.
#[poem::handler]
pub(crate) async fn metrics_endpoint(req: &poem::Request) -> poem::Result<Response> {
    use subtle::ConstantTimeEq;

    let state = req
        .data::<Arc<AppState>>()
        .ok_or_else(|| poem::Error::from_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR))?;
    let token = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| error::ApiError::unauthorized("metrics need a bearer token"))?;
    let metrics_token =
        state.config.metrics_token.as_ref().is_some_and(|expected| {
            bool::from(expected.expose().as_bytes().ct_eq(token.as_bytes()))
        });
    if !metrics_token {
        let claims = state
            .jwt
            .verify(token)
            .map_err(|e| error::ApiError::unauthorized(e.message().to_owned()))?;
        let admin = state
            .store
            .get_user(claims.sub)
            .await
            .map_err(error::ApiError::from)?
            .is_some_and(|user| user.is_admin);
        if !admin {
            return Err(error::ApiError::forbidden("metrics are for admins").into());
        }
    }
    let handle = state
        .metrics
        .clone()
        .unwrap_or_else(crate::metrics::install);
    let body = crate::metrics::render(state, &handle)
        .await
        .map_err(error::ApiError::from)?;
    Ok(Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body))
}
