//! Secret redaction for source text that is about to leave the process.
//!
//! Every AI provider (a hosted model, a local one, a static analyser) is treated as a place a
//! secret can leak from: prompt logs, provider-side retention, crash reports. So a file goes
//! through [`redact`] before any provider sees it, and detection errs toward redacting: a
//! redacted non-secret costs one slightly worse suggestion, a leaked secret cannot be taken back.
//!
//! Redaction keeps line numbers. Providers answer by line ("a doc comment for the function on
//! line 42") and the pipeline applies those answers to the *original* file, so a secret is
//! replaced by [`PLACEHOLDER`] plus as many newlines as it spanned, and nothing else changes.
//! [`Redacted::spans`] tells the pipeline which original bytes no suggestion may edit.
//!
//! # What is detected
//!
//! - Fixed shapes that are secrets wherever they appear: PEM private key blocks, AWS access key
//!   ids, GitHub, Slack and OpenAI-style tokens, Slack webhook URLs, JWTs.
//! - Values assigned to secret-sounding names (`password = "…"`, `"apiKey": "…"`,
//!   `DB_PASSWORD=…`), AWS secret keys, and the password in `scheme://user:password@host`.
//! - Long, high-entropy runs that look random rather than like words, paths or UUIDs.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// What replaces each secret. Bracketed so it cannot be mistaken for an identifier or a value a
/// provider should reason about, and recognised on input so redacting twice changes nothing.
pub const PLACEHOLDER: &str = "[REDACTED]";

/// The text a provider may see, and where it differs from the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    /// The input with each secret replaced by [`PLACEHOLDER`] and the newlines the secret held,
    /// so every line keeps its number.
    pub text: String,
    /// Byte ranges in the *original* input that were redacted: sorted, non-overlapping, and
    /// never touching (adjacent detections are merged so one placeholder stands for them).
    pub spans: Vec<Range<usize>>,
}

/// Replaces every secret found in `input`.
///
/// Linear in the input apart from constant factors: each detector is one regex pass (compiled
/// once per process) plus scans that never revisit a byte more than a bounded number of times,
/// so a 1 MiB file costs milliseconds, not seconds.
pub fn redact(input: &str) -> Redacted {
    let mut found = Found {
        input,
        spans: Vec::new(),
    };
    pem_blocks(&mut found);
    fixed_shape_tokens(&mut found);
    aws_secret_keys(&mut found);
    url_passwords(&mut found);
    config_lines(&mut found);
    assignments(&mut found);
    high_entropy_runs(&mut found);
    let spans = merge(found.spans);
    let text = render(input, &spans);
    Redacted { text, spans }
}

/// Compiles a pattern that is a constant of this module; a failure is a bug caught by any test.
fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("redaction patterns are valid")
}

/// The detections so far, against the input they index into.
struct Found<'a> {
    input: &'a str,
    spans: Vec<Range<usize>>,
}

impl Found<'_> {
    fn add(&mut self, range: Range<usize>) {
        // Detectors only cut at ASCII bytes, which are always char boundaries; widening (never
        // narrowing) keeps a future mistake from either panicking or leaking part of a secret.
        let start = self.input.floor_char_boundary(range.start);
        let end = self.input.ceil_char_boundary(range.end);
        // A one-character value is a separator, a char literal or a stub (`PASSWORD_SEPARATOR:
        // char = '$'`); hiding it protects nothing.
        if end - start < 2 {
            return;
        }
        // Already-redacted text is left alone so that redacting twice is a no-op.
        if self.input[start..end].trim_end_matches(['\r', '\n']) == PLACEHOLDER {
            return;
        }
        self.spans.push(start..end);
    }
}

/// Sorts and merges overlapping or touching ranges.
fn merge(mut spans: Vec<Range<usize>>) -> Vec<Range<usize>> {
    spans.sort_by_key(|span| (span.start, span.end));
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    merged
}

/// The input with each span replaced; the newlines a span held are written back after the
/// placeholder so every later line keeps its number.
fn render(input: &str, spans: &[Range<usize>]) -> String {
    let mut text = String::with_capacity(input.len());
    let mut copied = 0;
    for span in spans {
        text.push_str(&input[copied..span.start]);
        text.push_str(PLACEHOLDER);
        let newlines = input[span.clone()].bytes().filter(|&b| b == b'\n').count();
        text.extend(std::iter::repeat_n('\n', newlines));
        copied = span.end;
    }
    text.push_str(&input[copied..]);
    text
}

// ---------------------------------------------------------------------------------------------
// Fixed shapes
// ---------------------------------------------------------------------------------------------

/// A PEM private key, from BEGIN to END. A BEGIN without END runs to the end of the input: a
/// truncated key is still a key, and guessing where it stops would leak its tail. The BEGIN line
/// must be followed by a line break (real, or `\n` inside a string literal) or by the key itself,
/// so prose and parsers that merely *name* the marker (`` `-----BEGIN PRIVATE KEY-----` ``,
/// `"-----BEGIN RSA PRIVATE KEY-----"`) do not hide the rest of their file.
static PEM_PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:[ \t]*\r?\n|\\r\\n|\\n|[A-Za-z0-9+/]).*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
    )
});

fn pem_blocks(found: &mut Found<'_>) {
    for m in PEM_PRIVATE_KEY.find_iter(found.input) {
        found.add(m.range());
    }
}

/// Token formats whose prefix alone makes them secrets, wherever they appear (comments, URLs,
/// test fixtures), so no surrounding context is required.
static FIXED_SHAPES: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        // AWS access key ids: the boundaries keep longer upper-case words from matching.
        r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)",
        // GitHub classic and fine-grained tokens.
        r"gh[pousr]_[A-Za-z0-9]{36,}",
        r"github_pat_[A-Za-z0-9_]{22,}",
        // Slack tokens and incoming webhooks (the whole URL is the credential).
        r"xox[bpars]-[A-Za-z0-9-]{10,}",
        r"https?://hooks\.slack\.com/services/[A-Za-z0-9_/-]+",
        // OpenAI-style keys (`sk-`, `sk-proj-`); the boundary keeps `task-…`/`disk-…` out.
        r"(?-u:\b)sk-[A-Za-z0-9_-]{20,}",
        // JWTs: a JSON header always base64url-encodes to `eyJ`.
        r"(?-u:\b)eyJ[A-Za-z0-9_-]{7,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
    ]
    .into_iter()
    .map(regex)
    .collect()
});

fn fixed_shape_tokens(found: &mut Found<'_>) {
    for pattern in FIXED_SHAPES.iter() {
        for m in pattern.find_iter(found.input) {
            found.add(m.range());
        }
    }
}

/// AWS secret keys are 40 base64 characters with no telling prefix, so only their assignment
/// (`aws_secret_access_key = …`, `"SecretAccessKey": "…"`) identifies them; unlike the general
/// assignment rule this one also takes an unquoted key that happens to contain no digit.
static AWS_SECRET_KEY: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r#"(?i-u)(?:aws_?)?secret_?access_?key["'`]?\]?[ \t]*(?::=|=>|=|:)[ \t]*["'`]?([A-Za-z0-9/+]{40})"#,
    )
});

fn aws_secret_keys(found: &mut Found<'_>) {
    let bytes = found.input.as_bytes();
    let mut spans = Vec::new();
    for captures in AWS_SECRET_KEY.captures_iter(found.input) {
        let Some(key) = captures.get(1) else { continue };
        // Exactly 40: a longer run is some other value the entropy rule can judge.
        let longer = bytes
            .get(key.end())
            .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'/' || b == b'+');
        if !longer {
            spans.push(key.range());
        }
    }
    for span in spans {
        found.add(span);
    }
}

/// `scheme://user:password@host`. The password runs to the *last* `@` of the authority, since
/// people paste passwords containing an unescaped `@`.
static URL_CREDENTIALS: LazyLock<Regex> =
    LazyLock::new(|| regex(r#"[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@\[\]"'`<>]*:([^\s/?#"'`<>]+)@"#));

/// Values that are templates, not secrets (`{password}`, `{{ xsrf_token }}`, `${DB_PASS}`, `%s`,
/// `***`): redacting them would only hide how the value is built.
static TEMPLATE: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"^(?:\{\{?[^{}]*\}?\}|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|%[sdr]|%\([A-Za-z_]+\)s|\*+)$")
});

