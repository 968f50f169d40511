//! Paths inside a project's tree, and branch names, validated so that nothing a client sends can
//! address anything outside the tree or inside `.git`.

use std::fmt;

use crate::domain::truncate_for_display;
use crate::error::{Error, Result};

/// A file's path inside a project: `/`-separated, relative, normalised.
///
/// Rules: UTF-8; `.` segments are dropped (archives often start with `./`); no empty path, no
/// leading `/`, no `..`, no segment named `.git` in any case, no backslash, NUL or other control
/// character; at most 4096 characters; a segment at most 255 characters, or 63 when it holds a
/// character outside ASCII (so that no file name a checkout writes exceeds 255 bytes).
/// [`RepoPath::PATTERN`] states the same rules as a regular expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoPath(String);

/// A segment git, HFS+ or NTFS would take for `.git`, in a pattern: the HFS+-ignored code points
/// anywhere in `.git`, or `.git`/`git~1` followed by dots, spaces or an NTFS stream name.
macro_rules! git_lookalike_pattern {
    () => {
        r"[\u200c-\u200f\u202a-\u202e\u206a-\u206f\ufeff]*\.[\u200c-\u200f\u202a-\u202e\u206a-\u206f\ufeff]*[gG][\u200c-\u200f\u202a-\u202e\u206a-\u206f\ufeff]*[iI][\u200c-\u200f\u202a-\u202e\u206a-\u206f\ufeff]*[tT][\u200c-\u200f\u202a-\u202e\u206a-\u206f\ufeff]*|(?:\.[gG][iI][tT]|[gG][iI][tT]~1)[ .]*(?::[^/]*)?"
    };
}

impl RepoPath {
    /// In characters.
    pub const MAX_LEN: usize = 4096;
    /// In characters.
    const MAX_SEGMENT: usize = 255;
    /// In characters, for a segment with a character outside ASCII (4 bytes at most each).
    const MAX_WIDE_SEGMENT: usize = 63;

