//! OpenMeter's `FilterString`: `$eq $ne $in $nin $like $nlike $ilike $nilike $gt $gte
//! $lt $lte $and $or $exists $contains $ncontains` over a string value.

use serde_json::Value;

/// A parsed string filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringFilter {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    Nin(Vec<String>),
    Like(String),
    NotLike(String),
    ILike(String),
    NotILike(String),
    Gt(String),
    Gte(String),
    Lt(String),
    Lte(String),
    Contains(String),
    NotContains(String),
    Exists(bool),
    And(Vec<StringFilter>),
    Or(Vec<StringFilter>),
}

/// Why a filter object is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("filter must be a JSON object with exactly one operator")]
    Shape,
    #[error("unknown filter operator {0:?}")]
    Operator(String),
    #[error("filter operator {0} needs a {1}")]
    Operand(String, &'static str),
    #[error("filter operator {0}: a pattern has at most {max} characters", max = LIKE_PATTERN_CHARS_MAX)]
    PatternTooLong(String),
}

/// The longest LIKE pattern. Matching takes up to pattern × value steps (`%` backtracks),
/// so this bounds the cost of one match: 256 × 4,096 characters of an event's longest
/// string. (The fuzzer found a 13 KB pattern taking seconds per value.)
pub const LIKE_PATTERN_CHARS_MAX: usize = 256;

impl StringFilter {
    /// Parses `{"$in": ["a", "b"]}` and the like. Several operators in one object are ANDed.
    pub fn parse(value: &Value) -> Result<Self, FilterError> {
        let Value::Object(map) = value else {
            return Err(FilterError::Shape);
        };
        if map.is_empty() {
            return Err(FilterError::Shape);
        }
        let mut parts = Vec::with_capacity(map.len());
        for (op, operand) in map {
            let text = || match operand {
                Value::String(s) => Ok(s.clone()),
                _ => Err(FilterError::Operand(op.clone(), "string")),
            };
            let pattern = || {
                let text = text()?;
                if text.chars().count() > LIKE_PATTERN_CHARS_MAX {
                    return Err(FilterError::PatternTooLong(op.clone()));
                }
                Ok(text)
            };
            let list = || match operand {
                Value::Array(items) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_owned)
                            .ok_or(FilterError::Operand(op.clone(), "list of strings"))
                    })
                    .collect::<Result<Vec<_>, _>>(),
                _ => Err(FilterError::Operand(op.clone(), "list of strings")),
            };
            let nested = || match operand {
                Value::Array(items) => items.iter().map(Self::parse).collect::<Result<Vec<_>, _>>(),
                _ => Err(FilterError::Operand(op.clone(), "list of filters")),
            };
            parts.push(match op.as_str() {
                "$eq" => Self::Eq(text()?),
                "$ne" => Self::Ne(text()?),
                "$in" => Self::In(list()?),
                "$nin" => Self::Nin(list()?),
                "$like" => Self::Like(pattern()?),
                "$nlike" => Self::NotLike(pattern()?),
                "$ilike" => Self::ILike(pattern()?),
                "$nilike" => Self::NotILike(pattern()?),
                "$gt" => Self::Gt(text()?),
                "$gte" => Self::Gte(text()?),
                "$lt" => Self::Lt(text()?),
                "$lte" => Self::Lte(text()?),
                "$contains" => Self::Contains(text()?),
                "$ncontains" => Self::NotContains(text()?),
                "$exists" => Self::Exists(
                    operand
                        .as_bool()
                        .ok_or(FilterError::Operand(op.clone(), "boolean"))?,
                ),
                "$and" => Self::And(nested()?),
                "$or" => Self::Or(nested()?),
                other => return Err(FilterError::Operator(other.to_owned())),
            });
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Self::And(parts)
        })
    }

    /// Does `value` pass? An absent value (`None`) passes only `$ne`, `$nin`,
    /// the negated patterns and `$exists: false`.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (Self::Exists(want), v) => v.is_some() == *want,
            (Self::And(all), v) => all.iter().all(|f| f.matches(v)),
            (Self::Or(any), v) => any.iter().any(|f| f.matches(v)),
            (
                Self::Ne(_)
                | Self::Nin(_)
                | Self::NotLike(_)
                | Self::NotILike(_)
                | Self::NotContains(_),
                None,
            ) => true,
            (_, None) => false,
            (Self::Eq(x), Some(v)) => v == x,
            (Self::Ne(x), Some(v)) => v != x,
            (Self::In(xs), Some(v)) => xs.iter().any(|x| x == v),
            (Self::Nin(xs), Some(v)) => !xs.iter().any(|x| x == v),
            (Self::Like(p), Some(v)) => like(p, v, false),
            (Self::NotLike(p), Some(v)) => !like(p, v, false),
            (Self::ILike(p), Some(v)) => like(p, v, true),
            (Self::NotILike(p), Some(v)) => !like(p, v, true),
            (Self::Gt(x), Some(v)) => v > x.as_str(),
            (Self::Gte(x), Some(v)) => v >= x.as_str(),
            (Self::Lt(x), Some(v)) => v < x.as_str(),
            (Self::Lte(x), Some(v)) => v <= x.as_str(),
            (Self::Contains(x), Some(v)) => v.contains(x.as_str()),
            (Self::NotContains(x), Some(v)) => !v.contains(x.as_str()),
        }
    }
}