/// Literals that only *frame* a credential (`"Bearer " + token`, `"Basic %s" % auth`): the
/// scheme is public and the code reads better with it.
static AUTH_SCHEME: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?i)^(?:bearer|basic|digest|token|negotiate)[ \t]*(?:%s|\{\}|\{[A-Za-z_0-9]*\})?$")
});

/// Whether a string literal assigned to a secret name holds a value (even `"changeme"`: a
/// literal is what gets committed) rather than a template or an auth scheme.
fn literal_is_secret(text: &str) -> bool {
    !TEMPLATE.is_match(text) && !AUTH_SCHEME.is_match(text)
}

fn url_passwords(found: &mut Found<'_>) {
    let mut spans = Vec::new();
    for captures in URL_CREDENTIALS.captures_iter(found.input) {
        if let Some(password) = captures.get(1)
            && !TEMPLATE.is_match(password.as_str())
        {
            spans.push(password.range());
        }
    }
    for span in spans {
        found.add(span);
    }
}

// ---------------------------------------------------------------------------------------------
// Assignments
// ---------------------------------------------------------------------------------------------

/// `.env` names that hold secrets when they merely *contain* one of these; env files name things
/// in one upper-case word soup (`STRIPEKEY`, `PGPASSWORD`), so parts cannot be relied on.
const ENV_MARKERS: [&str; 10] = [
    "KEY",
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "PWD",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "DSN",
];

/// `NAME=value` at the start of a line (optionally `export`ed): `.env` files, shell scripts,
/// properties files, and such text embedded in docstrings or heredocs. Code is almost never
/// written `name=value` without spaces, which is what lets an unquoted value count here.
static CONFIG_LINE: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?m-u)^([ \t]*)(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.\-]*)="));

fn config_lines(found: &mut Found<'_>) {
    let input = found.input;
    let bytes = input.as_bytes();
    let mut spans = Vec::new();
    for captures in CONFIG_LINE.captures_iter(input) {
        let (Some(whole), Some(indent), Some(name)) =
            (captures.get(0), captures.get(1), captures.get(2))
        else {
            continue;
        };
        if bytes.get(whole.end()) == Some(&b'=') {
            continue; // `NAME==x` is a comparison
        }
        let name = name.as_str();
        let (value, quoted) = config_value(bytes, skip_blanks(bytes, whole.end()));
        let text = &input[value.clone()];
        let env_style = is_upper_snake(name)
            && (ENV_MARKERS.iter().any(|marker| name.contains(marker))
                || ((name.ends_with("URL") || name.ends_with("URI"))
                    && URL_CREDENTIALS.is_match(text)));
        // An indented lower-case `name=value` is as likely a keyword argument on a continuation
        // line (`    credentials=None, secure=None):`) as configuration; the assignment rule
        // still judges it as code.
        let config_style =
            indent.is_empty() && name_is_sensitive(name) && (quoted || !is_code(text));
        if env_style || config_style {
            spans.push(value);
        }
    }
    for span in spans {
        found.add(span);
    }
}

/// The value of a config line: inside its quotes (which, as in dotenv, may span lines), or the
/// rest of the line without a trailing ` # comment` and whitespace. Values may hold spaces,
/// `;` and `,`, so unlike in code they do not end there.
fn config_value(bytes: &[u8], start: usize) -> (Range<usize>, bool) {
    let line_end = line_end(bytes, start);
    if let Some(&quote) = bytes.get(start)
        && matches!(quote, b'"' | b'\'' | b'`')
    {
        return match closing_quote(bytes, start + 1, quote, true) {
            Some(close) => (start + 1..close, true),
            // Unterminated: everything after the quote on this line is the value.
            None => (start + 1..trim_end(bytes, start + 1, line_end), true),
        };
    }
    let mut end = line_end;
    if let Some(hash) = bytes[start..line_end]
        .windows(2)
        .position(|pair| matches!(pair[0], b' ' | b'\t') && pair[1] == b'#')
    {
        end = start + hash;
    }
    (start..trim_end(bytes, start, end), false)
}

/// A secret-sounding name, an assignment operator, and the start of a value. The keyword filter
/// in the pattern keeps the regex from stopping at every identifier; [`name_is_sensitive`] then
/// applies the real rule (keyword as a whole part or camelCase suffix).
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r#"(?i-u)[a-z0-9_.\-]*(?:passw(?:or)?d|pwd|secret|token|api_?key|access_?key|private_?key|auth|credential|passphrase)[a-z0-9_.\-]*["'`]?\]?[ \t]*(?::=|=>|=|:)"#,
    )
});

/// How far past `name:` a type annotation may run before its `= value` (`token: Option<String>
/// = None`). Bounded so a line of `a: a: a: …` cannot make the scan quadratic.
const MAX_ANNOTATION: usize = 200;

