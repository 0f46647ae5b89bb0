//! deepObject query parameters: `filter[field][op]=v`, `page[number]`, `page[size]`,
//! `page[after]`, `sort`.

use crate::problem::{ApiResult, InvalidParam, Problem};

/// A comparison from the spec's `*FieldFilter` schemas.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Eq(String),
    Neq(String),
    /// Comma-separated "any of".
    Oeq(Vec<String>),
    Contains(String),
    /// Comma-separated "contains any of".
    Ocontains(Vec<String>),
    Gt(String),
    Gte(String),
    Lt(String),
    Lte(String),
    Exists(bool),
}

/// Which operators a filter field accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `StringFieldFilter`.
    String,
    /// `StringFieldFilterExact` and `ULIDFieldFilter`: eq, oeq, neq.
    Exact,
    /// `DateTimeFieldFilter`: eq, lt, lte, gt, gte (RFC 3339).
    DateTime,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Filter {
    pub(crate) field: String,
    pub(crate) op: Op,
}

/// The value of an `eq` filter on `field`, for index lookups (the full
/// filter set is still applied to what the index returns).
pub(crate) fn eq_value<'a>(filters: &'a [Filter], field: &str) -> Option<&'a str> {
    filters.iter().find_map(|f| match &f.op {
        Op::Eq(v) if f.field == field => Some(v.as_str()),
        _ => None,
    })
}

/// The parsed query of a list request.
#[derive(Debug, Default)]
pub(crate) struct ListQuery {
    pub(crate) filters: Vec<Filter>,
    pub(crate) page_number: Option<String>,
    pub(crate) page_size: Option<String>,
    pub(crate) page_after: Option<String>,
    pub(crate) page_before: Option<String>,
    pub(crate) sort: Option<String>,
}

fn qerr(field: impl Into<String>, rule: &str, reason: impl Into<String>) -> Box<InvalidParam> {
    Box::new(InvalidParam::rule(field, rule, reason).from_source("query"))
}

/// Parse `raw` against the filter fields a list operation allows.
pub(crate) fn parse(raw: Option<&str>, fields: &[(&str, Kind)]) -> ApiResult<ListQuery> {
    let mut q = ListQuery::default();
    let mut errs = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let (k, v) = (k.into_owned(), v.into_owned());
        if let Some(rest) = k.strip_prefix("filter[") {
            match parse_filter(rest, v, fields) {
                Ok(f) => q.filters.push(f),
                Err(e) => errs.push(*e),
            }
        } else if k.starts_with("page[") {
            match k.as_str() {
                "page[number]" => q.page_number = Some(v),
                "page[size]" => q.page_size = Some(v),
                "page[after]" => q.page_after = Some(v),
                "page[before]" => q.page_before = Some(v),
                _ => errs.push(*qerr(k, "unknown_property", "unknown page parameter")),
            }
        } else if k == "sort" {
            q.sort = Some(v);
        }
    }
    if errs.is_empty() {
        Ok(q)
    } else {
        let fields: Vec<String> = errs.iter().map(|e| e.field.clone()).collect();
        Err(Problem::bad_request(
            format!("invalid query parameters: {}", fields.join(", ")),
            errs,
        ))
    }
}

/// `rest` is what follows `filter[`: `key]` or `key][eq]`.
fn parse_filter(
    rest: &str,
    v: String,
    fields: &[(&str, Kind)],
) -> Result<Filter, Box<InvalidParam>> {
    let full = format!("filter[{rest}");
    let (field, tail) = rest
        .split_once(']')
        .ok_or_else(|| qerr(&full, "invalid", "malformed filter parameter"))?;
    let kind = fields
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, k)| *k)
        .ok_or_else(|| {
            qerr(
                &full,
                "unknown_property",
                format!("unknown filter field {field:?}"),
            )
        })?;
    let op_name = match tail {
        "" => "eq",
        t => t
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .ok_or_else(|| qerr(&full, "invalid", "malformed filter operator"))?,
    };
    let op = make_op(op_name, v, kind).map_err(|reason| qerr(&full, "invalid", reason))?;
    Ok(Filter {
        field: field.to_string(),
        op,
    })
}

fn list(v: &str) -> Vec<String> {
    v.split(',').map(|s| s.trim().to_string()).collect()
}

fn make_op(name: &str, v: String, kind: Kind) -> Result<Op, String> {
    let allowed: &[&str] = match kind {
        Kind::String => &[
            "eq",
            "neq",
            "oeq",
            "contains",
            "ocontains",
            "gt",
            "gte",
            "lt",
            "lte",
            "exists",
        ],
        Kind::Exact => &["eq", "oeq", "neq"],
        Kind::DateTime => &["eq", "gt", "gte", "lt", "lte"],
    };
    if !allowed.contains(&name) {
        return Err(format!(
            "unsupported operator {name:?}; allowed: {}",
            allowed.join(", ")
        ));
    }
    if kind == Kind::DateTime && crate::validate::parse_datetime(&v).is_none() {
        return Err("must be an RFC 3339 date-time".into());
    }
    Ok(match name {
        "eq" => Op::Eq(v),
        "neq" => Op::Neq(v),
        "oeq" => Op::Oeq(list(&v)),
        "contains" => Op::Contains(v),
        "ocontains" => Op::Ocontains(list(&v)),
        "gt" => Op::Gt(v),
        "gte" => Op::Gte(v),
        "lt" => Op::Lt(v),
        "lte" => Op::Lte(v),
        _ => Op::Exists(matches!(v.as_str(), "true" | "1")),
    })
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(&needle.to_lowercase())
}

