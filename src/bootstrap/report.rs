//! What a bootstrap run did, one line per catalog object, so an operator
//! sees at a glance what was created, what already existed and what drifted.

use std::fmt;

use super::catalog::Notice;

/// The kind of catalog object a line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Meter,
    Feature,
    Plan,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Meter => "meter",
            Self::Feature => "feature",
            Self::Plan => "plan",
        })
    }
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It was missing and is now created (a plan: created and published).
    Created,
    /// It exists and matches the catalog.
    Exists,
    /// It exists and differs from the catalog; left untouched. The text
    /// lists each difference.
    Drift(String),
    /// `--dry-run`: it would be created (or, for a plan, published).
    WouldCreate,
    /// A plan version was published (a matching draft, or a new version
    /// that replaces a drifted one under `--publish-new-version`).
    Published,
    /// A call failed; the text says which and why.
    Failed(String),
}

/// One catalog object and its outcome. `detail` adds context such as the
/// plan version; it never changes what the outcome means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub kind: Kind,
    pub key: String,
    pub outcome: Outcome,
    pub detail: Option<String>,
}

impl Line {
    pub fn new(kind: Kind, key: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            kind,
            key: key.into(),
            outcome,
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.kind, self.key)?;
        match &self.outcome {
            Outcome::Created if self.kind == Kind::Plan => f.write_str("created and published")?,
            Outcome::Created => f.write_str("created")?,
            Outcome::Exists => f.write_str("exists")?,
            Outcome::Drift(what) => write!(f, "DRIFT: {what}")?,
            Outcome::WouldCreate => f.write_str("would create")?,
            Outcome::Published => f.write_str("published")?,
            Outcome::Failed(why) => write!(f, "FAILED: {why}")?,
        }
        match &self.detail {
            Some(detail) => write!(f, " ({detail})"),
            None => Ok(()),
        }
    }
}

/// Every line of a run, in the order the objects were handled, after the
/// catalog's notices (what of it is not sent, and why).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub notices: Vec<Notice>,
    pub lines: Vec<Line>,
}

impl Report {
    /// Whether any object differs from the catalog (a non-zero exit unless
    /// the operator accepts drift).
    pub fn drifted(&self) -> bool {
        self.lines
            .iter()
            .any(|l| matches!(l.outcome, Outcome::Drift(_)))
    }

    /// Whether any call failed (always a non-zero exit).
    pub fn failed(&self) -> bool {
        self.lines
            .iter()
            .any(|l| matches!(l.outcome, Outcome::Failed(_)))
    }

    /// Whether the run should exit zero: nothing failed, and nothing drifted
    /// unless the operator accepts drift (`--allow-drift`).
    pub fn is_success(&self, allow_drift: bool) -> bool {
        !self.failed() && (allow_drift || !self.drifted())
    }

    /// Whether the run wrote (or, dry, would write) anything.
    pub fn changed(&self) -> bool {
        self.lines.iter().any(|l| {
            matches!(
                l.outcome,
                Outcome::Created | Outcome::Published | Outcome::WouldCreate
            )
        })
    }

    /// The outcome of one object, for callers and tests.
    pub fn outcome(&self, kind: Kind, key: &str) -> Option<&Outcome> {
        self.lines
            .iter()
            .find(|l| l.kind == kind && l.key == key)
            .map(|l| &l.outcome)
    }

    pub(crate) fn push(&mut self, line: Line) {
        self.lines.push(line);
    }

    /// Plan versions published: a plan created is published with it.
    fn published(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| {
                l.outcome == Outcome::Published
                    || (l.kind == Kind::Plan && l.outcome == Outcome::Created)
            })
            .count()
    }

    fn count(&self, pred: impl Fn(&Outcome) -> bool) -> usize {
        self.lines.iter().filter(|l| pred(&l.outcome)).count()
    }
}

impl fmt::Display for Report {
    /// One line per object, then a summary that says plainly when nothing
    /// changed (an idempotent second run).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for notice in &self.notices {
            writeln!(f, "notice: {notice}")?;
        }
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        if !self.changed() && !self.drifted() && !self.failed() {
            return writeln!(f, "nothing to do: the catalog is already in place");
        }
        writeln!(
            f,
            "{} created, {} published, {} would be created, {} exist, {} drifted, {} failed",
            self.count(|o| *o == Outcome::Created),
            self.published(),
            self.count(|o| *o == Outcome::WouldCreate),
            self.count(|o| *o == Outcome::Exists),
            self.count(|o| matches!(o, Outcome::Drift(_))),
            self.count(|o| matches!(o, Outcome::Failed(_))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_with_only_existing_objects_says_nothing_changed() {
        let report = Report {
            lines: vec![Line::new(Kind::Meter, "m", Outcome::Exists)],
            ..Report::default()
        };
        let text = report.to_string();
        assert!(text.contains("meter m: exists"), "{text}");
        assert!(text.contains("nothing to do"), "{text}");
    }

    #[test]
    fn drift_and_failure_are_flagged() {
        let report = Report {
            lines: vec![
                Line::new(Kind::Meter, "m", Outcome::Drift("x".into())),
                Line::new(Kind::Plan, "p", Outcome::Failed("y".into())),
            ],
            ..Report::default()
        };
        assert!(report.drifted() && report.failed());
        assert!(report.to_string().contains("meter m: DRIFT: x"));
    }

    #[test]
    fn a_plan_created_is_counted_as_published() {
        let report = Report {
            lines: vec![
                Line::new(Kind::Meter, "m", Outcome::Created),
                Line::new(Kind::Plan, "p", Outcome::Created).with_detail("version 1, active"),
            ],
            ..Report::default()
        };
        let text = report.to_string();
        assert!(
            text.contains("plan p: created and published (version 1, active)"),
            "{text}"
        );
        assert!(text.contains("2 created, 1 published,"), "{text}");
    }

    #[test]
    fn notices_are_printed_before_the_objects() {
        let mut notice = Notice::new("plans[0].settlement_mode", "not sent");
        notice.line = Some(7);
        let report = Report {
            notices: vec![notice],
            lines: vec![Line::new(Kind::Plan, "p", Outcome::Exists)],
        };
        let text = report.to_string();
        assert!(
            text.starts_with("notice: line 7: plans[0].settlement_mode: not sent\nplan p: exists"),
            "{text}"
        );
    }
}