fn assignments(found: &mut Found<'_>) {
    let input = found.input;
    let bytes = input.as_bytes();
    let mut spans = Vec::new();
    let mut pos = 0;
    while let Some(m) = ASSIGNMENT.find_at(input, pos) {
        pos = m.end();
        let name_len = m
            .as_str()
            .bytes()
            .take_while(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            .count();
        // `scheme://x-access-token:…@host` is a URL's user name, which the URL rule handles.
        let url_user = m.start() >= 2 && &bytes[m.start() - 2..m.start()] == b"//";
        if url_user || !name_is_sensitive(&m.as_str()[..name_len]) {
            continue;
        }
        let op_is_colon = m.as_str().ends_with(':');
        let next = bytes.get(m.end()).copied();
        // `==`/`===` compare and `::` is a path, not an assignment.
        if (m.as_str().ends_with('=') && !m.as_str().ends_with(":=") && next == Some(b'='))
            || (op_is_colon && next == Some(b':'))
        {
            continue;
        }
        let start = skip_blanks(bytes, m.end());
        // `"token=" + value`, `` `--auth=` ``: the quote after the operator closes a literal or
        // code span that the name itself is in, so no value follows.
        if let Some(&quote) = bytes.get(start)
            && matches!(quote, b'"' | b'\'' | b'`')
            && inside_literal(bytes, m.start(), quote)
            && !m.as_str().contains(['"', '\'', '`'])
        {
            continue;
        }
        match parse_value(bytes, start) {
            Value::Literal { content, end } => {
                if literal_is_secret(&input[content.clone()]) {
                    spans.push(content);
                }
                // Whatever looked like an assignment inside the literal is part of its value.
                pos = end;
            }
            Value::Interpolated { end } => pos = end,
            Value::Bare(run) => {
                if op_is_colon && let Some(span) = annotated_default(bytes, start) {
                    pos = pos.max(span.end);
                    spans.push(span);
                    continue;
                }
                if looks_like_token(&input[run.clone()]) {
                    spans.push(run.clone());
                }
                // A bare run cannot hold another assignment worth reading on its own, and
                // skipping it keeps `a=a=a=…` linear.
                pos = pos.max(run.end);
            }
        }
    }
    for span in spans {
        found.add(span);
    }
}

/// How far back on a line [`inside_literal`] looks; bounded so that minified code, with many
/// candidates on one huge line, stays linear.
const MAX_LOOKBEHIND: usize = 512;

/// Whether `pos` is inside a `quote`-delimited literal opened earlier on its line (an odd number
/// of unescaped quotes before it), as `token` is in `"?token=" + t` or `` `--auth=` ``. When the
/// line starts further back than [`MAX_LOOKBEHIND`] the parity is unknown, and the answer is
/// "no": a wrong "yes" would skip a real secret, a wrong "no" only redacts some code.
fn inside_literal(bytes: &[u8], pos: usize, quote: u8) -> bool {
    let floor = pos.saturating_sub(MAX_LOOKBEHIND);
    let line_start = match bytes[floor..pos].iter().rposition(|&b| b == b'\n') {
        Some(offset) => floor + offset + 1,
        None if floor == 0 => 0,
        None => return false,
    };
    let mut open = false;
    let mut i = line_start;
    while i < pos {
        match bytes[i] {
            b'\\' => i += 1,
            b if b == quote => open = !open,
            _ => {}
        }
        i += 1;
    }
    open
}

/// A value after an assignment operator.
enum Value {
    /// A string literal: the bytes between the quotes, and where the literal ends.
    Literal { content: Range<usize>, end: usize },
    /// A literal that builds its value from code (`f"{x}"`, `` `${x}` ``): not a literal secret.
    Interpolated { end: usize },
    /// Anything else, up to the first byte that ends an expression in code.
    Bare(Range<usize>),
}

fn parse_value(bytes: &[u8], start: usize) -> Value {
    // String prefixes (`b"…"`, `r'…'`, `f"…"`) are part of the literal syntax, not the value.
    let prefix = bytes[start..]
        .iter()
        .take(2)
        .take_while(|b| matches!(b, b'r' | b'R' | b'b' | b'B' | b'u' | b'U' | b'f' | b'F'))
        .count();
    let open = start + prefix;
    let formatted = bytes[start..open].iter().any(|b| matches!(b, b'f' | b'F'));
    if let Some(&quote) = bytes.get(open)
        && matches!(quote, b'"' | b'\'' | b'`')
    {
        let triple = bytes.get(open..open + 3) == Some(&[quote; 3][..]);
        let literal = if triple {
            closing_triple(bytes, open + 3, quote).map(|close| (open + 3..close, close + 3))
        } else {
            closing_quote(bytes, open + 1, quote, quote == b'`')
                .map(|close| (open + 1..close, close + 1))
        };
        if let Some((content, end)) = literal {
            let text = &bytes[content.clone()];
            let interpolated = (formatted && text.contains(&b'{'))
                || (quote == b'`' && text.windows(2).any(|pair| pair == b"${"));
            return if interpolated {
                Value::Interpolated { end }
            } else {
                Value::Literal { content, end }
            };
        }
        // An unterminated quote is not a literal we can delimit; the bare rule judges it.
    }
    let end = bytes[start..]
        .iter()
        .position(|&b| {
            b.is_ascii_whitespace()
                || matches!(
                    b,
                    b';' | b',' | b')' | b']' | b'}' | b'"' | b'\'' | b'`' | b'&'
                )
        })
        .map_or(bytes.len(), |offset| start + offset);
    Value::Bare(start..end)
}

/// `name: Type = value` (Rust `let`/`const`, Python and TypeScript annotations): the value after
/// the annotation, if it is a literal or looks like a token.
fn annotated_default(bytes: &[u8], start: usize) -> Option<Range<usize>> {
    let limit = bytes.len().min(start + MAX_ANNOTATION);
    let mut i = start;
    while i < limit {
        match bytes[i] {
            // `'` may be a Rust lifetime (`&'static str`), so only `"` and `` ` `` end the scan.
            b'"' | b'`' | b';' | b'{' | b'}' | b'(' | b')' | b',' | b'\n' => return None,
            b'=' => break,
            _ => i += 1,
        }
    }
    if i >= limit {
        return None;
    }
    let before = bytes[i - 1];
    let after = bytes.get(i + 1).copied();
    if matches!(
        before,
        b'!' | b'<' | b'>' | b'=' | b':' | b'+' | b'-' | b'*' | b'/' | b'%' | b'|' | b'&' | b'^'
    ) || matches!(after, Some(b'=' | b'>'))
    {
        return None;
    }
    let value_start = skip_blanks(bytes, i + 1);
    match parse_value(bytes, value_start) {
        Value::Literal { content, .. }
            if std::str::from_utf8(&bytes[content.clone()]).is_ok_and(literal_is_secret) =>
        {
            Some(content)
        }
        Value::Bare(run)
            if std::str::from_utf8(&bytes[run.clone()]).is_ok_and(looks_like_token) =>
        {
            Some(run)
        }
        _ => None,
    }
}

/// Names whose value is a secret, matched as a whole `_`/`-`/`.`-separated part or as the
/// camelCase suffix of one. Suffix only, because a camelCase name is named for its last word:
/// `dbPassword` is a password, `passwordHash` and `tokenCount` are not.
fn name_is_sensitive(name: &str) -> bool {
    const SINGLE: [&str; 14] = [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "apikey",
        "accesskey",
        "privatekey",
        "secretkey",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "passphrase",
    ];
    const DOUBLE: [(&str, &str); 4] = [
        ("api", "key"),
        ("access", "key"),
        ("private", "key"),
        ("secret", "key"),
    ];
    let mut previous: Option<&str> = None;
    for part in name.split(['_', '-', '.']) {
        let words = camel_words(part);
        for (i, word) in words.iter().enumerate() {
            let ends_part = i + 1 == words.len();
            if ends_part {
                if SINGLE.iter().any(|k| word.eq_ignore_ascii_case(k)) {
                    return true;
                }
                if let Some(prev) = previous
                    && DOUBLE.iter().any(|(first, second)| {
                        prev.eq_ignore_ascii_case(first) && word.eq_ignore_ascii_case(second)
                    })
                {
                    return true;
                }
            }
            previous = Some(word);
        }
    }
    false
}

/// Splits `dbPassword` into `db`, `Password`; `APIKey` into `API`, `Key`; `utf8Name` into
/// `utf`, `8`, `Name`. ASCII only: non-ASCII bytes stay inside whatever word they are in.
fn camel_words(part: &str) -> Vec<&str> {
    let bytes = part.as_bytes();
    let mut words = Vec::new();
    let mut start = 0;
    for i in 1..bytes.len() {
        let (prev, cur) = (bytes[i - 1], bytes[i]);
        let next = bytes.get(i + 1).copied();
        let boundary = (prev.is_ascii_lowercase() && cur.is_ascii_uppercase())
            || (prev.is_ascii_uppercase()
                && cur.is_ascii_uppercase()
                && next.is_some_and(|b| b.is_ascii_lowercase()))
            || (prev.is_ascii_alphabetic() && cur.is_ascii_digit())
            || (prev.is_ascii_digit() && cur.is_ascii_alphabetic());
        if boundary {
            words.push(&part[start..i]);
            start = i;
        }
    }
    if start < bytes.len() {
        words.push(&part[start..]);
    }
    words
}

fn is_upper_snake(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && name.bytes().any(|b| b.is_ascii_uppercase())
}

/// A dotted or `::` path (`args.token`, `os.environ`, `std::env::var`), optionally called or
/// indexed: code that computes a secret rather than a secret.
static CODE_EXPRESSION: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"^[A-Za-z_$][A-Za-z0-9_$]*(?:(?:(?:\.|::)[A-Za-z_$][A-Za-z0-9_$]*)+(?:[(\[<].*)?|[(\[<].*)$",
    )
});

/// An unquoted config value that is code or a null, not a secret.
fn is_code(value: &str) -> bool {
    let first = value
        .split([' ', '\t', ',', ';', ')'])
        .next()
        .unwrap_or(value);
    matches!(
        first,
        "None"
            | "null"
            | "NULL"
            | "Null"
            | "nil"
            | "true"
            | "false"
            | "True"
            | "False"
            | "undefined"
    ) || CODE_EXPRESSION.is_match(value)
}

/// Whether an unquoted value in code is a literal token rather than an identifier, type or
/// expression: 8+ characters mixing letters and digits, with no brackets, and not shaped like a
/// member access, a path, a reference, a number or a name made of words. Values without a digit
/// (`get_password`, `String`) never qualify, which keeps `password: str` and `token = args.token`
/// untouched.
fn looks_like_token(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() >= 8
        && bytes.iter().any(u8::is_ascii_alphabetic)
        && bytes.iter().any(u8::is_ascii_digit)
        && !bytes
            .iter()
            .any(|b| matches!(b, b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'<' | b'>'))
        && !matches!(bytes[0], b'$' | b'&' | b'*' | b'@' | b'#' | b'!' | b'-')
        && !value.contains("::")
        && !CODE_EXPRESSION.is_match(value)
        && !NUMBER.is_match(value)
        // In code an identifier is a variable, constant or type (`Token2`, `__X32_SYSCALL_BIT`,
        // `db_pass_v2`); only one that reads as random rather than as words is a token.
        && !(IDENTIFIER.is_match(value) && looks_like_words(value))
}

/// A bare name in Rust, Python or JavaScript (`$` for the latter).
static IDENTIFIER: LazyLock<Regex> = LazyLock::new(|| regex(r"^[A-Za-z_$][A-Za-z0-9_$]*$"));

/// Numeric literals with separators, suffixes or units (`1_000_000u64`, `30000000ms`, `0xFF`).
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"^(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|[0-9][0-9_]*(?:\.[0-9_]+)?(?:[eE][+-]?[0-9]+)?)[A-Za-z]{0,5}[0-9]{0,3}$",
    )
});

// ---------------------------------------------------------------------------------------------
// High entropy
// ---------------------------------------------------------------------------------------------

