//! Edits of a running subscription (OpenMeter's `subscription/patch`): typed, ordered
//! transformations of the stored spec at an edit time. Each patch sees the spec the previous
//! ones produced; the whole result is checked at the end. Nothing here writes or creates
//! entitlements: the caller stores the spec and materialises what changed.
//!
//! The past is never rewritten: an item removed from the running phase ends at the edit time
//! (a new version of a key closes the previous one there), items of earlier phases cannot be
//! touched, and phases that have started cannot be added, removed or moved into the past.

use super::{Item, Phase, Subscription};
use crate::product_catalog::Issue;
use crate::product_catalog::plans::rate_card_issues;
use chrono::{DateTime, TimeDelta, Utc};
use metron_engine::billing::RateCard;
use metron_engine::credit::IsoDuration;
use serde_json::Value;

/// Why a patch was refused; `index` is the patch's position in the request.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch or the resulting spec is malformed (OpenMeter's `PatchValidationError`, 400).
    #[error("patch[{index}]: {message}")]
    Invalid { index: usize, message: String },
    /// The added rate card is invalid (400 with its issues).
    #[error("patch[{index}]: invalid rate card")]
    RateCard { index: usize, issues: Vec<Issue> },
    /// The patch would change history (OpenMeter's `PatchForbiddenError`, 403).
    #[error("patch[{index}]: {message}")]
    Forbidden { index: usize, message: String },
    /// The patch does not fit the spec around it (OpenMeter's `PatchConflictError`, 409).
    #[error("patch[{index}]: {message}")]
    Conflict { index: usize, message: String },
}

pub type Result<T, E = PatchError> = std::result::Result<T, E>;

/// OpenMeter's bounds on a resource's name and description.
const NAME_LEN_MAX: usize = 256;
const DESCRIPTION_LEN_MAX: usize = 1024;

fn invalid(message: impl Into<String>) -> PatchError {
    PatchError::Invalid {
        index: 0,
        message: message.into(),
    }
}

fn forbidden(message: impl Into<String>) -> PatchError {
    PatchError::Forbidden {
        index: 0,
        message: message.into(),
    }
}

fn conflict(message: impl Into<String>) -> PatchError {
    PatchError::Conflict {
        index: 0,
        message: message.into(),
    }
}

impl PatchError {
    fn at(self, at: usize) -> Self {
        match self {
            PatchError::Invalid { message, .. } => PatchError::Invalid { index: at, message },
            PatchError::RateCard { issues, .. } => PatchError::RateCard { index: at, issues },
            PatchError::Forbidden { message, .. } => PatchError::Forbidden { index: at, message },
            PatchError::Conflict { message, .. } => PatchError::Conflict { index: at, message },
        }
    }
}

/// `SubscriptionPhaseCreate`: a phase added by an edit, `start_after` the subscription's start.
#[derive(Clone, Debug, PartialEq)]
pub struct NewPhase {
    pub key: String,
    pub name: String,
    pub description: Option<String>,
    pub start_after: Option<String>,
    pub duration: Option<String>,
}

/// `RemovePhaseShifting`: whether later phases move up (`next`) or the previous phase runs on
/// (`prev`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shift {
    Next,
    Prev,
}

/// `SubscriptionEditOperation`.
#[derive(Clone, Debug, PartialEq)]
pub enum Patch {
    AddItem {
        phase_key: String,
        rate_card: Box<RateCard>,
    },
    RemoveItem {
        phase_key: String,
        item_key: String,
    },
    AddPhase(NewPhase),
    RemovePhase {
        phase_key: String,
        shift: Shift,
    },
    StretchPhase {
        phase_key: String,
        extend_by: String,
    },
    UnscheduleEdit,
}

fn field<'a>(value: &'a Value, name: &str) -> Result<&'a str, String> {
    value
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{name} is required and must be a string"))
}

fn opt_field(value: &Value, name: &str) -> Result<Option<String>, String> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

