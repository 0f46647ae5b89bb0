//! The depth guard: JSON nested far deeper than a ticket is refused before
//! any parsing.

/// The envelope is two levels deep; anything far deeper is hostile.
pub(crate) const MAX_DEPTH: usize = 32;

/// Whether `[`/`{` nesting exceeds `limit`, ignoring brackets in strings.
/// A record with no more openers than `limit` cannot, and a real ticket has
/// two: `memchr` finds whether there are more in a SIMD pass, and only then
/// does the exact walk run.
pub(super) fn nesting_exceeds(bytes: &[u8], limit: usize) -> bool {
    let openers = memchr::memchr2_iter(b'[', b'{', bytes).nth(limit);
    openers.is_some() && nesting_walk_exceeds(bytes, limit)
}

fn nesting_walk_exceeds(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_deeper_than_the_limit_is_found() {
        assert!(nesting_exceeds(b"[[[]]]", 2));
        assert!(!nesting_exceeds(b"[[]][[]]", 2));
    }

    #[test]
    fn brackets_inside_strings_do_not_nest() {
        assert!(!nesting_exceeds(br#"["[[[\"[[[", "]]]"]"#, 1));
    }
}
