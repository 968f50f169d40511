//! The offline provider: everything from the parse, nothing from a model. Always available, the
//! last link of every chain, and deterministic (the same file gives the same bytes).

use std::collections::BTreeMap;

use async_trait::async_trait;
use heck::ToSnakeCase;
use hivesync_core::Result;
use hivesync_core::ports::{
    AiAnswer, AiInput, AiProvider, AiReply, AiTask, CommentSuggestion, FileSummary, Language,
    LineCounts, RenameSuggestion, Symbol,
};

use crate::parse::{Parsed, parse};

/// Changes whenever the same file would get a different answer (part of the result cache key).
pub const STATIC_VERSION: &str = concat!("static-", env!("CARGO_PKG_VERSION"), "/1");

/// A warning for input with syntax errors; the answer covers what parsed.
pub const SYNTAX_WARNING: &str =
    "the file has syntax errors: the answer covers the parts that parsed";

/// tree-sitter, heck and rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct StaticProvider;

#[async_trait]
impl AiProvider for StaticProvider {
    fn name(&self) -> &str {
        "static"
    }

    fn model(&self) -> String {
        STATIC_VERSION.to_owned()
    }

    async fn answer(&self, input: &AiInput) -> Result<AiReply> {
        answer(input)
    }
}

/// The static answer, synchronously (parsing is CPU work of a few milliseconds).
pub fn answer(input: &AiInput) -> Result<AiReply> {
    let parsed = parse(input.language, &input.content)?;
    let mut warnings = Vec::new();
    if parsed.has_errors() {
        warnings.push(SYNTAX_WARNING.to_owned());
    }
    let answer = match input.task {
        AiTask::FileSummary => AiAnswer::Summary(summary(&parsed, &input.path)),
        AiTask::InlineComment => AiAnswer::Comments {
            comments: comment_stubs(&parsed),
        },
        AiTask::RenameSuggestions => {
            let findings: Vec<RenameSuggestion> = parsed
                .findings()
                .into_iter()
                .map(|finding| RenameSuggestion {
                    from: finding.declaration.name,
                    to: finding.to,
                    line: finding.declaration.row as u32 + 1,
                    reason: finding.reason,
                    explanation: finding.explanation,
                })
                .collect();
            // The rules' own suggestions that could not be applied (a name taken, a shorthand
            // property) are not worth reporting: only what the pipeline will keep is answered.
            let (_, renames, _) = crate::edits::rename_edits(&parsed, &findings, &[]);
            AiAnswer::Renames { renames }
        }
    };
    Ok(AiReply {
        answer,
        warnings,
        tokens_generated: 0,
    })
}

/// Lines of code, comment and blank: a line is a comment line when everything on it is inside a
/// comment (or a docstring).
pub fn line_counts(parsed: &Parsed<'_>) -> LineCounts {
    let source = parsed.source;
    let lines: Vec<&str> = source.split_inclusive('\n').collect();
    let mut comment_bytes = vec![false; source.len()];
    for range in parsed.comments() {
        comment_bytes[range].iter_mut().for_each(|b| *b = true);
    }
    let mut counts = LineCounts {
        total: lines.len() as u32,
        ..LineCounts::default()
    };
    let mut offset = 0;
    for line in lines {
        let start = offset;
        offset += line.len();
        if line.trim().is_empty() {
            counts.blank += 1;
            continue;
        }
        let all_comment = line
            .char_indices()
            .filter(|(_, c)| !c.is_whitespace())
            .all(|(at, _)| comment_bytes[start + at]);
        if all_comment {
            counts.comment += 1;
        } else {
            counts.code += 1;
        }
    }
    counts
}

