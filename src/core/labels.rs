//! Bounded metric label values (issue 14): a label value that comes from a
//! request (model, served model, prompt id and version) keeps its name only
//! when the configuration knows it; anything else is `other`. A per-VM cap on
//! the distinct values of each label family bounds the series even for large
//! configurations. Envoy never frees a stat, so an unbounded label would let
//! a client grow Envoy's memory without limit.

use std::collections::{HashMap, HashSet};

use crate::core::audit::label;
use crate::core::cost::PriceTable;

/// The value used for anything outside the known set or over the cap.
pub const OTHER: &str = "other";
/// Default cap on distinct values per label family (per VM).
pub const DEFAULT_MAX_LABEL_VALUES: usize = 200;

/// Names the configuration knows, compiled once.
#[derive(Debug, Default, Clone)]
pub struct Labels {
    known_models: HashSet<String>,
    known_prompts: HashSet<String>,
    pub max_values: usize,
}

impl Labels {
    pub fn new(
        models: impl IntoIterator<Item = String>,
        prompts: impl IntoIterator<Item = String>,
        max_values: usize,
    ) -> Self {
        Self {
            known_models: models
                .into_iter()
                .filter(|m| !m.is_empty() && !m.contains('*'))
                .collect(),
            known_prompts: prompts.into_iter().collect(),
            max_values,
        }
    }

    /// The label of a model name (already escaped for a stat name): the name
    /// itself when the configuration names it, else the price-table entry
    /// it resolves to (`gpt-4o-2024-08-06` → `gpt-4o`), else `other`.
    pub fn model(&self, prices: &PriceTable, model: &str) -> String {
        if self.known_models.contains(model) {
            return label(model);
        }
        match prices.lookup(model) {
            Some((name, _)) => label(name),
            None => OTHER.to_string(),
        }
    }

    /// The label of a prompt id or version: itself when configured.
    pub fn prompt(&self, value: &str) -> String {
        if self.known_prompts.contains(value) {
            label(value)
        } else {
            OTHER.to_string()
        }
    }
}

/// Per-VM record of the values each label family has used, capped.
#[derive(Debug, Default)]
pub struct LabelCap {
    seen: HashMap<&'static str, HashSet<String>>,
}

impl LabelCap {
    /// `value` if the family already used it or still has room, else `other`.
    pub fn admit(&mut self, family: &'static str, value: String, max: usize) -> String {
        if value == OTHER {
            return value;
        }
        let set = self.seen.entry(family).or_default();
        if set.contains(&value) {
            return value;
        }
        if set.len() >= max {
            return OTHER.to_string();
        }
        set.insert(value.clone());
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_models_are_other_and_dated_names_resolve() {
        let prices = PriceTable::defaults().unwrap();
        let l = Labels::new(
            ["my-model".to_string(), "gpt-*".to_string()],
            ["support".to_string()],
            3,
        );
        assert_eq!(l.model(&prices, "my-model"), "my-model");
        assert_eq!(l.model(&prices, "gpt-4o"), "gpt-4o");
        assert_eq!(l.model(&prices, "gpt-4o-2024-08-06"), "gpt-4o");
        assert_eq!(l.model(&prices, "random-123"), OTHER);
        assert_eq!(l.model(&prices, "gpt-x"), OTHER);
        assert_eq!(l.prompt("support"), "support");
        assert_eq!(l.prompt("nope"), OTHER);
    }

    #[test]
    fn the_cap_bounds_distinct_values() {
        let mut c = LabelCap::default();
        let got: HashSet<String> = (0..10_000)
            .map(|i| c.admit("model", format!("m{}", i % 50), 10))
            .collect();
        assert_eq!(got.len(), 11); // 10 values + other
        assert_eq!(c.admit("model", "m3".into(), 10), "m3");
        assert_eq!(c.admit("prompt", "p".into(), 10), "p");
    }
}
