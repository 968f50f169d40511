//! TEMPORARY placeholder while the real module is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    pub text: String,
    pub spans: Vec<std::ops::Range<usize>>,
}
pub fn redact(input: &str) -> Redacted {
    Redacted {
        text: input.to_owned(),
        spans: Vec::new(),
    }
}
