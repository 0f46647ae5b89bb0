//! Where each field of a catalog file is written, so a problem found after
//! parsing (one that spans fields, like a rate card's key and its feature)
//! is reported at its line, as the parser reports its own errors.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

/// Field path (`plan.phases[0].rate_cards[1].key`, the form problems name
/// fields in) → 1-based line.
#[derive(Debug, Default)]
pub(super) struct Lines(HashMap<String, usize>);

/// An open collection while walking the document.
enum Frame {
    /// A mapping at `path`; `value` is the path of the value its last key
    /// announced, until that value is read.
    Map { path: String, value: Option<String> },
    /// A sequence at `path`; `next` is the index of its next item.
    Seq { path: String, next: usize },
}

impl Lines {
    /// Indexes `text`, YAML or JSON. What the position parser cannot read is
    /// left out: lines help an operator, they are never a reason to fail.
    pub(super) fn of(text: &str) -> Self {
        let mut lines = HashMap::new();
        let mut stack = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            match event {
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::Scalar(..) | Event::Alias(_) => {
                    let path = node_path(&mut stack, &event);
                    lines.entry(path).or_insert(span.start.line());
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = node_path(&mut stack, &event);
                    lines.entry(path.clone()).or_insert(span.start.line());
                    stack.push(match event {
                        Event::MappingStart(..) => Frame::Map { path, value: None },
                        _ => Frame::Seq { path, next: 0 },
                    });
                }
                _ => {}
            }
        }
        Self(lines)
    }

    /// The line of `field`, else of the nearest enclosing field written
    /// (a missing `price.amount` is reported at its `price`).
    pub(super) fn line(&self, field: &str) -> Option<usize> {
        let mut field = field;
        loop {
            if let Some(line) = self.0.get(field) {
                return Some(*line);
            }
            field = &field[..field.rfind(['.', '['])?];
        }
    }
}

/// The path of the node `event` starts. In a mapping awaiting a key, the
/// node is that key: it takes the path of the value it announces, so a
/// field's line is the line its name is on.
fn node_path(stack: &mut [Frame], event: &Event) -> String {
    match stack.last_mut() {
        None => String::new(),
        Some(Frame::Seq { path, next }) => {
            let item = format!("{path}[{next}]");
            *next += 1;
            item
        }
        Some(Frame::Map { path, value }) => match value.take() {
            Some(field) => field,
            None => {
                let name = match event {
                    Event::Scalar(name, ..) => name.as_ref(),
                    _ => "?",
                };
                let field = if path.is_empty() {
                    name.to_owned()
                } else {
                    format!("{path}.{name}")
                };
                *value = Some(field.clone());
                field
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "\
meters:
  - key: a
    name: A
plan:
  phases:
    - key: default
      rate_cards:
        - key: x
          price: { type: unit }
";

    #[test]
    fn yaml_fields_are_found_at_their_lines() {
        let lines = Lines::of(YAML);
        assert_eq!(lines.line("meters[0].name"), Some(3));
        assert_eq!(lines.line("plan.phases[0].key"), Some(6));
        assert_eq!(lines.line("plan.phases[0].rate_cards[0].key"), Some(8));
        assert_eq!(
            lines.line("plan.phases[0].rate_cards[0].price.type"),
            Some(9)
        );
    }

    #[test]
    fn a_field_not_written_is_found_at_its_enclosing_field() {
        let lines = Lines::of(YAML);
        assert_eq!(
            lines.line("plan.phases[0].rate_cards[0].price.amount"),
            Some(9)
        );
        assert_eq!(lines.line("plan.phases[0].rate_cards[0].feature"), Some(8));
    }

    #[test]
    fn json_fields_are_found_at_their_lines() {
        let lines =
            Lines::of("{\n  \"meters\": [\n    {\"key\": \"a\",\n     \"name\": \"A\"}\n  ]\n}");
        assert_eq!(lines.line("meters[0].key"), Some(3));
        assert_eq!(lines.line("meters[0].name"), Some(4));
    }

    #[test]
    fn text_the_parser_cannot_read_never_fails() {
        let lines = Lines::of("a: [\n\t- : :");
        assert_eq!(lines.line("b"), None);
    }
}
