//! Conditional requests: `If-None-Match` against an entity tag, with the `headers` crate's
//! weak comparison (RFC 9110 §13.1.2: `W/"x"` matches `"x"`, `*` matches anything).

use poem::web::headers::{ETag, Header, IfNoneMatch};

/// Whether `if_none_match` (the header's value, if sent) still matches `etag` (a quoted tag), so
/// the answer is `304 Not Modified`. An unparseable header matches nothing.
pub(crate) fn not_modified(if_none_match: Option<&str>, etag: &str) -> bool {
    let (Some(header), Ok(etag)) = (if_none_match, etag.parse::<ETag>()) else {
        return false;
    };
    let Ok(value) = poem::http::HeaderValue::from_str(header) else {
        return false;
    };
    IfNoneMatch::decode(&mut std::iter::once(&value))
        .is_ok_and(|condition| !condition.precondition_passes(&etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_match_weakly_and_star_matches_all() {
        let etag = "\"abc\"";
        assert!(not_modified(Some("\"abc\""), etag));
        assert!(not_modified(Some("W/\"abc\""), etag));
        assert!(not_modified(Some("\"x\", \"abc\""), etag));
        assert!(not_modified(Some("*"), etag));
        assert!(!not_modified(Some("\"abd\""), etag));
        assert!(!not_modified(None, etag));
        assert!(
            !not_modified(Some("abc"), etag),
            "an unquoted tag is not a tag"
        );
    }
}