/// Runs of base64/base64url/hex characters long enough to be a key. `=` only as trailing
/// padding, so `NAME=value` splits at the `=` and a name is never swallowed with its value.
static CANDIDATE_RUN: LazyLock<Regex> = LazyLock::new(|| regex(r"[A-Za-z0-9+/_\-]{32,}={0,2}"));

/// UUIDs are identifiers, not secrets; they act as separators inside a run (`/users/<uuid>/x`).
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
});

/// Real keys are 128 bits or more (32+ characters in hex or base64); shorter random-looking
/// strings are mostly ids, hashes in tables and test data.
const MIN_RANDOM_LEN: usize = 32;
/// Bits per character. Random base64 of this length scores about 4.5–5, English-like
/// identifiers mostly below 4.
const MIN_ENTROPY: f64 = 4.0;
/// Hex has only 16 symbols, so a random hex key scores 3.5–3.9 bits per character and could
/// never reach [`MIN_ENTROPY`]; this lower bar keeps 32/40/64-hex keys (API keys, HMAC secrets)
/// redactable. Hex in a URL or file path is exempt instead (see [`random_parts`]).
const MIN_HEX_ENTROPY: f64 = 3.0;

fn high_entropy_runs(found: &mut Found<'_>) {
    let input = found.input;
    let mut spans = Vec::new();
    for run in CANDIDATE_RUN.find_iter(input) {
        let mut piece_start = run.start();
        let uuids = UUID
            .find_iter(run.as_str())
            .map(|uuid| (run.start() + uuid.start(), run.start() + uuid.end()));
        for (uuid_start, uuid_end) in uuids.chain(std::iter::once((run.end(), run.end()))) {
            random_parts(input, piece_start..uuid_start, &mut spans);
            piece_start = uuid_end;
        }
    }
    for span in spans {
        found.add(span);
    }
}

/// The parts of `piece` that look random. A path (`src/very/long/module_name_2`, the
/// `github.com/org/repo/blob/<commit>/file` of a link) is judged segment by segment, so that a
/// token in a URL path is still caught while the words around it are not; in a path, a hex
/// segment is a commit or content hash, a public reference rather than a secret.
fn random_parts(input: &str, piece: Range<usize>, spans: &mut Vec<Range<usize>>) {
    let text = &input[piece.clone()];
    if text.len() < MIN_RANDOM_LEN {
        return;
    }
    if is_path(text) {
        let mut offset = piece.start;
        for segment in text.split('/') {
            if !segment.bytes().all(|b| b.is_ascii_hexdigit()) && looks_random(segment) {
                spans.push(offset..offset + segment.len());
            }
            offset += segment.len() + 1;
        }
    } else if looks_random(text) {
        spans.push(piece);
    }
}

/// Slash-separated names rather than base64 that happens to contain `/`: most segments read as
/// words.
fn is_path(text: &str) -> bool {
    let (mut segments, mut wordy) = (0usize, 0usize);
    for segment in text.split('/').filter(|segment| !segment.is_empty()) {
        segments += 1;
        // Short letter segments say nothing (random base64 is full of them); numbers (dates,
        // versions, ids) are path-like at any length.
        if segment.bytes().all(|b| b.is_ascii_digit())
            || (segment.len() >= 3 && looks_like_words(segment))
        {
            wordy += 1;
        }
    }
    wordy >= 2 && wordy * 2 > segments
}

/// Whether a run reads as random bytes rather than as something a person wrote.
fn looks_random(run: &str) -> bool {
    let bytes = run.as_bytes();
    if bytes.len() < MIN_RANDOM_LEN
        || !bytes.iter().any(u8::is_ascii_alphabetic)
        || !bytes.iter().any(u8::is_ascii_digit)
    {
        return false;
    }
    let hex = bytes.iter().all(u8::is_ascii_hexdigit);
    let threshold = if hex { MIN_HEX_ENTROPY } else { MIN_ENTROPY };
    shannon_entropy(bytes) >= threshold && !is_sequential(bytes) && (hex || !looks_like_words(run))
}

/// Alphabets and counting strings (`ABC…xyz0123456789`, `0123456789abcdef`) score high on
/// entropy but are tables and test inputs, not keys.
fn is_sequential(bytes: &[u8]) -> bool {
    let steps = bytes
        .windows(2)
        .filter(|pair| pair[1] == pair[0].wrapping_add(1))
        .count();
    steps * 2 > bytes.len()
}

/// Shannon entropy of the byte distribution, in bits per byte.
fn shannon_entropy(bytes: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let len = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = f64::from(count) / len;
            -p * p.log2()
        })
        .sum()
}

/// Identifiers, kebab/snake/camel names and path segments: text made of words. Split at
/// separators, each chunk of a name is one word (`EXTENSION`, `x86`) or a few words
/// (`PKCS8PrivateKey`, `FlushL1DCacheOnContextSwitch`): its case and letter/digit changes come
/// every three or more characters on average, it holds at most two numbers, and at most half its
/// words have one or two letters. Random text changes case or class every one or two characters,
/// so its chunks fall apart into tiny pieces. Most of a run (by length) must read as words; the
/// thresholds were tuned on identifiers from a few hundred crates and the Python standard
/// library against random base64, base64url, alphanumeric and base32 keys.
fn looks_like_words(run: &str) -> bool {
    /// Longer "words" are runs of random capitals (base32) rather than words.
    const MAX_WORD: usize = 24;
    let (mut total, mut wordy) = (0usize, 0usize);
    for chunk in run.split(['_', '-', '/', '+', '=', '.', '$']) {
        total += chunk.len();
        let pieces = camel_words(chunk);
        let numbers = pieces
            .iter()
            .filter(|piece| piece.bytes().all(|b| b.is_ascii_digit()))
            .count();
        let short = pieces
            .iter()
            .filter(|piece| piece.len() <= 2 && piece.bytes().all(|b| b.is_ascii_alphabetic()))
            .count();
        let letters = pieces.len() - numbers;
        let long = pieces.iter().any(|piece| piece.len() > MAX_WORD);
        let few = pieces.len() <= 2
            || (numbers <= 2
                && (short <= 1 || short * 2 <= letters)
                && pieces.len() * 3 <= chunk.len());
        if !long && few {
            wordy += chunk.len();
        }
    }
    total > 0 && wordy * 5 >= total * 3
}

// ---------------------------------------------------------------------------------------------
// Byte scanning helpers: all stop only at ASCII bytes, so every index they return is a char
// boundary of the `str` the bytes came from.
// ---------------------------------------------------------------------------------------------

fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |offset| from + offset)
}

fn skip_blanks(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .map_or(bytes.len(), |offset| from + offset)
}

