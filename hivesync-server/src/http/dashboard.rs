//! The admin dashboard at `/admin`: a static page whose script logs in through the API and
//! renders the admin views. The page itself holds no data; everything it shows comes from the
//! admin API with the admin's own token.

use poem::web::WithHeader;
use poem::{IntoResponse, Response, handler};

/// Scripts only from this origin, no inline code, no framing: the page renders server data
/// as text and takes no chances with it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset(body: &'static str, content_type: &'static str) -> WithHeader<WithHeader<Response>> {
    Response::builder()
        .content_type(content_type)
        .body(body)
        .with_header("content-security-policy", CSP)
        .with_header("x-content-type-options", "nosniff")
}

#[handler]
pub(crate) fn page() -> impl IntoResponse {
    asset(
        include_str!("../../assets/admin.html"),
        "text/html; charset=utf-8",
    )
}

#[handler]
pub(crate) fn script() -> impl IntoResponse {
    asset(
        include_str!("../../assets/admin.js"),
        "text/javascript; charset=utf-8",
    )
}

#[handler]
pub(crate) fn style() -> impl IntoResponse {
    asset(
        include_str!("../../assets/admin.css"),
        "text/css; charset=utf-8",
    )
}
