//! `text-merge`: `field-merge`, plus a three-way merge of long text fields
//! (a note's body) when both sides changed one: by lines, then by words
//! inside the lines both changed, so two devices editing different paragraphs
//! of one page merge; a conflict only when the edits overlap. Conflict
//! markers are never written into data: an overlap is a `conflict` decision.
//!
//! Settings: `fields` (the text fields, required), and `field-merge`'s
//! `ignore`, `later_wins` and `by`, which also settle a text field whose
//! edits overlap. Every case other than a text field both sides changed is
//! decided by `field-merge`'s own code (`accord_policy_sdk::field_merge`).

mod text;

use accord_policy_sdk::field_merge::{FieldMergeSettings, Step, merge_data, record_step};
use accord_policy_sdk::{Decision, MergeInput, settings};
use serde::Deserialize;
use serde_json::Value;

pub use text::merge as merge_text;

#[derive(Deserialize)]
struct Settings {
    /// The text fields: merged by lines, then words, when both sides changed them.
    fields: Vec<String>,
    #[serde(flatten)]
    rules: FieldMergeSettings,
}

pub fn decide(input: &MergeInput) -> Decision {
    let (base, server) = match record_step(input) {
        Step::Decided(decision) => return decision,
        Step::MergeData { base, server } => (base, server),
    };
    let config: Settings = match settings(input) {
        Ok(s) => s,
        // A configuration mistake must not make the client drop its record: the host keeps it as a conflict.
        Err(e) => {
            return Decision::Fail(format!("text-merge needs policy_settings.fields, a list of text fields: {e}"));
        }
    };
    // Called only for a field both sides changed to different values.
    let settle = |field: &str, b: Option<&Value>, s: Option<&Value>, i: Option<&Value>| match (b, s, i) {
        (Some(Value::String(b)), Some(Value::String(s)), Some(Value::String(i)))
            if config.fields.iter().any(|f| f == field) =>
        {
            text::merge(b, s, i).map(Value::String)
        }
        _ => None,
    };
    let mut rules = config.rules.rules();
    rules.settle = Some(&settle);
    merge_data("text-merge", base, server, input.incoming(), &rules)
}

accord_policy_sdk::policy!(decide);

#[cfg(test)]
mod tests;