fn trim_end(bytes: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && bytes[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    end
}

/// The index of the quote closing a literal whose content starts at `from`, honouring backslash
/// escapes; `None` if the line (or, for multi-line literals, the input) ends first.
fn closing_quote(bytes: &[u8], from: usize, quote: u8, multiline: bool) -> Option<usize> {
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'\n' if !multiline => return None,
            b if b == quote => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn closing_triple(bytes: &[u8], from: usize, quote: u8) -> Option<usize> {
    let mut i = from;
    while i + 2 < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote && bytes[i + 1] == quote && bytes[i + 2] == quote => return Some(i),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fake credentials, split so that secret scanners reading this file do not flag it; each has
    // the exact shape of the real thing.
    const AWS_KEY_ID: &str = concat!("AKIA", "IOSFODNN7EXAMPLE");
    const AWS_SECRET: &str = concat!("wJalrXUtnFEMI/K7MDENG/", "bPxRfiCYEXAMPLEKEY");
    const GITHUB_CLASSIC: &str = concat!("ghp_", "R8x2kQ7vN4mZ1tY6wB3cL9pH5jF0dS2aG7eK");
    const GITHUB_FINE_GRAINED: &str = concat!(
        "github_pat_",
        "11ABCDEFG0aZ9xY8wV7uT6_sR5qP4oN3mL2kJ1iH0gF9eD8cB7aZ6yX5wV4uT3sR2qP1oN0mL9kJ8iH7gF6eD5c"
    );
    const SLACK_BOT: &str = concat!("xoxb-", "2048613371-5120917834561-Zq8wK3vR7tY2mN6pB9cX4hJ1");
    const SLACK_WEBHOOK: &str = concat!(
        "https://hooks.slack.com/services/",
        "T024BE7LD/B08H3QK2N4F/x7Kq9vR2mZ4tY8wB3nC6pL1d"
    );
    const OPENAI_PROJECT: &str = concat!(
        "sk-proj-",
        "Zq8wK3vR7tY2mN6pB9cX4hJ1fG5dS0aE7uI3oP9lK2jH6gF4dS1aQ8wE5rT2yU7iO"
    );
    const OPENAI_LEGACY: &str = concat!("sk-", "T3BlbkFJx7Kq9vR2mZ4tY8wB3nC6pL1dQ5sE0uI2oA7h");
    const JWT: &str = concat!(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
        ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ",
        ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
    );
    /// Random-looking, but none of the fixed shapes: only the entropy rule can catch it.
    const RANDOM_KEY: &str = "Zq8wK3vR7tY2mN6pB9cX4hJ1fG5dS0aE7uI3oP9l";

    /// Asserts that redacting `original` removes exactly `secrets` (every occurrence) and
    /// changes nothing else: no secret left, same line count, spans on exactly the secret bytes,
    /// and every byte outside them identical.
    fn assert_redacts(original: &str, secrets: &[&str]) {
        let mut expected: Vec<Range<usize>> = secrets
            .iter()
            .flat_map(|secret| {
                original
                    .match_indices(secret)
                    .map(|(at, found)| at..at + found.len())
            })
            .collect();
        expected.sort_by_key(|span| (span.start, span.end));
        expected.dedup();
        assert!(
            secrets.iter().all(|secret| original.contains(secret)),
            "test bug: a secret is not in the input:\n{original}"
        );
        let redacted = redact(original);
        assert_eq!(
            redacted.spans, expected,
            "spans differ for:\n{original}\nredacted to:\n{}",
            redacted.text
        );
        for secret in secrets {
            assert!(
                !redacted.text.contains(secret),
                "{secret} survived in:\n{}",
                redacted.text
            );
        }
        assert_eq!(
            redacted.text.lines().count(),
            original.lines().count(),
            "line count changed:\n{}",
            redacted.text
        );
        assert_eq!(
            redacted.text.matches('\n').count(),
            original.matches('\n').count()
        );
        // Built by hand, independently of `render`: the original outside the secrets, and one
        // placeholder (plus the secret's newlines) for each.
        let mut text = String::new();
        let mut copied = 0;
        for span in &expected {
            text.push_str(&original[copied..span.start]);
            text.push_str("[REDACTED]");
            for _ in original[span.clone()].matches('\n') {
                text.push('\n');
            }
            copied = span.end;
        }
        text.push_str(&original[copied..]);
        assert_eq!(redacted.text, text);
    }

    /// Asserts that nothing in `original` is redacted.
    fn assert_untouched(original: &str) {
        let redacted = redact(original);
        let found: Vec<&str> = redacted
            .spans
            .iter()
            .map(|span| &original[span.clone()])
            .collect();
        assert!(
            found.is_empty(),
            "false positives {found:?} in:\n{original}"
        );
        assert_eq!(redacted.text, original);
    }

    /// Deterministic base64 that looks like key material.
    fn fake_base64(mut seed: u64, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(ALPHABET[(seed % 64) as usize])
            })
            .collect()
    }

    /// A PEM block of the given kind (`"RSA "`, `""`, ...) with a fake body.
    fn pem(kind: &str, seed: u64, newline: &str) -> String {
        let mut block = format!("-----BEGIN {kind}PRIVATE KEY-----{newline}");
        if kind == "ENCRYPTED " {
            block.push_str(&format!("Proc-Type: 4,ENCRYPTED{newline}{newline}"));
        }
        for line in 0..5 {
            block.push_str(&fake_base64(seed + line, 64));
            block.push_str(newline);
        }
        block.push_str(&fake_base64(seed + 99, 24));
        block.push_str("==");
        block.push_str(newline);
        block.push_str(&format!("-----END {kind}PRIVATE KEY-----"));
        block
    }

    #[test]
    fn fake_secrets_have_the_shapes_they_claim() {
        assert_eq!(AWS_KEY_ID.len(), 20);
        assert_eq!(AWS_SECRET.len(), 40);
        assert_eq!(GITHUB_CLASSIC.len(), 4 + 36);
        assert!(GITHUB_FINE_GRAINED.len() >= 11 + 22);
        assert!(OPENAI_LEGACY.len() >= 3 + 20);
        assert_eq!(JWT.split('.').count(), 3);
        assert!(shannon_entropy(RANDOM_KEY.as_bytes()) >= MIN_ENTROPY);
    }

    #[test]
    fn pem_private_keys_in_every_language() {
        for (kind, seed) in [
            ("RSA ", 1),
            ("EC ", 2),
            ("OPENSSH ", 3),
            ("DSA ", 4),
            ("ENCRYPTED ", 5),
            ("", 6),
        ] {
            let key = pem(kind, seed, "\n");
            let escaped = pem(kind, seed, "\\n");
            for source in [
                format!(
                    "use rsa::RsaPrivateKey;\n\nconst KEY_PEM: &str = r#\"{key}\"#;\n\nfn load() -> RsaPrivateKey {{\n    RsaPrivateKey::from_pkcs1_pem(KEY_PEM).unwrap()\n}}\n"
                ),
                format!(
                    "import jwt\n\nPRIVATE_KEY_PEM = \"\"\"{key}\"\"\"\n\ndef sign(claims):\n    return jwt.encode(claims, PRIVATE_KEY_PEM, algorithm=\"RS256\")\n"
                ),
                format!(
                    "const crypto = require(\"node:crypto\");\nconst signingKey = `{key}`;\nmodule.exports = (data) => crypto.sign(\"sha256\", Buffer.from(data), signingKey);\n"
                ),
                format!("APP_ENV=production\nTLS_PRIVATE_KEY=\"{key}\"\nPORT=8443\n"),
                format!("let key = \"{escaped}\";\nlet parsed = parse_pem(key);\n"),
            ] {
                let secret = if source.contains(&key) {
                    &key
                } else {
                    &escaped
                };
                assert_redacts(&source, &[secret.as_str()]);
            }
        }
    }

    #[test]
    fn pem_private_key_with_crlf_line_endings_keeps_line_count() {
        let key = pem("RSA ", 7, "\r\n");
        let source = format!("# deploy key\r\n{key}\r\n# end\r\n");
        assert_redacts(&source, &[key.as_str()]);
        assert_eq!(
            redact(&source).text,
            "# deploy key\r\n[REDACTED]\n\n\n\n\n\n\n\r\n# end\r\n"
        );
    }

    #[test]
    fn unterminated_pem_block_is_redacted_to_end_of_input() {
        let body = format!("{}\n{}\n", fake_base64(11, 64), fake_base64(12, 40));
        let source =
            format!("fn key() -> &'static str {{\n    \"-----BEGIN RSA PRIVATE KEY-----\n{body}");
        let start = source.find("-----BEGIN").expect("marker present");
        let redacted = redact(&source);
        assert_eq!(redacted.spans, vec![start..source.len()]);
        assert_eq!(
            redacted.text,
            "fn key() -> &'static str {\n    \"[REDACTED]\n\n\n"
        );
        assert_eq!(redacted.text.lines().count(), source.lines().count());
    }

    #[test]
    fn a_pem_marker_that_is_only_named_does_not_hide_the_file() {
        let source = "/// Accepts a key that starts with `-----BEGIN PRIVATE KEY-----`.\n\
                      const RSA_HEADER: &str = \"-----BEGIN RSA PRIVATE KEY-----\";\n\
                      pub fn is_pkcs1(pem: &str) -> bool {\n    pem.starts_with(RSA_HEADER)\n}\n";
        assert_untouched(source);
    }

    #[test]
    fn aws_access_key_ids_in_every_language() {
        let key = AWS_KEY_ID;
        for source in [
            format!(
                "use aws_sdk_s3::config::Credentials;\n\nfn credentials(secret: String) -> Credentials {{\n    Credentials::new(\"{key}\", secret, None, None, \"static\")\n}}\n"
            ),
            format!(
                "import boto3\n\ns3 = boto3.client(\n    \"s3\",\n    aws_access_key_id=\"{key}\",\n    aws_secret_access_key=load_secret(),\n)\n"
            ),
            format!(
                "const {{ S3Client }} = require(\"@aws-sdk/client-s3\");\nconst client = new S3Client({{ credentials: {{ accessKeyId: \"{key}\", secretAccessKey }} }});\n"
            ),
            format!("AWS_REGION=eu-west-1\nAWS_ACCESS_KEY_ID={key}\n"),
            // A temporary (STS) key id, in a comment.
            format!("// rotated ASIA{}\nfn main() {{}}\n", &key[4..]),
        ] {
            let secret = if source.contains(key) {
                key.to_owned()
            } else {
                format!("ASIA{}", &key[4..])
            };
            assert_redacts(&source, &[secret.as_str()]);
        }
        // Longer upper-case words are not key ids.
        assert_untouched("const LABEL: &str = \"AKIAIOSFODNN7EXAMPLEXTRA\";\n");
    }

    #[test]
    fn aws_secret_access_keys_in_every_language() {
        let secret = AWS_SECRET;
        for source in [
            format!(
                "let creds = Credentials::new(key_id, \"{secret}\", None, None, \"env\");\nlet aws_secret_access_key = \"{secret}\";\n"
            ),
            format!(
                "[default]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {secret}\n"
            ),
            format!(
                "const client = new S3Client({{ region, credentials: {{ secretAccessKey: \"{secret}\" }} }});\n"
            ),
            format!("AWS_SECRET_ACCESS_KEY={secret}\n"),
        ] {
            let mut secrets = vec![secret];
            if source.contains(AWS_KEY_ID) {
                secrets.push(AWS_KEY_ID);
            }
            assert_redacts(&source, &secrets);
        }
    }

    #[test]
    fn aws_secret_key_without_digits_is_caught_by_its_assignment() {
        let secret = "wJalrXUtnFEMIKMDENGbPxRfiCYEXAMPLEKEYabc";
        assert_eq!(secret.len(), 40);
        assert_redacts(&format!("aws_secret_access_key = {secret}\n"), &[secret]);
    }

    #[test]
    fn github_tokens_in_every_language() {
        let token = GITHUB_CLASSIC;
        for source in [
            format!(
                "let octocrab = Octocrab::builder()\n    .personal_token(\"{token}\".to_string())\n    .build()?;\n"
            ),
            format!(
                "from github import Github\n\ngh = Github(\"{token}\")\nrepo = gh.get_repo(\"hivesync/hivesync\")\n"
            ),
            format!(
                "import {{ Octokit }} from \"@octokit/rest\";\nconst octokit = new Octokit({{ auth: \"{token}\" }});\n"
            ),
            format!("GITHUB_TOKEN={token}\nGITHUB_REPOSITORY=hivesync/hivesync\n"),
        ] {
            assert_redacts(&source, &[token]);
        }
        for prefix in ["gho_", "ghu_", "ghs_", "ghr_"] {
            let other = format!("{prefix}{}", &token[4..]);
            assert_redacts(
                &format!("// leaked: {other} (revoked)\n"),
                &[other.as_str()],
            );
        }
        assert_redacts(
            &format!("git clone https://x-access-token:{GITHUB_FINE_GRAINED}@github.com/o/r.git\n"),
            &[GITHUB_FINE_GRAINED],
        );
    }

    #[test]
    fn slack_tokens_and_webhooks_in_every_language() {
        for secret in [SLACK_BOT, SLACK_WEBHOOK] {
            for source in [
                format!(
                    "let client = SlackClient::new(\"{secret}\");\nclient.post_message(\"#deploys\", \"done\").await?;\n"
                ),
                format!(
                    "from slack_sdk import WebClient\n\nclient = WebClient(\"{secret}\")\nclient.chat_postMessage(channel=\"#deploys\", text=\"done\")\n"
                ),
                format!(
                    "await fetch(\"{secret}\", {{ method: \"POST\", body: JSON.stringify({{ text: \"done\" }}) }});\n"
                ),
                format!("SLACK_NOTIFY={secret}\nSLACK_CHANNEL=#deploys\n"),
            ] {
                assert_redacts(&source, &[secret]);
            }
        }
        for prefix in ["xoxp-", "xoxa-", "xoxr-", "xoxs-"] {
            let other = format!("{prefix}{}", &SLACK_BOT[5..]);
            assert_redacts(&format!("# user token {other}\n"), &[other.as_str()]);
        }
    }

    #[test]
    fn openai_keys_in_every_language() {
        for key in [OPENAI_PROJECT, OPENAI_LEGACY] {
            for source in [
                format!(
                    "let config = OpenAIConfig::new().with_api_key(\"{key}\");\nlet client = Client::with_config(config);\n"
                ),
                format!(
                    "import openai\n\nopenai.api_key = \"{key}\"\nresponse = openai.chat.completions.create(model=\"gpt-4o\")\n"
                ),
                format!(
                    "import OpenAI from \"openai\";\nconst openai = new OpenAI({{ apiKey: \"{key}\" }});\n"
                ),
                format!("OPENAI_API_KEY={key}\nOPENAI_MODEL=gpt-4o-mini\n"),
            ] {
                assert_redacts(&source, &[key]);
            }
        }
        // `sk-` inside a word is not a key prefix.
        assert_untouched("const TASK: &str = \"task-scheduler-queue-drain-worker-pool\";\n");
    }

    #[test]
    fn jwts_in_every_language() {
        let jwt = JWT;
        for source in [
            format!("let claims = decode::<Claims>(\"{jwt}\", &key, &validation)?;\n"),
            format!("import requests\n\nrequests.get(url, headers={{\"X-Session\": \"{jwt}\"}})\n"),
            format!(
                "const res = await fetch(url, {{ headers: {{ \"X-Session\": \"{jwt}\" }} }});\n"
            ),
            format!("SESSION_JWT={jwt}\n"),
            format!("// curl -H 'Authorization: Bearer {jwt}' https://api.example.com/me\n"),
        ] {
            assert_redacts(&source, &[jwt]);
        }
    }

    #[test]
    fn password_style_assignments_redact_only_the_value() {
        let cases: &[(&str, &str)] = &[
            // Rust
            (
                "const DB_PASSWORD: &str = \"correct-horse-battery\";\n",
                "correct-horse-battery",
            ),
            (
                "let cfg = Config { password: \"s3cr3t!\".into(), ..Default::default() };\n",
                "s3cr3t!",
            ),
            (
                "static API_TOKEN: &'static str = \"tok-live-1234\";\n",
                "tok-live-1234",
            ),
            (
                "let client_secret: String = \"csec-8f2k\".to_owned();\n",
                "csec-8f2k",
            ),
            // Python
            ("password = \"changeme\"\n", "changeme"),
            ("DB_PASSWORD = 'p@ss w0rd'\n", "p@ss w0rd"),
            (
                "conn = psycopg.connect(host=\"db\", password=\"hunter22\")\n",
                "hunter22",
            ),
            ("settings = {\"apiKey\": \"abc-123-def\"}\n", "abc-123-def"),
            ("config.github.token = b\"tok_bytes\"\n", "tok_bytes"),
            ("private_key = r'raw\\key'\n", "raw\\key"),
            (
                "def connect(user, passwd=\"default-pw\"):\n    pass\n",
                "default-pw",
            ),
            (
                "class Cfg:\n    api_key: str = \"typed-default\"\n",
                "typed-default",
            ),
            // JavaScript / TypeScript
            (
                "const apiKey = `plain-template-key`;\n",
                "plain-template-key",
            ),
            (
                "const body = { \"client_secret\": \"csec_8f2k\" };\n",
                "csec_8f2k",
            ),
            (
                "login({ username: 'ada', password: 'letmein' });\n",
                "letmein",
            ),
            (
                "const accessToken: string = \"ts-typed-token\";\n",
                "ts-typed-token",
            ),
            ("const dbPassword = \"camel-case-pw\";\n", "camel-case-pw"),
            // Other languages the same files embed
            ("token := \"go-token-123\"\n", "go-token-123"),
            ("$config = ['auth' => 'basic-secret'];\n", "basic-secret"),
            ("secret = \"toml-secret\"\n", "toml-secret"),
            ("api_key: 8f3kz9q2m7x1b4\n", "8f3kz9q2m7x1b4"),
            ("redis:\n  auth: \"yaml-auth\"\n", "yaml-auth"),
            (
                "curl -d 'user=ada&password=Zx81Spectrum48k' https://x\n",
                "Zx81Spectrum48k",
            ),
        ];
        for (source, secret) in cases {
            assert_redacts(source, &[secret]);
        }
        assert_eq!(
            redact("password = \"changeme\"\n").text,
            "password = \"[REDACTED]\"\n"
        );
    }

    #[test]
    fn minified_lines_longer_than_the_lookbehind_still_redact() {
        // The long literal closes inside the lookbehind window but opened before it, so the
        // window alone would wrongly put `password` inside a string.
        let source = format!(
            "var t=\"{}\";var o={{user:\"ada\",password:\"hunter22\"}};\n",
            "q".repeat(2 * MAX_LOOKBEHIND)
        );
        assert_redacts(&source, &["hunter22"]);
    }

    #[test]
    fn code_that_computes_a_secret_is_not_redacted() {
        for source in [
            "password = get_password()\n",
            "token = os.environ[\"TOKEN\"]\n",
            "password = os.getenv(\"DB_PASSWORD\")\n",
            "let token = args.token;\n",
            "let api_key = std::env::var(\"API_KEY\")?;\n",
            "pub struct Login { pub token: Option<String>, pub password: String }\n",
            "def login(password: str, token: Optional[str] = None) -> bool:\n",
            "fn check(password: &str, token: &'static str) -> bool { false }\n",
            "password = \"\"\n",
            "if password == \"\" or token === undefined: pass\n",
            "self.token = token\n",
            "const headers = { authorization: `Bearer ${token}` };\n",
            "headers[\"Authorization\"] = f\"Bearer {token}\"\n",
            "req.headers.authorization = \"Bearer \" + token;\n",
            "const url = \"/api/login?token=\" + token;\n",
            "token_count = 5\n",
            "passwordHash = hash(pw)\n",
            "authorName = \"Jane\"\n",
            "tokenizer = Tokenizer(vocab_size=32000)\n",
            "let password_length: usize = 12;\n",
            "IFLA_INET6_TOKEN: _bindgen_ty_5 = 1\n",
            "let key: Curve25519SeedBin = derive(seed);\n",
            "secret = settings.secret_key\n",
            "token: token_v2_value,\n",
            "DATABASE_URL=postgres://localhost/app\n",
            "LOG_LEVEL=debug\nPORT=8080\n",
            "xsrf_token: '{{ xsrf_token }}',\n",
            "dsn = \"postgres://%s:%s@%s/app\" % (user, password, host)\n",
            "url = f\"postgres://{user}:{password}@{host}/app\"\n",
            "/// Pass `--jobserver-auth=` to child processes.\n",
        ] {
            assert_untouched(source);
        }
    }

    #[test]
    fn env_files_redact_secret_values_only() {
        let source = "# database\n\
            DATABASE_URL=postgres://app:Sup3rS3cret@db.internal:5432/app\n\
            REDIS_URL=redis://localhost:6379\n\
            STRIPE_SECRET_KEY=sk_live_51HqLyjWDarjtT1zdp7dcXYZ\n\
            export GITHUB_APP_TOKEN=\"opaque value with spaces\"\n\
            JWT_SECRET='single quoted'\n\
            PGPASSWORD=hunter2   # trailing comment\n\
            SENTRY_DSN=https://abc123@o0.ingest.sentry.io/42\n\
            MONKEY_AUTH_HEADER=x-key\n\
            LOG_LEVEL=debug\n\
            PORT=8080\n\
            APP_NAME=hivesync\n";
        assert_redacts(
            source,
            &[
                "postgres://app:Sup3rS3cret@db.internal:5432/app",
                "sk_live_51HqLyjWDarjtT1zdp7dcXYZ",
                "opaque value with spaces",
                "single quoted",
                "hunter2",
                "https://abc123@o0.ingest.sentry.io/42",
                "x-key",
            ],
        );
        let text = redact(source).text;
        assert!(text.contains("PGPASSWORD=[REDACTED]   # trailing comment\n"));
        assert!(text.contains("export GITHUB_APP_TOKEN=\"[REDACTED]\"\n"));
    }

    #[test]
    fn env_values_in_code_files_are_redacted_too() {
        for (source, secret) in [
            ("fn main() {}\n/*\nAPI_KEY=abcdef\n*/\n", "abcdef"),
            (
                "cat > .env <<EOF\nDB_PASSWORD=from heredoc\nEOF\n",
                "from heredoc",
            ),
            (
                "\"\"\"Example:\n\n    export AUTH_TOKEN=t0k3n\n\"\"\"\n",
                "t0k3n",
            ),
            ("spring.datasource.password=props-pw\n", "props-pw"),
            ("API_KEY=crlf-value\r\nPORT=1\r\n", "crlf-value"),
        ] {
            assert_redacts(source, &[secret]);
        }
    }

    #[test]
    fn passwords_in_urls_are_redacted_but_not_the_rest_of_the_url() {
        for (source, secret) in [
            (
                "let url = \"redis://:s3cret-pass@cache:6379/0\";\nlet client = redis::Client::open(url)?;\n",
                "s3cret-pass",
            ),
            (
                "engine = create_engine(\"postgresql://scott:tiger@localhost/test\")\n",
                "tiger",
            ),
            (
                "mongoose.connect(\"mongodb+srv://admin:P%40ssw0rd@cluster0.mongodb.net/db\");\n",
                "P%40ssw0rd",
            ),
            ("# amqp://guest:p@ss@rabbit:5672/\n", "p@ss"),
        ] {
            assert_redacts(source, &[secret]);
        }
        for source in [
            "let url = \"https://example.com:8443/path?x=1\";\n",
            "git clone git@github.com:hivesync/hivesync.git\n",
            "fetch(\"http://localhost:8080/api\")\n",
            "DSN_TEMPLATE = \"postgres://user:${DB_PASSWORD}@db/app\"\n",
        ] {
            assert_untouched(source);
        }
    }

    #[test]
    fn high_entropy_strings_in_every_language() {
        let key = RANDOM_KEY;
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let b64 = "3q2+7wAAAAB0ZXN0LWtleS1mb3ItaG1hYy0yNTY2NjY3Nzc4ODg5OTkw";
        for source in [
            format!(
                "const SIGNING_SALT: &[u8] = b\"{key}\";\nfn salt() -> &'static [u8] {{ SIGNING_SALT }}\n"
            ),
            format!(
                "HMAC_SEED = \"{b64}\"\n\ndef sign(msg):\n    return hmac.new(HMAC_SEED.encode(), msg, \"sha256\")\n"
            ),
            format!("const webhookSeed = '{key}';\nexport default webhookSeed;\n"),
            format!("SIGNING_SALT={key}\n"),
            format!("// fallback seed: {hex}\nfn main() {{}}\n"),
        ] {
            let secrets: Vec<&str> = [key, hex, b64]
                .into_iter()
                .filter(|secret| source.contains(secret))
                .collect();
            assert_redacts(&source, &secrets);
        }
    }

    #[test]
    fn ordinary_rust_is_left_alone() {
        assert_untouched(
            r##"//! Synchronises project trees; see https://docs.rs/tokio/latest/tokio/sync/struct.Mutex.html
use std::collections::HashMap;
use crate::storage::object_store::filesystem_object_store_with_atomic_rename_v2;

const PROJECT_ID: &str = "550e8400-e29b-41d4-a716-446655440000";
const GREETING_BASE64: &str = "aGVsbG8=";
const DOCS: &str = "https://github.com/hivesync/hivesync/blob/main/docs/ARCHITECTURE.md#secrets";
const COMMIT_LINK: &str =
    "https://github.com/rust-lang/rust/blob/3dd58676054223962cd915bb0934d1f9f489d4d2/library/core/src/lib.rs";
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub struct Credentials {
    pub token: Option<String>,
    pub password: String,
}

pub fn this_is_a_very_long_function_name_for_tests_2(token: &str, password: &str) -> bool {
    let token_count = token.split_whitespace().count();
    let password_length: usize = password.len();
    let api_key = std::env::var("HIVESYNC_API_KEY").unwrap_or_default();
    let cache: HashMap<u64, Vec<u8>> = HashMap::with_capacity(1_000_000usize);
    token_count > 0 && password_length >= 12 && !api_key.is_empty() && cache.is_empty()
}

#[test]
fn parse_utf8_with_invalid_sequence_returns_error_variant_3() {
    let path = "src/components/settings/notification_preferences_panel_v2.rs";
    let target = "x86_64-unknown-linux-gnu";
    let symbol = "aws_lc_0_47_0_X509_EXTENSION_get_data";
    assert_eq!(path.len() + target.len() + symbol.len(), 121);
}
"##,
        );
    }

    #[test]
    fn ordinary_python_is_left_alone() {
        assert_untouched(
            r#""""Sync helpers; docs at https://hivesync.example.com/docs/api/v2/projects?page=2."""
import os
from typing import Optional

from hivesync.storage.object_store import filesystem_object_store_with_atomic_rename_v2

DEFAULT_PROJECT = "550e8400-e29b-41d4-a716-446655440000"
HELLO_B64 = "aGVsbG8="
ISSUE_URL = "https://github.com/hivesync/hivesync/issues/1234#issuecomment-987654321"


class Settings:
    password: str
    token: Optional[str] = None
    api_key: str = os.environ["HIVESYNC_API_KEY"]


def authenticate_user_with_password_and_totp_v2(username, password, token=None):
    password = get_password()
    token = os.environ["TOKEN"]
    secret = settings.secret_key
    if password == "":
        raise ValueError("password required")
    return check_password_hash(password, username) and verify_totp_2fa(token)


def test_encode_valid_windows_1257_to_cow_round_trips():
    assert encode("x", "windows-1257") == b"x"
"#,
        );
    }

    #[test]
    fn ordinary_javascript_is_left_alone() {
        assert_untouched(
            r#"import { createHash } from "node:crypto";
import { ObjectStoreClient } from "@hivesync/storage/object-store-client";
import lodashDebounceThrottleHelpers2 from "lodash/debounce-throttle-helpers-v2";

const PROJECT = "550e8400-e29b-41d4-a716-446655440000";
const hello = Buffer.from("aGVsbG8=", "base64").toString();
const docs = "https://developer.mozilla.org/en-US/docs/Web/API/SubtleCrypto/digest";

export async function fetchProjectNotificationPreferencesForUser2(token, password) {
  const headers = { authorization: `Bearer ${token}` };
  const apiKey = process.env.HIVESYNC_API_KEY;
  const secret = config.secret;
  const digest = createHash("sha256").update(password).digest("hex");
  const res = await fetch(`/api/v1/projects/${PROJECT}/notification-preferences`, { headers });
  return res.ok ? { digest, apiKey, secret, body: await res.json() } : null;
}
"#,
        );
    }

    #[test]
    fn uuids_paths_and_identifiers_are_not_high_entropy_secrets() {
        for run in [
            "550e8400-e29b-41d4-a716-446655440000",
            "/users/550e8400-e29b-41d4-a716-446655440000/settings/notifications",
            "this_is_a_very_long_function_name_for_tests",
            "test_parse_utf8_with_invalid_sequence_returns_error",
            "FlushL1DCacheOnContextSwitchOutOfTask",
            "NL80211_RATE_INFO_EHT_RU_ALLOC_996P484P242",
            "src/components/settings/notification_preferences_panel_v2",
            "com/golang/go/blob/3dd58676054223962cd915bb0934d1f9f489d4d2/src/internal",
            "0123456789abcdef0123456789abcdef",
        ] {
            assert_untouched(&format!("x(\"{run}\");\n"));
        }
    }

    #[test]
    fn overlapping_detections_merge_into_one_span() {
        // The JWT pattern stops at `+`, the entropy rule runs on through it: the spans overlap
        // and must come out as one.
        let tail = "+fG5dS0aE7uI3oP9lK2jH6gF4dS1";
        let blob = format!("{JWT}{tail}");
        let source = format!("let blob = \"{blob}\";\n");
        let jwt_start = source.find("eyJ").expect("jwt present");
        let signature_start = source.rfind('.').expect("jwt present") + 1;
        let redacted = redact(&source);
        assert!(
            shannon_entropy(&source.as_bytes()[signature_start..jwt_start + blob.len()]) >= 4.0
        );
        assert_eq!(redacted.spans, vec![jwt_start..jwt_start + blob.len()]);
        assert_eq!(redacted.text, "let blob = \"[REDACTED]\";\n");

        // A URL password inside an env value that is redacted as a whole.
        let env = "DATABASE_URL=postgres://admin:S3cr3tP4ss@db:5432/app\n";
        assert_eq!(redact(env).spans, vec![13..env.len() - 1]);
    }

    #[test]
    fn merge_sorts_and_joins_overlapping_and_touching_spans() {
        assert_eq!(
            merge(vec![10..12, 0..5, 3..8, 12..14, 20..30, 22..25]),
            vec![0..8, 10..14, 20..30]
        );
        assert_eq!(merge(Vec::new()), Vec::<Range<usize>>::new());
    }

    #[test]
    fn multibyte_text_around_secrets_keeps_char_boundaries() {
        let cases: Vec<(String, Vec<&str>)> = vec![
            (
                format!(
                    "// Schlüssel für Produktion 🔑\nlet clé = \"{GITHUB_CLASSIC}\"; // ключ\n"
                ),
                vec![GITHUB_CLASSIC],
            ),
            (format!("→{AWS_KEY_ID}←\n"), vec![AWS_KEY_ID]),
            (
                "password = \"pässwörd-日本語-🔒\"\n".to_owned(),
                vec!["pässwörd-日本語-🔒"],
            ),
            (
                "DB_PASSWORD=пароль 123 ✓\n".to_owned(),
                vec!["пароль 123 ✓"],
            ),
            (format!("ключ={RANDOM_KEY}。\n"), vec![RANDOM_KEY]),
            (format!("密钥 = \"{RANDOM_KEY}\" # 🔐\n"), vec![RANDOM_KEY]),
            (
                "url = \"https://josé:contraseña@ejemplo.es/\"\n".to_owned(),
                vec!["contraseña"],
            ),
        ];
        for (source, secrets) in &cases {
            let redacted = redact(source);
            for span in &redacted.spans {
                assert!(source.is_char_boundary(span.start) && source.is_char_boundary(span.end));
            }
            assert_redacts(source, secrets);
        }
    }

    #[test]
    fn redacting_twice_changes_nothing() {
        let source = format!(
            "{}\npassword = \"changeme\"\nDB_PASSWORD=hunter2\nTLS_KEY=\"{}\"\nlet t = \"{GITHUB_CLASSIC}\";\n",
            pem("EC ", 3, "\n"),
            pem("", 4, "\n"),
        );
        let once = redact(&source);
        assert!(once.spans.len() >= 5);
        let twice = redact(&once.text);
        assert_eq!(twice.spans, Vec::<Range<usize>>::new());
        assert_eq!(twice.text, once.text);
    }

    #[test]
    fn one_mebibyte_file_is_redacted_in_one_pass() {
        let block = format!(
            "fn handler_{{n}}(req: &Request) -> Response {{\n    let token = \"{GITHUB_CLASSIC}\";\n    let url = format!(\"https://api.example.com/v2/items/{{}}\", req.id());\n    respond(token, &url)\n}}\n\n"
        );
        let mut source = String::new();
        let mut blocks = 0;
        while source.len() < 1 << 20 {
            source.push_str(&block.replace("{n}", &blocks.to_string()));
            blocks += 1;
        }
        let started = std::time::Instant::now();
        let redacted = redact(&source);
        let elapsed = started.elapsed();
        assert_eq!(redacted.spans.len(), blocks);
        assert_eq!(redacted.text.lines().count(), source.lines().count());
        // Generous enough for an unoptimised build on a loaded machine; a quadratic scan of
        // 1 MiB would take minutes.
        assert!(elapsed.as_secs() < 20, "took {elapsed:?}");
    }

    #[test]
    fn adversarial_inputs_stay_fast() {
        let mib = 1 << 20;
        for unit in [
            "token: ",
            "password=",
            "\"password\": \"",
            "token = `",
            "a: a: a ",
            "http://a:",
        ] {
            let source = unit.repeat(mib / unit.len());
            let started = std::time::Instant::now();
            let redacted = redact(&source);
            assert_eq!(redacted.text.matches('\n').count(), 0);
            assert!(
                started.elapsed().as_secs() < 20,
                "{unit:?} took {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn name_matching_uses_parts_and_camel_case_suffixes() {
        for name in [
            "password",
            "DB_PASSWORD",
            "dbPassword",
            "github.token",
            "apiKey",
            "API_KEY",
            "x-api-key",
            "aws_secret_access_key",
            "clientSecret",
            "privateKey",
            "authToken",
            "OAuthToken",
            "passwd",
            "pwd",
            "auth",
            "Authorization",
            "credentials",
            "secret_name",
        ] {
            assert!(name_is_sensitive(name), "{name} should be sensitive");
        }
        for name in [
            "passwordHash",
            "tokenCount",
            "author",
            "tokenizer",
            "authMethod",
            "keyboard",
            "monkey",
            "apiKeyId",
            "secretive",
            "passwords_file",
        ] {
            assert!(!name_is_sensitive(name), "{name} should not be sensitive");
        }
    }
}