impl Patch {
    /// Reads one `SubscriptionEditOperation` (discriminated by `op`).
    pub fn from_json(value: &Value) -> Result<Patch, String> {
        if !value.is_object() {
            return Err("an operation must be an object".into());
        }
        Ok(match field(value, "op")? {
            "add_item" => {
                let card = value.get("rateCard").ok_or("rateCard is required")?;
                Patch::AddItem {
                    phase_key: field(value, "phaseKey")?.to_owned(),
                    rate_card: Box::new(
                        serde_json::from_value(card.clone())
                            .map_err(|e| format!("rateCard: {e}"))?,
                    ),
                }
            }
            "remove_item" => Patch::RemoveItem {
                phase_key: field(value, "phaseKey")?.to_owned(),
                item_key: field(value, "itemKey")?.to_owned(),
            },
            "add_phase" => {
                let phase = value.get("phase").ok_or("phase is required")?;
                if !phase.is_object() {
                    return Err("phase must be an object".into());
                }
                if phase.get("startAfter").is_none() {
                    return Err(
                        "phase.startAfter is required (null: the subscription's start)".into(),
                    );
                }
                Patch::AddPhase(NewPhase {
                    key: field(phase, "key")?.to_owned(),
                    name: field(phase, "name")?.to_owned(),
                    description: opt_field(phase, "description")?,
                    start_after: opt_field(phase, "startAfter")?,
                    duration: opt_field(phase, "duration")?,
                })
            }
            "remove_phase" => Patch::RemovePhase {
                phase_key: field(value, "phaseKey")?.to_owned(),
                shift: match field(value, "shift")? {
                    "next" => Shift::Next,
                    "prev" => Shift::Prev,
                    other => return Err(format!("invalid shift behavior: {other}")),
                },
            },
            "stretch_phase" => Patch::StretchPhase {
                phase_key: field(value, "phaseKey")?.to_owned(),
                extend_by: field(value, "extendBy")?.to_owned(),
            },
            "unschedule_edit" => Patch::UnscheduleEdit,
            other => return Err(format!("unknown operation {other:?}")),
        })
    }
}

/// Applies `patches` in order to `sub` as of `at` (the edit time), then checks the result.
/// On error `sub` may be half changed: callers apply to a copy.
pub fn apply(sub: &mut Subscription, patches: &[Patch], at: DateTime<Utc>) -> Result<()> {
    for (index, patch) in patches.iter().enumerate() {
        apply_one(sub, patch, at).map_err(|e| e.at(index))?;
    }
    check(sub).map_err(|e| e.at(patches.len().saturating_sub(1)))
}

fn apply_one(sub: &mut Subscription, patch: &Patch, at: DateTime<Utc>) -> Result<()> {
    match patch {
        Patch::AddItem {
            phase_key,
            rate_card,
        } => add_item(sub, phase_key, rate_card, at),
        Patch::RemoveItem {
            phase_key,
            item_key,
        } => remove_item(sub, phase_key, item_key, at),
        Patch::AddPhase(phase) => add_phase(sub, phase, at),
        Patch::RemovePhase { phase_key, shift } => remove_phase(sub, phase_key, *shift, at),
        Patch::StretchPhase {
            phase_key,
            extend_by,
        } => stretch_phase(sub, phase_key, extend_by, at),
        Patch::UnscheduleEdit => unschedule_edit(sub, at),
    }
}

fn phase_index(sub: &Subscription, key: &str) -> Result<usize> {
    sub.phases
        .iter()
        .position(|p| p.key == key)
        .ok_or_else(|| invalid(format!("phase {key} not found")))
}

/// Where the phase stands against the edit time: before the running phase (history), the
/// running one, or later.
#[derive(PartialEq, Eq)]
enum Place {
    Past,
    Current,
    Future,
}

fn place(sub: &Subscription, index: usize, at: DateTime<Utc>) -> Place {
    let start = sub.phases[index].active_from;
    match sub.phase_at(at) {
        Some((current, _)) if current == index => Place::Current,
        Some((current, _)) if start < sub.phases[current].active_from => Place::Past,
        Some(_) => Place::Future,
        None if start < at => Place::Past,
        None => Place::Future,
    }
}

fn versions(phase: &Phase, key: &str) -> Vec<usize> {
    (0..phase.items.len())
        .filter(|i| phase.items[*i].rate_card.key() == key)
        .collect()
}

