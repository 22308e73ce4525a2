//! Failpoints: named places where a test makes the real binary fail on purpose.
//!
//! A failpoint is off unless configured, and then costs one relaxed atomic load. The
//! `metron` binary configures them from `METRON_FAILPOINTS` at start (and, only when that
//! variable is set, from `PUT /debug/failpoints`), as `name=action;name=action`, where an
//! action is `off`, `error`, `panic` or `sleep(<ms>)`. The code at a failpoint decides
//! what `error` means there (an IO error, a failed put) and how to sleep (thread or task).
//!
//! The points: `log.write` and `log.fsync` (the embedded log's writer thread),
//! `objects.put` (every object written: Parquet, manifests), `partition.read` (before a
//! partition reads its next batch), `serve.start` (`sleep` only: the binary's start, after the
//! pipeline started and before its HTTP server does), `sql.tables` (a holder asked for a SQL
//! query's tables by a standby: `error` answers 404, as a binary without that route would;
//! `sleep` holds the SQL slot it took that long first).

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What a configured failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The operation fails with an error.
    Error,
    /// The thread panics.
    Panic,
    /// The operation waits this long first.
    Sleep(Duration),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("failpoint {0:?}: expected name=action")]
    Syntax(String),
    #[error("failpoint {name:?}: unknown action {action:?} (off, error, panic, sleep(<ms>))")]
    Action { name: String, action: String },
}

static ANY: AtomicBool = AtomicBool::new(false);
static POINTS: RwLock<Option<HashMap<String, Action>>> = RwLock::new(None);

/// The action configured at a failpoint, if any.
pub fn eval(name: &str) -> Option<Action> {
    if !ANY.load(Ordering::Relaxed) {
        return None;
    }
    let points = POINTS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    points.as_ref().and_then(|p| p.get(name).copied())
}

/// Applies `name=action;...`: each named point takes its action (`off` removes it);
/// points not named keep theirs. Nothing changes when any part is invalid.
pub fn configure(spec: &str) -> Result<(), Error> {
    let mut parsed = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, action) = part
            .split_once('=')
            .ok_or_else(|| Error::Syntax(part.to_owned()))?;
        let (name, action) = (name.trim(), action.trim());
        if name.is_empty() {
            return Err(Error::Syntax(part.to_owned()));
        }
        let action = match action {
            "off" => None,
            "error" => Some(Action::Error),
            "panic" => Some(Action::Panic),
            other => {
                let ms = other
                    .strip_prefix("sleep(")
                    .and_then(|s| s.strip_suffix(')'))
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| Error::Action {
                        name: name.to_owned(),
                        action: other.to_owned(),
                    })?;
                Some(Action::Sleep(Duration::from_millis(ms)))
            }
        };
        parsed.push((name.to_owned(), action));
    }
    let mut points = POINTS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let map = points.get_or_insert_with(HashMap::new);
    for (name, action) in parsed {
        match action {
            Some(a) => map.insert(name, a),
            None => map.remove(&name),
        };
    }
    ANY.store(!map.is_empty(), Ordering::Relaxed);
    Ok(())
}

/// The configured points, as `name=action` sorted by name.
pub fn describe() -> String {
    let points = POINTS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut list: Vec<String> = points
        .iter()
        .flatten()
        .map(|(name, action)| match action {
            Action::Error => format!("{name}=error"),
            Action::Panic => format!("{name}=panic"),
            Action::Sleep(d) => format!("{name}=sleep({})", d.as_millis()),
        })
        .collect();
    list.sort();
    list.join(";")
}

/// For synchronous code: sleeps for `sleep`, panics for `panic`, and answers whether
/// the operation must fail.
pub fn should_fail_blocking(name: &str) -> bool {
    match eval(name) {
        None => false,
        Some(Action::Error) => true,
        Some(Action::Panic) => panic!("failpoint {name}"),
        Some(Action::Sleep(d)) => {
            std::thread::sleep(d);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the registry is process-wide.
    #[test]
    fn configure_eval_and_off() {
        assert_eq!(eval("t.a"), None);
        configure("t.a=error; t.b=sleep(25)").unwrap();
        assert_eq!(eval("t.a"), Some(Action::Error));
        assert_eq!(eval("t.b"), Some(Action::Sleep(Duration::from_millis(25))));
        assert!(should_fail_blocking("t.a"));
        assert!(!should_fail_blocking("t.c"));
        assert!(matches!(
            configure("t.a=off;t.c=explode"),
            Err(Error::Action { .. })
        ));
        // Nothing changed by the invalid spec.
        assert_eq!(eval("t.a"), Some(Action::Error));
        assert!(matches!(configure("nonsense"), Err(Error::Syntax(_))));
        configure("t.a=off;t.b=off").unwrap();
        assert_eq!(eval("t.a"), None);
        assert_eq!(describe(), "");
        assert!(!ANY.load(Ordering::Relaxed));
    }
}
