//! The `AiProvider` conformance suite.

use crate::ErrorKind;
use crate::ports::{AiAnswer, AiInput, AiProvider, AiTask, Language};

/// A small file per language, each with a function, a type and an import.
pub fn samples() -> Vec<(Language, &'static str, &'static str)> {
    vec![
        (
            Language::Rust,
            "src/lib.rs",
            "use std::fmt;\n\npub struct Point {\n    pub x: i32,\n}\n\npub fn origin() -> Point {\n    Point { x: 0 }\n}\n",
        ),
        (
            Language::Python,
            "app/point.py",
            "import math\n\nclass Point:\n    pass\n\ndef origin():\n    return Point()\n",
        ),
        (
            Language::JavaScript,
            "src/point.js",
            "import fs from 'fs';\n\nclass Point {}\n\nfunction origin() {\n  return new Point();\n}\n",
        ),
        (
            Language::TypeScript,
            "src/point.ts",
            "import { x } from './x';\n\ninterface Point { x: number }\n\nfunction origin(): Point {\n  return { x: 0 };\n}\n",
        ),
        (
            Language::Tsx,
            "src/Point.tsx",
            "import React from 'react';\n\ntype Props = { x: number };\n\nexport function Point({ x }: Props) {\n  return <b>{x}</b>;\n}\n",
        ),
    ]
}

/// Runs every point of [`AiProvider`]'s `# Behavior` list against `provider`.
pub async fn run(provider: &dyn AiProvider) {
    name_and_model_are_stable(provider);
    every_task_is_answered_in_kind(provider).await;
    broken_input_is_answered(provider).await;
}

fn name_and_model_are_stable(provider: &dyn AiProvider) {
    let name = provider.name().to_owned();
    assert!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
        "a provider's name is a short identifier: {name:?}"
    );
    assert_eq!(provider.name(), name, "the name does not change");
    let model = provider.model();
    assert!(!model.is_empty(), "{name}: the model is named");
    assert_eq!(provider.model(), model, "{name}: the model does not change");
}

async fn every_task_is_answered_in_kind(provider: &dyn AiProvider) {
    for (language, path, content) in samples() {
        for task in AiTask::ALL {
            let input = AiInput {
                task,
                language,
                path: path.to_owned(),
                content: content.to_owned(),
            };
            if let Err(reason) = provider.accepts(&input) {
                assert!(!reason.is_empty(), "a skip says why");
                continue;
            }
            let reply = match provider.answer(&input).await {
                Ok(reply) => reply,
                Err(err) => {
                    assert!(
                        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Validation),
                        "{}: a failure is Unavailable (or Validation for input nobody can answer): {err}",
                        provider.name()
                    );
                    continue;
                }
            };
            assert_eq!(
                reply.answer.task(),
                task,
                "{}: {language} {task} is answered in kind",
                provider.name()
            );
            match &reply.answer {
                AiAnswer::Summary(summary) => {
                    assert!(!summary.text.trim().is_empty(), "a summary says something");
                }
                AiAnswer::Comments { comments } => {
                    for comment in comments {
                        assert!(!comment.symbol.is_empty() && comment.line >= 1);
                    }
                }
                AiAnswer::Renames { renames } => {
                    for rename in renames {
                        assert!(!rename.to.is_empty() && rename.to != rename.from);
                    }
                }
            }
        }
    }
}

async fn broken_input_is_answered(provider: &dyn AiProvider) {
    let input = AiInput {
        task: AiTask::FileSummary,
        language: Language::Python,
        path: "broken.py".to_owned(),
        content: "def ok():\n    return 1\n\ndef broken(:\n    return 2\n".to_owned(),
    };
    if provider.accepts(&input).is_err() {
        return;
    }
    match provider.answer(&input).await {
        Ok(reply) => assert_eq!(reply.answer.task(), AiTask::FileSummary),
        Err(err) => assert_ne!(
            err.kind(),
            ErrorKind::Validation,
            "{}: a syntax error is answered as far as it goes, not refused",
            provider.name()
        ),
    }
}
