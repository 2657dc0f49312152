//! Glob patterns for key allow-lists (`gpt-4o*`, `team-*-api`, `*`), and for MCP tool
//! permissions, which also have `?` (`fs__read_?`).

/// True when `text` matches `pattern`, where `*` matches any run of characters (including
/// none) and every other character matches itself. Comparison is case-sensitive.
///
/// Greedy with single backtracking: on a mismatch the last `*` absorbs one more character.
/// That is linear-time in practice and never recursive, so a hostile pattern such as
/// `*a*a*a*b` cannot blow up.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    matches(pattern.as_bytes(), text.as_bytes(), None)
}

/// [`glob_match`] with `?` as well, matching exactly one byte: the glob of a key's
/// `mcp_tools`. Tool names are ASCII (letters, digits, `_`, `-`, `.`, `/`), so one byte is
/// one character of every name a permission can name. Case-sensitive, as MCP tool names are.
///
/// Model and route globs keep [`glob_match`], where `?` is an ordinary character, so this
/// changes nothing a stored key already means.
pub fn tool_glob_match(pattern: &str, name: &str) -> bool {
    matches(pattern.as_bytes(), name.as_bytes(), Some(b'?'))
}

/// The matcher behind both globs; `any_one` is the byte that matches any single byte, if any.
fn matches(pattern: &[u8], text: &[u8], any_one: Option<u8>) -> bool {
    let (mut p, mut t) = (0, 0);
    // Position of the last `*` seen in the pattern, and where in the text it began matching.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && (pattern[p] == text[t] || Some(pattern[p]) == any_one) {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::{glob_match, tool_glob_match};

    #[test]
    fn question_mark_is_literal_in_model_globs() {
        assert!(!glob_match("gpt-?o", "gpt-4o"));
        assert!(glob_match("gpt-?o", "gpt-?o"));
    }

    #[test]
    fn tool_globs_match_one_byte_with_question_mark() {
        assert!(tool_glob_match("fs__read_?", "fs__read_a"));
        assert!(!tool_glob_match("fs__read_?", "fs__read_"));
        assert!(!tool_glob_match("fs__read_?", "fs__read_ab"));
        assert!(tool_glob_match("gh__*_?ssue", "gh__create_issue"));
        assert!(tool_glob_match("?*", "x"));
        assert!(!tool_glob_match("?*", ""));
    }

    #[test]
    fn tool_globs_backtrack_through_question_marks() {
        // The `*` must give back characters for the `?`s after it.
        assert!(tool_glob_match("*??b", "aaab"));
        assert!(tool_glob_match("a*?a*b", "aaaaab"));
        assert!(!tool_glob_match("*???", "ab"));
    }

    #[test]
    fn literal_pattern_matches_only_itself() {
        assert!(glob_match("gpt-4o", "gpt-4o"));
        assert!(!glob_match("gpt-4o", "gpt-4o-mini"));
        assert!(!glob_match("gpt-4o", "gpt-4"));
    }

    #[test]
    fn lone_star_matches_everything_including_empty() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything/at:all"));
    }

    #[test]
    fn trailing_star_matches_a_prefix() {
        assert!(glob_match("gpt-4o*", "gpt-4o"));
        assert!(glob_match("gpt-4o*", "gpt-4o-mini"));
        assert!(!glob_match("gpt-4o*", "gpt-4"));
    }

    #[test]
    fn leading_and_inner_stars_match_runs() {
        assert!(glob_match("*-mini", "gpt-4o-mini"));
        assert!(glob_match("claude-*-sonnet*", "claude-3-5-sonnet-latest"));
        assert!(!glob_match("claude-*-sonnet", "claude-3-5-haiku"));
    }

    #[test]
    fn star_backtracks_over_repeated_characters() {
        assert!(glob_match("*ab", "aaab"));
        assert!(glob_match("a*a*b", "aaaaab"));
        assert!(!glob_match("a*a*b", "aaaaac"));
    }

    #[test]
    fn matching_is_case_sensitive() {
        assert!(!glob_match("GPT-*", "gpt-4o"));
    }

    #[test]
    fn empty_pattern_matches_only_empty_text() {
        assert!(glob_match("", ""));
        assert!(!glob_match("", "x"));
    }
}
