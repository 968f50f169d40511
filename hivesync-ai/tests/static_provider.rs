//! The static provider through the whole pipeline on fixture files, one per language: exact
//! outputs (`tests/expected/`), and the guarantees every edit keeps.
//!
//! `HIVESYNC_BLESS=1 cargo test -p hivesync-ai --test static_provider` rewrites the expected
//! files; review the diff before committing it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hivesync_ai::edits::{self, Edit};
use hivesync_ai::parse::parse;
use hivesync_ai::{AiOutcome, Chain};
use hivesync_core::ports::{
    AiAnswer, AiInput, AiProvider, AiReply, AiTask, Language, RenameReason, RenameSuggestion,
};

const FIXTURES: [&str; 6] = [
    "config.rs",
    "client.py",
    "store.js",
    "api.ts",
    "Badge.tsx",
    "broken.py",
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(dir().join("fixtures").join(name)).expect("fixture")
}

async fn run(name: &str, task: AiTask) -> AiOutcome {
    let language = Language::from_path(name).expect("language");
    let mut outcome = Chain::default()
        .run(task, language, &format!("src/{name}"), &fixture(name))
        .await
        .expect("the static chain answers");
    // How long a provider took is the one thing that differs between runs.
    for attempt in &mut outcome.attempts {
        attempt.millis = 0;
    }
    outcome
}

#[tokio::test]
async fn static_outputs_are_exactly_the_expected_ones() {
    let bless = std::env::var_os("HIVESYNC_BLESS").is_some();
    let mut mismatched = Vec::new();
    for name in FIXTURES {
        for task in AiTask::ALL {
            let outcome = run(name, task).await;
            // Twice: the same input gives the same bytes.
            assert_eq!(outcome, run(name, task).await, "{name} {task}");
            let actual = serde_json::to_string_pretty(&outcome).expect("json") + "\n";
            let path = dir().join("expected").join(format!("{name}.{task}.json"));
            if bless {
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(&path, &actual).expect("write");
                continue;
            }
            let expected = std::fs::read_to_string(&path).unwrap_or_default();
            if expected != actual {
                mismatched.push(format!("{}:\n{actual}", path.display()));
            }
        }
    }
    assert!(
        mismatched.is_empty(),
        "outputs differ from tests/expected (HIVESYNC_BLESS=1 rewrites them):\n{}",
        mismatched.join("\n")
    );
}

/// Every comment of `original` is in `edited`, byte for byte, where the edits moved it.
fn assert_comments_survive(name: &str, language: Language, original: &str, edits: &[Edit]) {
    let edited = edits::apply(original, edits);
    let parsed = parse(language, original).expect("parse");
    let comments = parsed.comments();
    assert!(!comments.is_empty(), "{name} has comments to keep");
    for range in comments {
        for edit in edits {
            let overlaps = if edit.start_byte == edit.end_byte {
                range.start < edit.start_byte && edit.start_byte < range.end
            } else {
                edit.start_byte < range.end && range.start < edit.end_byte
            };
            assert!(
                !overlaps,
                "{name}: an edit {edit:?} touches comment {range:?}"
            );
        }
        let shift: isize = edits
            .iter()
            .filter(|e| e.end_byte <= range.start)
            .map(|e| e.new_text.len() as isize - (e.end_byte - e.start_byte) as isize)
            .sum();
        let start = (range.start as isize + shift) as usize;
        let end = (range.end as isize + shift) as usize;
        assert_eq!(
            &edited[start..end],
            &original[range.clone()],
            "{name}: a comment changed"
        );
    }
}

#[tokio::test]
async fn edits_keep_every_comment_and_the_diff_applies() {
    for name in FIXTURES {
        let language = Language::from_path(name).unwrap();
        let original = fixture(name);
        for task in [AiTask::InlineComment, AiTask::RenameSuggestions] {
            let outcome = run(name, task).await;
            assert_eq!(outcome.provider, "static");
            assert_eq!(
                outcome.blob_id,
                hivesync_core::repo::blob_id(original.as_bytes()).unwrap()
            );
            assert_comments_survive(name, language, &original, &outcome.edits);
            let edited = edits::apply(&original, &outcome.edits);
            if outcome.edits.is_empty() {
                assert!(outcome.diff.is_empty());
                continue;
            }
            // The edited file still parses as well as the original did.
            let before = parse(language, &original).unwrap().has_errors();
            assert_eq!(
                parse(language, &edited).unwrap().has_errors(),
                before,
                "{name} {task}: the edits broke the syntax:\n{edited}"
            );
            assert_diff_applies(name, &original, &outcome.diff, &edited);
        }
    }
}

