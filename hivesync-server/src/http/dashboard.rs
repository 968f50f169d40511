//! The static pages: the admin dashboard at `/admin`, whose script logs in through the API and
//! renders the admin views, and the preview page at `/preview` that a preview QR code opens. The
//! pages hold no data; everything they show comes from the API with the visitor's own token.

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

#[handler]
pub(crate) fn preview_page() -> impl IntoResponse {
    asset(
        include_str!("../../assets/preview.html"),
        "text/html; charset=utf-8",
    )
}

#[handler]
pub(crate) fn preview_script() -> impl IntoResponse {
    asset(
        include_str!("../../assets/preview.js"),
        "text/javascript; charset=utf-8",
    )
}
