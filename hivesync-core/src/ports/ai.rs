//! The `AiProvider` port: something that reads one source file and answers one documentation
//! task about it.
//!
//! Providers answer with *suggestions* (a summary, doc comments for named definitions, renames
//! of identifiers). Turning suggestions into edits of the file is not theirs to do: the pipeline
//! in `hivesync-ai` places every comment and every rename itself, against the parsed file, so the
//! guarantees about edits (an existing comment is never touched, a rename covers every
//! occurrence, a redacted span is never edited) hold whichever provider answered.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What is asked about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AiTask {
    FileSummary,
    InlineComment,
    RenameSuggestions,
}

impl AiTask {
    pub const ALL: [AiTask; 3] = [
        AiTask::FileSummary,
        AiTask::InlineComment,
        AiTask::RenameSuggestions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AiTask::FileSummary => "file_summary",
            AiTask::InlineComment => "inline_comment",
            AiTask::RenameSuggestions => "rename_suggestions",
        }
    }
}

impl fmt::Display for AiTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The languages the pipeline parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Rust,
    Python,
    JavaScript,
    TypeScript,
    Tsx,
}

impl Language {
    pub const ALL: [Language; 5] = [
        Language::Rust,
        Language::Python,
        Language::JavaScript,
        Language::TypeScript,
        Language::Tsx,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
            Language::Tsx => "tsx",
        }
    }

    /// The name people write (in summaries and prompts).
    pub fn display_name(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::JavaScript => "JavaScript",
            Language::TypeScript => "TypeScript",
            Language::Tsx => "TypeScript (TSX)",
        }
    }

    /// A language by its name (as [`Language::as_str`] writes it, any case; `js`, `ts`, `py`
    /// and `rs` too).
    pub fn parse(name: &str) -> Result<Language> {
        let lower = name.trim().to_ascii_lowercase();
        let language = match lower.as_str() {
            "rust" | "rs" => Language::Rust,
            "python" | "py" => Language::Python,
            "javascript" | "js" | "jsx" => Language::JavaScript,
            "typescript" | "ts" => Language::TypeScript,
            "tsx" => Language::Tsx,
            _ => return Err(unsupported_language(name)),
        };
        Ok(language)
    }

    /// The language of a file by its extension.
    pub fn from_path(path: &str) -> Result<Language> {
        let name = path.rsplit('/').next().unwrap_or(path);
        let extension = name
            .rsplit_once('.')
            .map(|(_, ext)| ext.to_ascii_lowercase())
            .unwrap_or_default();
        let language = match extension.as_str() {
            "rs" => Language::Rust,
            "py" | "pyi" => Language::Python,
            "js" | "mjs" | "cjs" | "jsx" => Language::JavaScript,
            "ts" | "mts" | "cts" => Language::TypeScript,
            "tsx" => Language::Tsx,
            _ => return Err(unsupported_language(path)),
        };
        Ok(language)
    }

    /// What [`Language::from_path`] accepts, for error messages.
    pub const EXTENSIONS: &'static str =
        ".rs, .py, .pyi, .js, .mjs, .cjs, .jsx, .ts, .mts, .cts, .tsx";
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn unsupported_language(what: &str) -> Error {
    Error::validation(format!(
        "unsupported language: supported are rust, python, javascript, typescript and tsx ({})",
        Language::EXTENSIONS
    ))
    .with_context("supported", "rust, python, javascript, typescript, tsx")
    .with_context("given", what.chars().take(64).collect::<String>())
}

/// One file as a provider sees it: already redacted (secrets replaced, line numbers kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiInput {
    pub task: AiTask,
    pub language: Language,
    /// The file's path in its project (for the prompt; never read).
    pub path: String,
    pub content: String,
}

/// A definition in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symbol {
    /// `function`, `method`, `struct`, `enum`, `trait`, `impl`, `type`, `class`, `interface`,
    /// `const`, `module`, ...
    pub kind: String,
    pub name: String,
    /// First and last line, 1-based.
    pub line: u32,
    pub end_line: u32,
}

/// Line counts of a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineCounts {
    pub total: u32,
    pub code: u32,
    pub comment: u32,
    pub blank: u32,
}

