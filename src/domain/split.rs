//! Upstream's one rule for splitting `client:subject`, `payer#actor` and
//! `base:model`.

/// Splits `text` at the first `separator` when it is neither the first nor
/// the last character: upstream's one rule for `client:subject`,
/// `payer#actor` and `base:model`; `None` otherwise.
pub(crate) fn split_inside(text: &str, separator: char) -> Option<(&str, &str)> {
    let (before, after) = text.split_once(separator)?;
    (!before.is_empty() && !after.is_empty()).then_some((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_separator_splits_only_between_two_non_empty_parts() {
        assert_eq!(split_inside("a:b:c", ':'), Some(("a", "b:c")));
        for text in [":a", "a:", ":", "a"] {
            assert_eq!(split_inside(text, ':'), None, "{text}");
        }
    }
}