/// The summary: counts, top-level definitions, imports and the file's own first sentence.
pub fn summary(parsed: &Parsed<'_>, path: &str) -> FileSummary {
    let lines = line_counts(parsed);
    let symbols: Vec<Symbol> = parsed
        .definitions()
        .into_iter()
        .filter(|d| d.top_level)
        .map(|d| Symbol {
            kind: d.kind.to_owned(),
            name: d.name,
            line: d.name_row as u32 + 1,
            end_line: d.end_row as u32 + 1,
        })
        .collect();
    let imports = parsed.imports();
    let module_doc = parsed.module_doc();

    let mut text = format!(
        "{} file {path}: {} lines ({} code, {} comment, {} blank).",
        parsed.language.display_name(),
        lines.total,
        lines.code,
        lines.comment,
        lines.blank
    );
    if let Some(doc) = &module_doc {
        text.push_str(&format!(" It describes itself as: \"{doc}\""));
    }
    let mut by_kind: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for symbol in &symbols {
        by_kind
            .entry(symbol.kind.as_str())
            .or_default()
            .push(&symbol.name);
    }
    if by_kind.is_empty() {
        text.push_str(" It defines nothing at the top level.");
    } else {
        let parts: Vec<String> = by_kind
            .iter()
            .map(|(kind, names)| {
                format!(
                    "{} {} ({})",
                    names.len(),
                    plural(kind, names.len()),
                    listed(names)
                )
            })
            .collect();
        text.push_str(&format!(" It defines {}.", parts.join(", ")));
    }
    if !imports.is_empty() {
        let names: Vec<&str> = imports.iter().map(String::as_str).collect();
        text.push_str(&format!(" It imports {}.", listed(&names)));
    }
    FileSummary {
        text,
        lines,
        symbols,
        imports,
        module_doc,
    }
}

fn plural(kind: &str, count: usize) -> String {
    match (kind, count) {
        (_, 1) => kind.to_owned(),
        ("class", _) => "classes".to_owned(),
        ("static", _) => "statics".to_owned(),
        _ => format!("{kind}s"),
    }
}

/// Up to eight names, then how many more.
fn listed(names: &[&str]) -> String {
    const SHOWN: usize = 8;
    let mut text = names
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// A doc stub for each undocumented function, method and type.
pub fn comment_stubs(parsed: &Parsed<'_>) -> Vec<CommentSuggestion> {
    parsed
        .definitions()
        .into_iter()
        .filter(|d| !d.documented && d.doc_at.is_some())
        .filter(|d| !matches!(d.kind, "impl" | "module" | "macro"))
        .filter(|d| !(parsed.language == Language::Python && d.name.starts_with("__")))
        .map(|d| {
            let words = d.name.to_snake_case().replace('_', " ");
            let words = words.trim();
            let mut text = match d.kind {
                "function" | "method" => format!("{}.", capitalise(words)),
                "const" | "static" => format!("The {words} value."),
                _ => format!("A {words}."),
            };
            let is_function = matches!(d.kind, "function" | "method");
            match parsed.language {
                Language::Rust => {
                    if is_function
                        && d.returns
                            .as_deref()
                            .is_some_and(|r| r.starts_with("Result") || r.contains("::Result"))
                    {
                        text.push_str("\n\n# Errors\n\nReturns an error when it fails.");
                    }
                }
                Language::Python => {
                    if is_function && !d.params.is_empty() {
                        text.push_str("\n\nArgs:");
                        for param in &d.params {
                            text.push_str(&format!(
                                "\n    {param}: The {}.",
                                param.replace('_', " ")
                            ));
                        }
                    }
                }
                _ => {
                    if is_function {
                        let mut tags: Vec<String> =
                            d.params.iter().map(|p| format!("@param {p}")).collect();
                        if d.returns.as_deref().is_some_and(|r| r != "void") {
                            tags.push("@returns".to_owned());
                        }
                        if !tags.is_empty() {
                            text.push_str("\n\n");
                            text.push_str(&tags.join("\n"));
                        }
                    }
                }
            }
            CommentSuggestion {
                symbol: d.name,
                line: d.name_row as u32 + 1,
                text,
            }
        })
        .collect()
}

fn capitalise(words: &str) -> String {
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