/// SQL LIKE: `%` any run, `_` one character, `\` escapes.
fn like(pattern: &str, value: &str, case_insensitive: bool) -> bool {
    let fold = |s: &str| {
        if case_insensitive {
            s.to_lowercase()
        } else {
            s.to_owned()
        }
    };
    let p: Vec<char> = fold(pattern).chars().collect();
    let v: Vec<char> = fold(value).chars().collect();
    // Iterative matcher with backtracking on the last `%`.
    let (mut pi, mut vi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == '\\' && pi + 1 < p.len() && p[pi + 1] == v[vi] {
            pi += 2;
            vi += 1;
        } else if pi < p.len()
            && (p[pi] == '_' || (p[pi] == v[vi] && p[pi] != '%' && p[pi] != '\\'))
        {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Found by fuzzing: a 13 KB pattern of `%`s and escapes took seconds per value.
    #[test]
    fn long_patterns_are_refused() {
        let long = format!("%%%%a%_{}", "\\\\".repeat(200));
        for op in ["$like", "$nlike", "$ilike", "$nilike"] {
            assert_eq!(
                StringFilter::parse(&json!({ op: long })),
                Err(FilterError::PatternTooLong(op.to_owned()))
            );
        }
        let longest = "%".repeat(LIKE_PATTERN_CHARS_MAX);
        assert!(StringFilter::parse(&json!({ "$like": longest })).is_ok());
    }

    #[test]
    fn operators() {
        let cases = [
            (json!({"$eq": "a"}), Some("a"), true),
            (json!({"$eq": "a"}), None, false),
            (json!({"$ne": "a"}), None, true),
            (json!({"$in": ["a", "b"]}), Some("b"), true),
            (json!({"$nin": ["a", "b"]}), Some("c"), true),
            (json!({"$like": "gpt-%"}), Some("gpt-4o"), true),
            (json!({"$like": "gpt-_"}), Some("gpt-4o"), false),
            (json!({"$ilike": "GPT%"}), Some("gpt-4o"), true),
            (json!({"$nlike": "%o"}), Some("gpt-4o"), false),
            (json!({"$gt": "b"}), Some("c"), true),
            (json!({"$lte": "b"}), Some("c"), false),
            (
                json!({"$or": [{"$eq": "x"}, {"$eq": "y"}]}),
                Some("y"),
                true,
            ),
            (
                json!({"$and": [{"$like": "a%"}, {"$ne": "ab"}]}),
                Some("ab"),
                false,
            ),
            (json!({"$exists": false}), None, true),
            (json!({"$contains": "pt"}), Some("gpt"), true),
        ];
        for (filter, value, expected) in cases {
            let parsed = StringFilter::parse(&filter).expect("valid filter");
            assert_eq!(parsed.matches(value), expected, "{filter} on {value:?}");
        }
        assert!(StringFilter::parse(&json!({"$regex": "a"})).is_err());
        assert!(StringFilter::parse(&json!({"$in": "a"})).is_err());
        assert!(StringFilter::parse(&json!("a")).is_err());
    }
}