/// `git apply` takes the diff against the original and produces exactly the edited file.
fn assert_diff_applies(name: &str, original: &str, diff: &str, edited: &str) {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("src").join(name);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, original).unwrap();
    std::fs::write(work.path().join("change.diff"), diff).unwrap();
    let status = std::process::Command::new("git")
        .args(["apply", "change.diff"])
        .current_dir(work.path())
        .status()
        .expect("git runs");
    assert!(status.success(), "{name}: git apply refused:\n{diff}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), edited, "{name}");
}

/// A provider that answers what it is given: how the pipeline treats an answer, whoever gave it.
struct Answers(AiAnswer);

#[async_trait::async_trait]
impl AiProvider for Answers {
    fn name(&self) -> &str {
        "fixed"
    }
    fn model(&self) -> String {
        "fixed".to_owned()
    }
    async fn answer(&self, _input: &AiInput) -> hivesync_core::Result<AiReply> {
        Ok(AiReply {
            answer: self.0.clone(),
            warnings: Vec::new(),
            tokens_generated: 0,
        })
    }
}

fn rename(from: &str, to: &str) -> RenameSuggestion {
    RenameSuggestion {
        from: from.to_owned(),
        to: to.to_owned(),
        line: 1,
        reason: RenameReason::Other,
        explanation: String::new(),
    }
}

#[tokio::test]
async fn renames_cover_every_occurrence_and_skip_collisions() {
    let source = "fn run() -> usize {\n    let tmp = parse_config();\n    let config = 1;\n    tmp.len() + config\n}\nfn parse_config() -> String { String::new() }\n";
    // The rules would say `config`, which is taken: the static provider does not suggest it.
    let outcome = Chain::default()
        .run(AiTask::RenameSuggestions, Language::Rust, "a.rs", source)
        .await
        .unwrap();
    assert!(outcome.renames.is_empty(), "{:?}", outcome.renames);
    // A provider that does is overruled, with the reason; so is one renaming what the file does
    // not declare, or to a keyword, or to something that is not a name.
    let answer = AiAnswer::Renames {
        renames: vec![
            rename("tmp", "config"),
            rename("String", "Text"),
            rename("tmp", "fn"),
            rename("tmp", "two words"),
        ],
    };
    let outcome = Chain::new(vec![Arc::new(Answers(answer))])
        .run(AiTask::RenameSuggestions, Language::Rust, "a.rs", source)
        .await
        .unwrap();
    assert_eq!(outcome.provider, "fixed");
    assert!(outcome.renames.is_empty(), "{:?}", outcome.renames);
    assert!(outcome.edits.is_empty());
    assert_eq!(outcome.warnings.len(), 4, "{:?}", outcome.warnings);
    assert!(
        outcome.warnings[0].contains("collide"),
        "{:?}",
        outcome.warnings
    );
    assert!(
        outcome.warnings[1].contains("not declared"),
        "{:?}",
        outcome.warnings
    );

    let source = "fn run() -> usize {\n    let tmp = parse_config();\n    tmp.len() + tmp.capacity()\n}\nfn parse_config() -> String { String::new() }\n";
    let outcome = Chain::default()
        .run(AiTask::RenameSuggestions, Language::Rust, "a.rs", source)
        .await
        .unwrap();
    assert_eq!(outcome.renames.len(), 1, "{:?}", outcome.renames);
    assert_eq!(outcome.renames[0].to, "config");
    assert_eq!(outcome.edits.len(), 3);
    let edited = edits::apply(source, &outcome.edits);
    assert!(!edited.contains("tmp"), "{edited}");
    assert_eq!(edited.matches("config.").count(), 2, "{edited}");
}

#[tokio::test]
async fn the_static_provider_conforms() {
    hivesync_core::testkit::ai::run(&hivesync_ai::providers::static_analysis::StaticProvider).await;
}
