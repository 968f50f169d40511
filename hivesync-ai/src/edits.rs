//! Suggestions become edits here, whichever provider made them, so that what an edit may touch is
//! decided once:
//!
//! - a doc comment is an insertion at the start of a line, above the definition (below a Python
//!   header), and only for a definition that has none: nothing existing is changed or removed;
//! - a rename replaces identifiers and nothing else (never text inside a comment or a string), at
//!   every occurrence in the file, and is dropped when the new name is taken, reserved or not an
//!   identifier, or when renaming would change more than the name;
//! - nothing inside a redacted span is edited (its text is not what the provider saw).

use std::collections::BTreeSet;
use std::ops::Range;

use hivesync_core::ports::{CommentSuggestion, Language, RenameSuggestion};
use serde::{Deserialize, Serialize};

use crate::parse::Parsed;

/// Replace `start_byte..end_byte` of the original (an insertion when they are equal) with
/// `new_text`. Lines are 1-based: the lines the replaced range covers (an insertion names the
/// line it goes before, `end_line` = `start_line` - 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    pub start_line: u32,
    pub end_line: u32,
    pub start_byte: usize,
    pub end_byte: usize,
    pub new_text: String,
}

/// What could not be placed, and why (reported with the result).
pub type Dropped = Vec<String>;

const MAX_COMMENT_LINES: usize = 40;
const MAX_COMMENT_BYTES: usize = 4000;

fn line_of(source: &str, byte: usize) -> u32 {
    source[..byte].bytes().filter(|b| *b == b'\n').count() as u32 + 1
}

fn touches(range: &Range<usize>, protected: &[Range<usize>]) -> bool {
    protected.iter().any(|p| {
        if range.start == range.end {
            p.start < range.start && range.start < p.end
        } else {
            range.start < p.end && p.start < range.end
        }
    })
}

/// Places doc comments: the edits, the comments placed (as placed) and what was dropped.
/// A suggestion names its definition by name and line; a line that is off
/// (models miscount) still finds the definition when its name is unique in the file.
pub fn comment_edits(
    parsed: &Parsed<'_>,
    comments: &[CommentSuggestion],
    protected: &[Range<usize>],
) -> (Vec<Edit>, Vec<CommentSuggestion>, Dropped) {
    let definitions = parsed.definitions();
    let newline = if parsed.source.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let mut edits: Vec<Edit> = Vec::new();
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    let mut placed = BTreeSet::new();
    for comment in comments {
        let by_line = definitions
            .iter()
            .position(|d| d.name == comment.symbol && d.name_row as u32 + 1 == comment.line);
        let by_name = || {
            let mut named = definitions
                .iter()
                .enumerate()
                .filter(|(_, d)| d.name == comment.symbol);
            match (named.next(), named.next()) {
                (Some((at, _)), None) => Some(at),
                _ => None,
            }
        };
        let Some(index) = by_line.or_else(by_name) else {
            dropped.push(format!(
                "no definition {} on line {} for a comment",
                comment.symbol, comment.line
            ));
            continue;
        };
        let definition = &definitions[index];
        if definition.documented {
            dropped.push(format!(
                "{} (line {}) is already documented",
                definition.name,
                definition.name_row + 1
            ));
            continue;
        }
        let Some((at, indent)) = &definition.doc_at else {
            dropped.push(format!(
                "{} (line {}) does not start its own line",
                definition.name,
                definition.name_row + 1
            ));
            continue;
        };
        let Some(text) = clean_comment(parsed.language, &comment.text) else {
            dropped.push(format!("the comment for {} is empty", definition.name));
            continue;
        };
        if !placed.insert(index) || touches(&(*at..*at), protected) {
            continue;
        }
        let new_text = format_comment(parsed.language, indent, &text, newline);
        kept.push(CommentSuggestion {
            symbol: definition.name.clone(),
            line: definition.name_row as u32 + 1,
            text,
        });
        let line = line_of(parsed.source, *at);
        edits.push(Edit {
            start_line: line,
            end_line: line - 1,
            start_byte: *at,
            end_byte: *at,
            new_text,
        });
    }
    edits.sort_by_key(|e| e.start_byte);
    kept.sort_by_key(|c| c.line);
    (edits, kept, dropped)
}