    /// [`RepoPath::parse`]'s rules as an ECMA-262 regular expression (with look-aheads), for the
    /// OpenAPI document: a string matches it exactly when `parse` accepts it.
    pub const PATTERN: &'static str = concat!(
        // Not absolute.
        r"^(?!/)",
        // No `..` and nothing taken for `.git` as a segment.
        r"(?!(?:[^/]*/)*(?:\.\.|",
        git_lookalike_pattern!(),
        r")(?:/|$))",
        // Segments: 255 characters, 63 with one outside ASCII.
        r"(?!(?:[^/]*/)*[^/]{256})",
        r"(?!(?:[^/]*/)*(?=[^/]*[^\x00-\x7f])[^/]{64})",
        // Not only empty and `.` segments.
        r"(?!(?:\.?/)*\.?$)",
        r"[^\x00-\x1f\x7f-\x9f\\]{1,4096}$"
    );

    pub fn parse(raw: &str) -> Result<Self> {
        let reject = |why: &str| {
            Error::validation(format!("invalid path in the tree: {why}"))
                .with_context("path", truncate_for_display(raw))
        };
        if raw.chars().count() > Self::MAX_LEN {
            return Err(reject("it is longer than 4096 characters"));
        }
        if raw.starts_with('/') {
            return Err(reject("absolute paths are not allowed"));
        }
        if raw.chars().any(|c| c == '\\' || c.is_control()) {
            return Err(reject("it contains a backslash or a control character"));
        }
        let mut segments = Vec::new();
        for segment in raw.split('/') {
            match segment {
                // `a//b` and a trailing `/` (directory entries) collapse; `./` is dropped.
                "" | "." => continue,
                ".." => return Err(reject("'..' is not allowed")),
                s if is_git_lookalike(s, false) => {
                    return Err(reject(
                        "nothing may be written under .git, or a name a filesystem takes for it",
                    ));
                }
                s if s.chars().count() > Self::MAX_SEGMENT => {
                    return Err(reject("a segment is longer than 255 characters"));
                }
                s if !s.is_ascii() && s.chars().count() > Self::MAX_WIDE_SEGMENT => {
                    return Err(reject(
                        "a segment with characters outside ASCII is longer than 63 characters",
                    ));
                }
                s => segments.push(s),
            }
        }
        if segments.is_empty() {
            return Err(reject("it is empty"));
        }
        Ok(RepoPath(segments.join("/")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a link may have this name: not a `.gitmodules` (in any spelling a filesystem
    /// takes for it), which git refuses to follow as a link.
    pub fn may_be_a_link(&self) -> bool {
        let name = self.0.rsplit('/').next().unwrap_or(&self.0);
        !is_git_lookalike(name, true)
    }

    /// The directory part (`""` at the top).
    pub fn parent(&self) -> &str {
        self.0.rsplit_once('/').map_or("", |(dir, _)| dir)
    }

    /// Whether a symbolic link at this path with `target` stays inside the tree (and out of
    /// `.git`): the target must be relative, and resolving it from the link's directory must
    /// never climb above the top.
    pub fn link_stays_inside(&self, target: &str) -> bool {
        if target.is_empty()
            || target.starts_with('/')
            || target.chars().any(|c| c == '\\' || c == '\0')
        {
            return false;
        }
        let mut depth: Vec<&str> = self.parent().split('/').filter(|s| !s.is_empty()).collect();
        for segment in target.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    if depth.pop().is_none() {
                        return false;
                    }
                }
                s if is_git_lookalike(s, false) => return false,
                s => depth.push(s),
            }
        }
        true
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `segment` is `.git` or a name some filesystem would take for `.git` (`.GIT`, `.git.`,
/// `git~1`, `.g\u{200c}it` on HFS+, NTFS streams), or — for a link — a `.gitmodules`: git's own
/// `core.protectHFS` and `core.protectNTFS` rules.
pub(crate) fn is_git_lookalike(segment: &str, is_link: bool) -> bool {
    let options = gix::validate::path::component::Options {
        protect_windows: false,
        protect_hfs: true,
        protect_ntfs: true,
    };
    let mode = is_link.then_some(gix::validate::path::component::Mode::Symlink);
    gix::validate::path::component(segment.into(), mode, options).is_err()
}

/// [`BranchName::parse`]'s rules as a regular expression without anchors: it runs to the end of
/// the string.
macro_rules! branch_name_pattern {
    () => {
        concat!(
            r"(?![-/])(?!.*[/.]$)(?!.*(?:\.\.|//|@\{))(?!@$)",
            // No component starts with `.` or ends with `.lock`.
            r"(?!(?:[^/]*/)*\.)(?!.*\.lock(?:/|$))",
            // Nothing git reads as something else.
            r"(?![A-Z_]*HEAD$)(?!refs/)(?!(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$)",
            // A component with a character outside ASCII: 63 characters at most.
            r"(?!(?:[^/]*/)*(?=[^/]*[^\x00-\x7f])[^/]{64})",
            r"[^\x00-\x20\x7f-\x9f~^:?*\[\\]{1,200}"
        )
    };
}
pub(crate) use branch_name_pattern;

/// A branch name: what follows `refs/heads/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BranchName(String);

impl BranchName {
    /// [`BranchName::parse`]'s rules as an ECMA-262 regular expression (with look-aheads), for
    /// the OpenAPI document: a string matches it exactly when `parse` accepts it.
    pub const PATTERN: &'static str = concat!("^", branch_name_pattern!(), "$");

    /// Validates `raw` by git's ref-name rules (`git check-ref-format`), and a few more: at most
    /// 200 characters, a component holding a character outside ASCII at most 63 (a ref is a
    /// file, and a file name at most 255 bytes), no leading `-`, and nothing git (or a browse
    /// request) would resolve to something else: `HEAD` and the other `*_HEAD` names, a name
    /// starting with `refs/` (its ref would be `refs/heads/refs/…`), a full commit id.
    pub fn parse(raw: &str) -> Result<Self> {
        let invalid = || {
            Error::validation("invalid branch name")
                .with_context("field", "branch")
                .with_context("value", truncate_for_display(raw))
        };
        let bad_char = |c: char| c.is_control() || " ~^:?*[\\".contains(c);
        let ok = !raw.is_empty()
            && raw.chars().count() <= 200
            && !raw.starts_with('-')
            && !raw.starts_with('/')
            && !raw.ends_with('/')
            && !raw.ends_with('.')
            && !raw.contains("..")
            && !raw.contains("//")
            && !raw.contains("@{")
            && raw != "@"
            && !raw.chars().any(bad_char)
            && raw.split('/').all(|c| {
                !c.starts_with('.')
                    && !c.ends_with(".lock")
                    && (c.is_ascii() || c.chars().count() <= 63)
            })
            && !is_ambiguous_ref_name(raw);
        if ok {
            Ok(BranchName(raw.to_owned()))
        } else {
            Err(invalid())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `refs/heads/<name>`.
    pub fn full_ref(&self) -> String {
        format!("refs/heads/{}", self.0)
    }
}

/// Whether git would read `name` as something other than a branch: `HEAD` or another special
/// `*_HEAD` ref, a full ref name, or an object id.
fn is_ambiguous_ref_name(name: &str) -> bool {
    let special_head =
        name.ends_with("HEAD") && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
    let object_id = matches!(name.len(), 40 | 64) && name.bytes().all(|b| b.is_ascii_hexdigit());
    special_head || name.starts_with("refs/") || object_id
}

impl fmt::Display for BranchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_hostile_ones_refused() {
        for (raw, normal) in [
            ("a", "a"),
            ("./src/App.js", "src/App.js"),
            ("src//lib/./x.ts", "src/lib/x.ts"),
            ("dir/", "dir"),
            ("assets/icon.png", "assets/icon.png"),
            ("ünï/cödé.txt", "ünï/cödé.txt"),
        ] {
            assert_eq!(RepoPath::parse(raw).unwrap().as_str(), normal, "{raw}");
        }
        for raw in [
            "",
            ".",
            "./",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            ".git/config",
            "x/.GIT/hooks/pre-commit",
            ".git./config",
            ".git /config",
            "GIT~1/config",
            ".git::$INDEX_ALLOCATION/config",
            ".g\u{200c}it/config",
            "a\\b",
            "tab\tname",
            "nul\0",
            &"s".repeat(256),
            &format!("{}/x", "d/".repeat(2100)),
        ] {
            assert!(RepoPath::parse(raw).is_err(), "{raw:?} must be refused");
        }
    }

    #[test]
    fn links_must_stay_inside_the_tree() {
        let link = RepoPath::parse("src/lib/link").unwrap();
        for ok in ["file", "../other", "../../top-level", "./x", "sub/dir"] {
            assert!(link.link_stays_inside(ok), "{ok}");
        }
        for bad in [
            "/etc/passwd",
            "../../../escape",
            "../../.git/config",
            "",
            "a\\b",
            "x/../../../../y",
        ] {
            assert!(!link.link_stays_inside(bad), "{bad}");
        }
        let top = RepoPath::parse("link").unwrap();
        assert!(!top.link_stays_inside(".."));
        assert!(!top.link_stays_inside("GIT~1/config"));
        assert!(top.may_be_a_link());
        assert!(!RepoPath::parse("sub/.gitmodules").unwrap().may_be_a_link());
        assert!(!RepoPath::parse(".GITMODULES").unwrap().may_be_a_link());
    }

    #[test]
    fn branch_names_follow_git_rules() {
        for ok in [
            "main",
            "feature/x",
            "release-1.2",
            "user/ada/wip",
            "feature/HEAD",
            "head",
            "refsx",
            "0123456789abcdef",
        ] {
            assert!(BranchName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-f",
            "a..b",
            "a b",
            "a:b",
            "x.lock",
            ".hidden",
            "a/.b",
            "end/",
            "end.",
            "@",
            "a@{1}",
            "a~1",
            "a^",
            "x//y",
            // What git would read as something else.
            "HEAD",
            "FETCH_HEAD",
            "ORIG_HEAD",
            "refs/heads/x",
            "refs/tags/v1",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(BranchName::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            BranchName::parse("main").unwrap().full_ref(),
            "refs/heads/main"
        );
    }
    /// Strings built from the pieces the rules are about, in every order: the patterns the
    /// OpenAPI document states accept exactly what `parse` accepts.
    fn pieces(tokens: &[&str], count: usize, seed: u64) -> Vec<String> {
        let mut state = seed;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..count)
            .map(|_| {
                let len = (next() % 7) as usize;
                (0..len)
                    .map(|_| tokens[(next() % tokens.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    fn agree(pattern: &str, accepts: impl Fn(&str) -> bool, samples: &[String]) {
        let pattern = fancy_regex::Regex::new(pattern).unwrap();
        for sample in samples {
            assert_eq!(
                pattern
                    .is_match(sample)
                    .unwrap_or_else(|err| panic!("{err} on {sample:?}")),
                accepts(sample),
                "the pattern and parse disagree on {sample:?}"
            );
        }
    }

    #[test]
    fn the_branch_pattern_accepts_exactly_what_parse_accepts() {
        let tokens = [
            "a", "Z", "-", "/", ".", "..", "@", "{", "@{", "~", "^", ":", " ", "?", "*", "[", "\\",
            "\n", "\u{7f}", "\u{85}", ".lock", "HEAD", "_", "refs/", "é", "0", "f",
        ];
        let mut samples = pieces(&tokens, 40_000, 0x9e37_79b9_7f4a_7c15);
        for n in [39, 40, 41, 63, 64, 65] {
            samples.push("a".repeat(n).replace('a', "b0"));
            samples.push("0".repeat(n));
            samples.push("é".repeat(n));
            samples.push(format!("x/{}", "é".repeat(n)));
            samples.push(format!("{}/x", "é".repeat(n)));
        }
        for n in [199, 200, 201] {
            samples.push("a".repeat(n));
        }
        samples.push(format!("{}é", "a".repeat(70)));
        agree(
            BranchName::PATTERN,
            |s| BranchName::parse(s).is_ok(),
            &samples,
        );
    }

    #[test]
    fn the_path_pattern_accepts_exactly_what_parse_accepts() {
        let tokens = [
            "a", "/", ".", "..", "./", ".git", ".GiT", "git~1", "GIT~1", "~1", " ", ":", "::$D",
            "\u{200c}", "\u{feff}", "g", "i", "t", "\\", "\t", "\u{9f}", "é", "x.",
        ];
        let mut samples = pieces(&tokens, 40_000, 0x2545_f491_4f6c_dd1d);
        for n in [62, 63, 64, 254, 255, 256] {
            samples.push("s".repeat(n));
            samples.push(format!("d/{}", "é".repeat(n)));
            samples.push(format!("{}/f", "é".repeat(n)));
        }
        for n in [4095, 4096, 4097] {
            samples.push("d/".repeat((n - 1) / 2) + &"f".repeat(2 - n % 2));
        }
        agree(RepoPath::PATTERN, |s| RepoPath::parse(s).is_ok(), &samples);
    }
}