impl Op {
    /// Does a field with these values (several for multi-valued fields such
    /// as subject keys, none when absent) satisfy the operator?
    pub(crate) fn matches(&self, values: &[&str]) -> bool {
        let any = |f: &dyn Fn(&str) -> bool| values.iter().any(|v| f(v));
        match self {
            Op::Eq(x) => any(&|v| v == x),
            Op::Neq(x) => values.iter().all(|v| v != x),
            Op::Oeq(xs) => any(&|v| xs.iter().any(|x| x == v)),
            Op::Contains(x) => any(&|v| contains_ci(v, x)),
            Op::Ocontains(xs) => any(&|v| xs.iter().any(|x| contains_ci(v, x))),
            Op::Gt(x) => any(&|v| cmp(v, x).is_gt()),
            Op::Gte(x) => any(&|v| cmp(v, x).is_ge()),
            Op::Lt(x) => any(&|v| cmp(v, x).is_lt()),
            Op::Lte(x) => any(&|v| cmp(v, x).is_le()),
            Op::Exists(want) => values.is_empty() != *want,
        }
    }
}

/// Compare as date-times when both parse, else as strings.
fn cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use crate::validate::parse_datetime;
    match (parse_datetime(a), parse_datetime(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// True when every filter matches; `get` returns a field's values.
pub(crate) fn matches_all<'a>(filters: &[Filter], get: impl Fn(&str) -> Vec<&'a str>) -> bool {
    filters.iter().all(|f| f.op.matches(&get(&f.field)))
}

/// `page[number]` / `page[size]` after validation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Page {
    pub(crate) number: usize,
    pub(crate) size: usize,
}

pub(crate) const DEFAULT_PAGE_SIZE: usize = 20;
pub(crate) const MAX_PAGE_SIZE: usize = 1000;

fn positive(
    raw: &Option<String>,
    field: &str,
    default: usize,
    max: usize,
) -> Result<usize, Box<InvalidParam>> {
    let Some(s) = raw else {
        return Ok(default);
    };
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 && n <= max => Ok(n),
        Ok(n) if n > max => Err(qerr(field, "invalid", format!("must be at most {max}"))),
        _ => Err(qerr(field, "is_integer", "must be a positive integer")),
    }
}

impl ListQuery {
    pub(crate) fn page(&self) -> ApiResult<Page> {
        let number = positive(&self.page_number, "page[number]", 1, usize::MAX);
        let size = positive(
            &self.page_size,
            "page[size]",
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        );
        match (number, size) {
            (Ok(number), Ok(size)) => Ok(Page { number, size }),
            (a, b) => {
                let errs: Vec<InvalidParam> = [a.err(), b.err()]
                    .into_iter()
                    .flatten()
                    .map(|e| *e)
                    .collect();
                Err(Problem::bad_request("invalid page parameters", errs))
            }
        }
    }

    /// Cursor page size (`page[size]`, default 100).
    pub(crate) fn cursor_size(&self) -> ApiResult<usize> {
        positive(&self.page_size, "page[size]", 100, MAX_PAGE_SIZE)
            .map_err(|e| Problem::bad_request("invalid page parameters", vec![*e]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &[(&str, Kind)] = &[("key", Kind::String), ("status", Kind::Exact)];

    #[test]
    fn parses_plain_and_operator_forms() {
        let q = parse(Some("filter%5Bkey%5D=a&filter[status][oeq]=x,y"), F).expect("valid");
        assert_eq!(q.filters[0].op, Op::Eq("a".into()));
        assert_eq!(q.filters[1].op, Op::Oeq(vec!["x".into(), "y".into()]));
    }

    #[test]
    fn rejects_unknown_fields_and_operators() {
        assert!(parse(Some("filter[nope]=a"), F).is_err());
        assert!(parse(Some("filter[status][contains]=a"), F).is_err());
        assert!(parse(Some("filter[key"), F).is_err());
    }

    #[test]
    fn page_size_bounds() {
        let q = parse(Some("page[size]=1001"), F).expect("parses");
        assert!(q.page().is_err());
        let q = parse(Some("page[size]=0"), F).expect("parses");
        assert!(q.page().is_err());
        let q = parse(Some("page[size]=5&page[number]=2"), F).expect("parses");
        let p = q.page().expect("valid");
        assert_eq!((p.number, p.size), (2, 5));
    }
}