/// The comment's words without the markers a model may have added (`///`, `*`, quotes),
/// dedented but with the relative indentation of its lines kept, and bounded.
fn clean_comment(language: Language, text: &str) -> Option<String> {
    let markers: &[&str] = match language {
        Language::Rust => &["///", "//!", "//"],
        Language::Python => &["\"\"\"", "'''", "#"],
        _ => &["/**", "*/", "*", "//"],
    };
    let mut lines: Vec<String> = text
        .replace("\r\n", "\n")
        .lines()
        .map(|line| {
            let line: String = line
                .chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .collect();
            let trimmed = line.trim_start();
            let unmarked = markers
                .iter()
                .find_map(|marker| trimmed.strip_prefix(marker))
                .map(|rest| rest.strip_prefix(' ').unwrap_or(rest).to_owned());
            let line = unmarked.unwrap_or(line);
            let line = match language {
                Language::Python => line.trim_end().trim_end_matches("\"\"\""),
                Language::Rust => line.trim_end(),
                _ => line.trim_end().trim_end_matches("*/"),
            };
            line.trim_end().to_owned()
        })
        .collect();
    let indent = lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    for line in &mut lines {
        if !line.is_empty() {
            line.drain(..indent);
        }
    }
    while lines.first().is_some_and(String::is_empty) {
        lines.remove(0);
    }
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines.truncate(MAX_COMMENT_LINES);
    let mut text = lines.join("\n");
    if text.len() > MAX_COMMENT_BYTES {
        let mut cut = MAX_COMMENT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    (!text.trim().is_empty()).then_some(text)
}

/// `text` as a doc comment in `language`'s own convention, each line starting with `indent`.
pub fn format_comment(language: Language, indent: &str, text: &str, newline: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    match language {
        Language::Rust => {
            for line in lines {
                if line.is_empty() {
                    out.push_str(&format!("{indent}///{newline}"));
                } else {
                    out.push_str(&format!("{indent}/// {line}{newline}"));
                }
            }
        }
        Language::Python => {
            // A docstring must not end its own literal early or escape its closing quotes.
            let escaped: Vec<String> = lines
                .iter()
                .map(|l| l.replace('\\', "\\\\").replace("\"\"\"", "\\\"\\\"\\\""))
                .collect();
            if let [only] = escaped.as_slice() {
                out.push_str(&format!("{indent}\"\"\"{only}\"\"\"{newline}"));
            } else {
                out.push_str(&format!("{indent}\"\"\"{}{newline}", escaped[0]));
                for line in &escaped[1..] {
                    if line.is_empty() {
                        out.push_str(newline);
                    } else {
                        out.push_str(&format!("{indent}{line}{newline}"));
                    }
                }
                out.push_str(&format!("{indent}\"\"\"{newline}"));
            }
        }
        Language::JavaScript | Language::TypeScript | Language::Tsx => {
            let safe: Vec<String> = lines.iter().map(|l| l.replace("*/", "*\\/")).collect();
            if let [only] = safe.as_slice() {
                out.push_str(&format!("{indent}/** {only} */{newline}"));
            } else {
                out.push_str(&format!("{indent}/**{newline}"));
                for line in &safe {
                    if line.is_empty() {
                        out.push_str(&format!("{indent} *{newline}"));
                    } else {
                        out.push_str(&format!("{indent} * {line}{newline}"));
                    }
                }
                out.push_str(&format!("{indent} */{newline}"));
            }
        }
    }
    out
}

/// Turns rename suggestions into edits: the renames kept (each with all its edits) and what was
/// dropped.
pub fn rename_edits(
    parsed: &Parsed<'_>,
    renames: &[RenameSuggestion],
    protected: &[Range<usize>],
) -> (Vec<Edit>, Vec<RenameSuggestion>, Dropped) {
    let declarations = parsed.declarations();
    let mut taken = parsed.identifier_names();
    let mut renamed = BTreeSet::new();
    let mut edits = Vec::new();
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for rename in renames {
        let Some(declaration) = declarations.iter().find(|d| d.name == rename.from) else {
            dropped.push(format!("{} is not declared in this file", rename.from));
            continue;
        };
        if renamed.contains(&rename.from) {
            continue;
        }
        let to = rename.to.trim();
        let valid = to
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && to.chars().all(|c| c.is_alphanumeric() || c == '_')
            && to != rename.from;
        if !valid {
            dropped.push(format!("{:?} is not a name for {}", rename.to, rename.from));
            continue;
        }
        if taken.contains(to) || parsed.reserved(to) {
            dropped.push(format!(
                "renaming {} to {to} would collide with an existing name",
                rename.from
            ));
            continue;
        }
        let Some(occurrences) = parsed.occurrences(&rename.from, declaration.role) else {
            dropped.push(format!(
                "{} is used where renaming would change more than the name",
                rename.from
            ));
            continue;
        };
        if occurrences.is_empty() || occurrences.iter().any(|r| touches(r, protected)) {
            dropped.push(format!("{} cannot be renamed safely here", rename.from));
            continue;
        }
        for range in occurrences {
            let line = line_of(parsed.source, range.start);
            edits.push(Edit {
                start_line: line,
                end_line: line,
                start_byte: range.start,
                end_byte: range.end,
                new_text: to.to_owned(),
            });
        }
        taken.insert(to.to_owned());
        renamed.insert(rename.from.clone());
        kept.push(RenameSuggestion {
            to: to.to_owned(),
            line: declaration.row as u32 + 1,
            ..rename.clone()
        });
    }
    edits.sort_by_key(|e| e.start_byte);
    (edits, kept, dropped)
}

/// `source` with `edits` applied. Edits must not overlap (the pipeline's never do); insertions
/// at the same place keep their order.
pub fn apply(source: &str, edits: &[Edit]) -> String {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| (e.start_byte, e.end_byte));
    let mut out = String::with_capacity(source.len() + edits.len() * 32);
    let mut at = 0;
    for edit in sorted {
        if edit.start_byte < at || edit.end_byte > source.len() {
            continue;
        }
        out.push_str(&source[at..edit.start_byte]);
        out.push_str(&edit.new_text);
        at = edit.end_byte;
    }
    out.push_str(&source[at..]);
    out
}

/// A unified diff (`git apply` reads it) from `old` to `new` of the file at `path`; empty when
/// they are the same.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}