fn add_item(
    sub: &mut Subscription,
    phase_key: &str,
    card: &RateCard,
    at: DateTime<Utc>,
) -> Result<()> {
    let index = phase_index(sub, phase_key)?;
    let issues: Vec<Issue> = rate_card_issues(card)
        .into_iter()
        .filter(|i| i.critical)
        .collect();
    if !issues.is_empty() {
        return Err(PatchError::RateCard { index: 0, issues });
    }
    let key = card.key();
    let running = sub.phase_at(at).is_some();
    match place(sub, index, at) {
        Place::Past => {
            return Err(forbidden(format!(
                "cannot add item to phase {phase_key} which starts before current phase"
            )));
        }
        // Without a running phase OpenMeter asks the whole phase to be empty, with one only
        // the key.
        Place::Future if !running && !sub.phases[index].items.is_empty() => {
            return Err(forbidden(format!(
                "cannot add item to future phase {phase_key} which already has items"
            )));
        }
        Place::Future if !versions(&sub.phases[index], key).is_empty() => {
            return Err(forbidden(format!(
                "cannot add item to future phase {phase_key} which already has items"
            )));
        }
        Place::Future => sub.phases[index]
            .items
            .push(Item::new(card.clone(), None, None)),
        Place::Current => {
            let phase = &mut sub.phases[index];
            let from = (at > phase.active_from).then_some(at);
            if let Some(&last) = versions(phase, key).last() {
                let last = &mut phase.items[last];
                match last.active_to {
                    Some(end) if end > at => {
                        return Err(forbidden(format!(
                            "cannot add item to phase {phase_key} which would overlap with a current item, you should delete first"
                        )));
                    }
                    Some(_) => {}
                    None => last.active_to = Some(at),
                }
            }
            phase.items.push(Item::new(card.clone(), from, None));
        }
    }
    Ok(())
}

fn remove_item(
    sub: &mut Subscription,
    phase_key: &str,
    item_key: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let index = phase_index(sub, phase_key)?;
    let Some(&last) = versions(&sub.phases[index], item_key).last() else {
        return Err(invalid(format!(
            "items for key {item_key} doesn't exists in phase {phase_key}"
        )));
    };
    match place(sub, index, at) {
        Place::Past => Err(forbidden(format!(
            "cannot remove item from phase {phase_key} which starts before current phase"
        ))),
        Place::Current => {
            let (from, _) = sub.item_interval(index, &sub.phases[index].items[last]);
            let phase = &mut sub.phases[index];
            if from >= at {
                // Scheduled, never started: nothing to keep.
                phase.items.remove(last);
            } else {
                let item = &mut phase.items[last];
                item.active_to = Some(item.active_to.map_or(at, |end| end.min(at)));
            }
            Ok(())
        }
        Place::Future => {
            sub.phases[index].items.remove(last);
            Ok(())
        }
    }
}

fn parse_duration(text: &str, name: &str) -> Result<IsoDuration> {
    IsoDuration::parse(text).map_err(|_| invalid(format!("invalid {name} {text:?}")))
}

/// Moves phases `from..` (and their items' own bounds) by `delta`.
fn shift_phases(sub: &mut Subscription, from: usize, delta: TimeDelta) {
    for phase in sub.phases.iter_mut().skip(from) {
        phase.active_from += delta;
        for item in &mut phase.items {
            item.active_from = item.active_from.map(|t| t + delta);
            item.active_to = item.active_to.map(|t| t + delta);
        }
    }
}

fn add_phase(sub: &mut Subscription, new: &NewPhase, at: DateTime<Utc>) -> Result<()> {
    if sub.phases.iter().any(|p| p.key == new.key) {
        return Err(conflict(format!("phase {} already exists", new.key)));
    }
    if !crate::features::is_key(&new.key) {
        return Err(invalid(format!(
            "phase key {:?} must match ^[a-z0-9]+(?:_[a-z0-9]+)*$ and be at most 64 characters",
            new.key
        )));
    }
    if new.name.is_empty() || new.name.chars().count() > NAME_LEN_MAX {
        return Err(invalid(format!(
            "phase name must be 1 to {NAME_LEN_MAX} characters"
        )));
    }
    if new
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > DESCRIPTION_LEN_MAX)
    {
        return Err(invalid(format!(
            "phase description must be at most {DESCRIPTION_LEN_MAX} characters"
        )));
    }
    let start = match &new.start_after {
        None => sub.active_from,
        Some(text) => parse_duration(text, "startAfter")?
            .add_times(sub.active_from, 1)
            .ok_or_else(|| invalid("phase start out of range"))?,
    };
    if start <= at {
        return Err(forbidden("cannot add phase in the past"));
    }
    if sub.active_to.is_some_and(|end| start >= end) {
        return Err(forbidden("cannot add phase after the subscription ends"));
    }
    let next = sub.phases.iter().position(|p| p.active_from >= start);
    if let Some(next) = next {
        // The next phase starts where the new one's duration ends; the later ones keep their
        // spacing.
        let Some(text) = &new.duration else {
            return Err(invalid(
                "duration is required when the phase is not the last one",
            ));
        };
        let next_start = parse_duration(text, "duration")?
            .add_times(start, 1)
            .ok_or_else(|| invalid("phase start out of range"))?;
        let delta = next_start - sub.phases[next].active_from;
        shift_phases(sub, next, delta);
    }
    let phase = Phase {
        id: ulid::Ulid::new().to_string(),
        key: new.key.clone(),
        name: new.name.clone(),
        description: new.description.clone(),
        metadata: None,
        active_from: start,
        items: Vec::new(),
    };
    sub.phases.insert(next.unwrap_or(sub.phases.len()), phase);
    Ok(())
}

