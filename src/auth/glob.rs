//! Glob patterns for key allow-lists (`gpt-4o*`, `team-*-api`, `*`).

/// True when `text` matches `pattern`, where `*` matches any run of characters (including
/// none) and every other character matches itself. Comparison is case-sensitive.
///
/// Greedy with single backtracking: on a mismatch the last `*` absorbs one more character.
/// That is linear-time in practice and never recursive, so a hostile pattern such as
/// `*a*a*a*b` cannot blow up.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern = pattern.as_bytes();
    let text = text.as_bytes();
    let (mut p, mut t) = (0, 0);
    // Position of the last `*` seen in the pattern, and where in the text it began matching.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
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
    use super::glob_match;

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
