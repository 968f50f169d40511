//! Paths inside a project's tree, and branch names, validated so that nothing a client sends can
//! address anything outside the tree or inside `.git`.

use std::fmt;

use crate::domain::truncate_for_display;
use crate::error::{Error, Result};

/// A file's path inside a project: `/`-separated, relative, normalised.
///
/// Rules: UTF-8; `.` segments are dropped (archives often start with `./`); no empty path, no
/// leading `/`, no `..`, no segment named `.git` in any case, no backslash, NUL or other control
/// character; each segment at most 255 bytes, the whole at most 4096.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoPath(String);

impl RepoPath {
    pub const MAX_LEN: usize = 4096;
    const MAX_SEGMENT: usize = 255;

    pub fn parse(raw: &str) -> Result<Self> {
        let reject = |why: &str| {
            Error::validation(format!("invalid path in the tree: {why}"))
                .with_context("path", truncate_for_display(raw))
        };
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
                s if s.len() > Self::MAX_SEGMENT => {
                    return Err(reject("a segment is longer than 255 bytes"));
                }
                s => segments.push(s),
            }
        }
        if segments.is_empty() {
            return Err(reject("it is empty"));
        }
        let path = segments.join("/");
        if path.len() > Self::MAX_LEN {
            return Err(reject("it is longer than 4096 bytes"));
        }
        Ok(RepoPath(path))
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

/// A branch name: what follows `refs/heads/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BranchName(String);

impl BranchName {
    /// Validates `raw` by git's ref-name rules (`git check-ref-format`), and a few more: at most
    /// 200 bytes, no leading `-`, and nothing git (or a browse request) would resolve to
    /// something else: `HEAD` and the other `*_HEAD` names, a name starting with `refs/` (its
    /// ref would be `refs/heads/refs/…`), a full commit id.
    pub fn parse(raw: &str) -> Result<Self> {
        let invalid = || {
            Error::validation("invalid branch name")
                .with_context("field", "branch")
                .with_context("value", truncate_for_display(raw))
        };
        let bad_char = |c: char| c.is_control() || " ~^:?*[\\".contains(c);
        let ok = !raw.is_empty()
            && raw.len() <= 200
            && !raw.starts_with('-')
            && !raw.starts_with('/')
            && !raw.ends_with('/')
            && !raw.ends_with('.')
            && !raw.contains("..")
            && !raw.contains("//")
            && !raw.contains("@{")
            && raw != "@"
            && !raw.chars().any(bad_char)
            && raw
                .split('/')
                .all(|c| !c.starts_with('.') && !c.ends_with(".lock"))
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
}
