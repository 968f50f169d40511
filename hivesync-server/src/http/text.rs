//! A JSON string field that accepts only JSON strings.
//!
//! poem-openapi's `String` also accepts numbers and booleans (`{"name": 42}` becomes `"42"`);
//! a request with a wrong type must be a `VALIDATION_ERROR` instead. [`Ruled`] strings also
//! follow a rule the OpenAPI document states as a pattern (branch names, tree paths, imports).

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type,
};
use serde_json::Value;

/// A rule a text field follows beyond being a JSON string, stated in the OpenAPI document as a
/// pattern that may need look-aheads (which poem-openapi's validators, compiled by the `regex`
/// crate, cannot take): the document says the pattern, the server runs the check, and a test in
/// the rule's crate shows the two accept the same strings.
pub trait TextRule: Send + Sync + 'static {
    /// ECMA-262; none for a rule-less string.
    const PATTERN: Option<&'static str> = None;
    /// In characters.
    const MAX_LENGTH: Option<usize> = None;
    /// The field the rule is for, named in its error.
    const FIELD: &'static str = "";
    /// Why `raw` breaks the rule, if it does.
    fn check(_raw: &str) -> Result<(), String> {
        Ok(())
    }
}

/// A JSON string (or query parameter) that follows the rule `R`.
pub struct Ruled<R>(pub String, std::marker::PhantomData<R>);

/// Any string, as long as it arrives as a JSON string (field validators add their own rules).
#[derive(Debug)]
pub struct AnyText;

impl TextRule for AnyText {}

/// A string that must arrive as a JSON string.
pub type Text = Ruled<AnyText>;

impl<R> Ruled<R> {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<R> std::fmt::Debug for Ruled<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<R> Clone for Ruled<R> {
    fn clone(&self) -> Self {
        Ruled(self.0.clone(), std::marker::PhantomData)
    }
}

impl<R> PartialEq for Ruled<R> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<R> Eq for Ruled<R> {}

impl<R: TextRule> Ruled<R> {
    fn parse(raw: String) -> ParseResult<Self> {
        match R::check(&raw) {
            Ok(()) => Ok(Ruled(raw, std::marker::PhantomData)),
            Err(why) => Err(ParseError::custom(format!("field `{}`: {why}", R::FIELD))),
        }
    }
}

impl<R: TextRule> Type for Ruled<R> {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            pattern: R::PATTERN.map(str::to_owned),
            max_length: R::MAX_LENGTH,
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl<R: TextRule> ParseFromJSON for Ruled<R> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Self::parse(s),
            // Not `ParseError::expected_type`, which would echo the value (a password, say) back
            // in the error message.
            Some(_) => Err(ParseError::custom("expected a string")),
            None => Err(ParseError::expected_input()),
        }
    }
}

impl<R: TextRule> ParseFromParameter for Ruled<R> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Self::parse(value.to_owned())
    }
}

impl<R: TextRule> ToJSON for Ruled<R> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// A branch name (git's rules, and nothing git would read as another ref).
#[derive(Debug)]
pub struct BranchRule;

impl TextRule for BranchRule {
    const FIELD: &'static str = "branch";
    const PATTERN: Option<&'static str> = Some(hivesync_core::repo::BranchName::PATTERN);
    const MAX_LENGTH: Option<usize> = Some(200);
    fn check(raw: &str) -> Result<(), String> {
        hivesync_core::repo::BranchName::parse(raw)
            .map(drop)
            .map_err(|err| err.message().to_owned())
    }
}

/// A file's path in a project's tree.
#[derive(Debug)]
pub struct TreePathRule;

impl TextRule for TreePathRule {
    const FIELD: &'static str = "path";
    const PATTERN: Option<&'static str> = Some(hivesync_core::repo::RepoPath::PATTERN);
    const MAX_LENGTH: Option<usize> = Some(hivesync_core::repo::RepoPath::MAX_LEN);
    fn check(raw: &str) -> Result<(), String> {
        // Named in the message: a manifest's entries are not numbered in a parse error.
        hivesync_core::repo::RepoPath::parse(raw)
            .map(drop)
            .map_err(|err| {
                format!(
                    "{} ({:?})",
                    err.message(),
                    hivesync_core::domain::truncate_for_display(raw)
                )
            })
    }
}

/// What an import fetches: `HEAD`, a branch or tag, `refs/heads/…` or `refs/tags/…`.
#[derive(Debug)]
pub struct ImportRefRule;

impl TextRule for ImportRefRule {
    const FIELD: &'static str = "ref";
    const PATTERN: Option<&'static str> = Some(hivesync_core::repo::IMPORT_REF_PATTERN);
    /// `refs/heads/` and a branch name.
    const MAX_LENGTH: Option<usize> = Some(11 + 200);
    fn check(raw: &str) -> Result<(), String> {
        hivesync_core::repo::check_import_ref(raw).map_err(|err| err.message().to_owned())
    }
}

const IMPORT_URL_MAX_LENGTH: usize = 2048;

/// Where an import fetches from: `http(s)://` or `file://`, no credentials, query or fragment.
#[derive(Debug)]
pub struct ImportUrlRule;

impl TextRule for ImportUrlRule {
    const FIELD: &'static str = "url";
    const PATTERN: Option<&'static str> = Some(hivesync_core::repo::IMPORT_URL_PATTERN);
    const MAX_LENGTH: Option<usize> = Some(IMPORT_URL_MAX_LENGTH);
    fn check(raw: &str) -> Result<(), String> {
        static URL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new(hivesync_core::repo::IMPORT_URL_PATTERN)
                .expect("the import URL pattern compiles")
        });
        if raw.chars().count() <= IMPORT_URL_MAX_LENGTH && URL.is_match(raw) {
            Ok(())
        } else {
            Err(
                "cannot import from this URL: expected http://, https:// or file:// with a host \
                 name or IPv4 address, and no credentials, query or fragment"
                    .to_owned(),
            )
        }
    }
}