fn remove_phase(sub: &mut Subscription, key: &str, shift: Shift, at: DateTime<Utc>) -> Result<()> {
    let index = phase_index(sub, key)?;
    if sub.phases[index].active_from <= at {
        return Err(forbidden("cannot remove already started phase"));
    }
    if shift == Shift::Next
        && let Some(next) = sub.phases.get(index + 1)
    {
        let delta = sub.phases[index].active_from - next.active_from;
        shift_phases(sub, index + 1, delta);
    }
    sub.phases.remove(index);
    Ok(())
}

fn stretch_phase(
    sub: &mut Subscription,
    key: &str,
    extend_by: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let index = phase_index(sub, key)?;
    let (sign, text) = match extend_by.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, extend_by),
    };
    let duration = parse_duration(text, "extendBy")?;
    if duration == IsoDuration::default() {
        return Err(invalid("duration cannot be zero"));
    }
    if place(sub, index, at) == Place::Past {
        return Err(forbidden("cannot extend past phase"));
    }
    if sub.phases.len() < 2 {
        return Err(conflict("cannot stretch a single phase"));
    }
    for i in index + 1..sub.phases.len() {
        let old = sub.phases[i].active_from;
        let new = duration
            .add_times(old, sign)
            .ok_or_else(|| invalid("phase start out of range"))?;
        if new <= sub.phases[i - 1].active_from {
            return Err(conflict(format!(
                "phase {} would disappear due to stretching",
                sub.phases[i - 1].key
            )));
        }
        if old > at && new <= at {
            return Err(forbidden(format!(
                "phase {} would start in the past due to stretching",
                sub.phases[i].key
            )));
        }
        let delta = new - old;
        let phase = &mut sub.phases[i];
        phase.active_from = new;
        for item in &mut phase.items {
            item.active_from = item.active_from.map(|t| t + delta);
            item.active_to = item.active_to.map(|t| t + delta);
        }
    }
    Ok(())
}

/// Drops the running phase's scheduled item versions and the scheduled end of the version
/// running now (OpenMeter's `PatchUnscheduleEdit`). Versions that ended before the edit time
/// stay: they are history.
fn unschedule_edit(sub: &mut Subscription, at: DateTime<Utc>) -> Result<()> {
    let Some((index, _)) = sub.phase_at(at) else {
        return Err(conflict(
            "current phase doesn't exist, cannot unschedule edits",
        ));
    };
    let intervals: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = sub.phases[index]
        .items
        .iter()
        .map(|item| sub.item_interval(index, item))
        .collect();
    let mut keys: Vec<String> = sub.phases[index]
        .items
        .iter()
        .map(|i| i.rate_card.key().to_owned())
        .collect();
    keys.sort();
    keys.dedup();
    let mut drop = Vec::new();
    for key in keys {
        for i in versions(&sub.phases[index], &key).into_iter().rev() {
            let (from, to) = intervals[i];
            if from > at {
                drop.push(i);
                continue;
            }
            if to.is_none_or(|to| at < to) {
                sub.phases[index].items[i].active_to = None;
            }
            break;
        }
    }
    drop.sort_unstable();
    for i in drop.into_iter().rev() {
        sub.phases[index].items.remove(i);
    }
    Ok(())
}

/// The spec after all patches: at least one phase, starting one after the other, the first
/// at the subscription's start.
fn check(sub: &Subscription) -> Result<()> {
    let Some(first) = sub.phases.first() else {
        return Err(invalid("subscription must have at least one phase"));
    };
    if first.active_from != sub.active_from {
        return Err(invalid(
            "the first phase must start when the subscription starts",
        ));
    }
    if sub
        .phases
        .windows(2)
        .any(|w| w[1].active_from <= w[0].active_from)
    {
        return Err(invalid("phases must start one after the other"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