/// What a file is and holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSummary {
    /// The summary in prose.
    pub text: String,
    /// What the file parsed into; providers that only write prose leave these empty and the
    /// pipeline fills them from the parse.
    #[serde(default)]
    pub lines: LineCounts,
    #[serde(default)]
    pub symbols: Vec<Symbol>,
    #[serde(default)]
    pub imports: Vec<String>,
    /// The first sentence of the file's own module documentation, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_doc: Option<String>,
}

/// A doc comment for the definition named `symbol` that starts on `line` (1-based). `text` is
/// the comment's content without comment markers; the pipeline writes it in the language's
/// convention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentSuggestion {
    pub symbol: String,
    pub line: u32,
    pub text: String,
}

/// Why an identifier should be renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenameReason {
    /// It breaks its language's naming convention for its kind.
    Convention,
    /// It says nothing about what it holds (`tmp`, `data2`, a single letter).
    Vague,
    /// A boolean that does not read as a question (`is`, `has`, `should`).
    Boolean,
    /// A provider's own reason.
    Other,
}

/// Rename `from` to `to` (everywhere in the file), declared first on `line`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameSuggestion {
    pub from: String,
    pub to: String,
    pub line: u32,
    pub reason: RenameReason,
    /// In words, for people.
    #[serde(default)]
    pub explanation: String,
}

/// What a provider answers: the kind matches the task asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AiAnswer {
    Summary(FileSummary),
    Comments { comments: Vec<CommentSuggestion> },
    Renames { renames: Vec<RenameSuggestion> },
}

impl AiAnswer {
    /// The task this answers.
    pub fn task(&self) -> AiTask {
        match self {
            AiAnswer::Summary(_) => AiTask::FileSummary,
            AiAnswer::Comments { .. } => AiTask::InlineComment,
            AiAnswer::Renames { .. } => AiTask::RenameSuggestions,
        }
    }
}

/// An answer and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiReply {
    pub answer: AiAnswer,
    /// Problems that did not stop the answer (the file has syntax errors, the prompt was
    /// clipped).
    pub warnings: Vec<String>,
    /// Tokens the model generated (0 for providers without a model).
    pub tokens_generated: u32,
}

/// A source of documentation answers: the offline static analyser (embedded default), an
/// OpenAI-compatible endpoint, a local model.
///
/// # Behavior
///
/// - `name` is a short stable identifier (`static`, `openai`, `local`), and `model` names what
///   answers (a model name, or a version for providers without one): two answers from the same
///   name and model to the same input are interchangeable, which is what the result cache keys on.
/// - `answer` returns an [`AiAnswer`] of the kind of the task asked, or an error; never an answer
///   to another task.
/// - Answers are suggestions: a comment names a definition and the line its name is on (from 1);
///   a rename names a different, non-empty `to`. The pipeline checks each against the parsed
///   file and drops what does not fit, so a provider is not trusted with edits.
/// - A provider that cannot be used right now (no key, the endpoint down, output that does not
///   parse) fails with `Unavailable`, and a chain moves on to the next; `Validation` means the
///   input itself cannot be answered by any provider.
/// - Input that does not parse cleanly is answered as far as it goes, with a warning, not
///   refused.
#[async_trait]
pub trait AiProvider: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn model(&self) -> String;
    /// `Err(reason)` when this provider does not take `input` (too big for its context, a task
    /// it does not do); the chain records the reason and moves on.
    fn accepts(&self, input: &AiInput) -> std::result::Result<(), String> {
        let _ = input;
        Ok(())
    }
    async fn answer(&self, input: &AiInput) -> Result<AiReply>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_come_from_extensions_and_names() {
        assert_eq!(Language::from_path("src/lib.rs").unwrap(), Language::Rust);
        assert_eq!(Language::from_path("a/b.TSX").unwrap(), Language::Tsx);
        assert_eq!(Language::from_path("x.mjs").unwrap(), Language::JavaScript);
        assert_eq!(Language::from_path("x.d.ts").unwrap(), Language::TypeScript);
        assert_eq!(Language::parse("Py").unwrap(), Language::Python);
        for bad in ["README.md", "Makefile", "a.rs/b"] {
            let err = Language::from_path(bad).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Validation, "{bad}");
            assert!(err.message().contains("typescript"), "{}", err.message());
        }
        for language in Language::ALL {
            assert_eq!(Language::parse(language.as_str()).unwrap(), language);
        }
    }
}
