//! The price table: what a request cost, in integer micro-dollars.
//!
//! Defaults for current OpenAI and Anthropic models live in
//! `data/prices.json` (list prices with their date); the plugin config's
//! `pricing` section ([`PricingConfig`]) overrides or extends them.
//!
//! ## Billing convention
//!
//! [`Usage`] counts every input token in `input_tokens` (see
//! [`super::usage`]). The cost is
//!
//! ```text
//! uncached_input × input price
//! + cache_read_tokens × cached-input price   (input price if none given)
//! + cache_creation_tokens × cache-creation price   (input price if none)
//! + output_tokens × output price
//! ```
//!
//! where `uncached_input = input_tokens − cache_read − cache_creation`. This
//! matches both providers: OpenAI's `prompt_tokens` includes its cached
//! tokens, Anthropic's `input_tokens` excludes cache reads and writes (the
//! usage parser adds them back in).
//!
//! Prices are held as integer micro-USD per million tokens; the four
//! products are summed exactly (u128) and divided by 10⁶ once, rounding half
//! up. A model without a price has no cost (`None`), never a zero one.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::error::ConfigError;
use super::usage::Usage;

/// The default price table (JSON).
pub const DEFAULT_PRICES_JSON: &str = include_str!("../../data/prices.json");

/// The largest accepted price, USD per million tokens.
pub const MAX_PRICE_PER_MTOK: f64 = 1_000_000.0;

const MICRO: u64 = 1_000_000;

/// One model's prices in USD per million tokens, as written in the config
/// and in `data/prices.json`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPriceConfig {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Cache-read price; the input price when absent.
    #[serde(default)]
    pub cached_input_per_mtok: Option<f64>,
    /// Cache-write price (Anthropic); the input price when absent.
    #[serde(default)]
    pub cache_creation_per_mtok: Option<f64>,
}

/// The `pricing` section of the plugin config:
/// `{"models": {"<model>": {"input_per_mtok": 2.5, "output_per_mtok": 10.0,
/// "cached_input_per_mtok": 1.25}}}`. Each entry replaces the built-in
/// entry of that name entirely (absent optional prices fall back to the
/// input price, not to the built-in ones) or adds a model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    #[serde(default)]
    pub models: BTreeMap<String, ModelPriceConfig>,
    /// Price of any model not in the table. Absent (default): such a model
    /// has no cost, and a request for it is refused (403
    /// `model_not_priced`) when a dollar limit applies to the caller.
    #[serde(default)]
    pub unknown_model: Option<ModelPriceConfig>,
}

/// One model's prices, micro-USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelPrice {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_creation: u64,
}

/// The compiled price table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
    as_of: Option<String>,
    /// `pricing.unknown_model`.
    unknown: Option<ModelPrice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    as_of: String,
    #[allow(dead_code)]
    source: String,
    models: BTreeMap<String, ModelPriceConfig>,
}

impl PricingConfig {
    /// The built-in prices with this config's entries on top. Errors name
    /// the field, e.g. `pricing.models.gpt-4o.input_per_mtok`.
    pub fn compile(&self) -> Result<PriceTable, ConfigError> {
        let mut table = PriceTable::defaults()?;
        for (name, price) in &self.models {
            table.insert_config(name, price, "pricing.models")?;
        }
        if let Some(p) = &self.unknown_model {
            table.unknown = Some(p.compile("pricing.unknown_model")?);
        }
        Ok(table)
    }
}

impl ModelPriceConfig {
    fn compile(&self, field: &str) -> Result<ModelPrice, ConfigError> {
        let input = micro_per_mtok(self.input_per_mtok, field, "input_per_mtok")?;
        let output = micro_per_mtok(self.output_per_mtok, field, "output_per_mtok")?;
        let cached_input = match self.cached_input_per_mtok {
            Some(p) => micro_per_mtok(p, field, "cached_input_per_mtok")?,
            None => input,
        };
        let cache_creation = match self.cache_creation_per_mtok {
            Some(p) => micro_per_mtok(p, field, "cache_creation_per_mtok")?,
            None => input,
        };
        Ok(ModelPrice {
            input,
            output,
            cached_input,
            cache_creation,
        })
    }
}

fn micro_per_mtok(price: f64, parent: &str, name: &str) -> Result<u64, ConfigError> {
    if !price.is_finite() || price < 0.0 {
        return Err(ConfigError::new(
            format!("{parent}.{name}"),
            "must be a finite, non-negative number (USD per million tokens)",
        ));
    }
    if price > MAX_PRICE_PER_MTOK {
        return Err(ConfigError::new(
            format!("{parent}.{name}"),
            format!("must be at most {MAX_PRICE_PER_MTOK} (USD per million tokens)"),
        ));
    }
    // Within [0, 1e12]: the cast is exact after rounding.
    Ok((price * 1_000_000.0).round() as u64)
}

impl PriceTable {
    /// The built-in table from `data/prices.json`.
    pub fn defaults() -> Result<PriceTable, ConfigError> {
        let file: PriceFile = serde_json::from_str(DEFAULT_PRICES_JSON)
            .map_err(|e| ConfigError::new("data/prices.json", e.to_string()))?;
        let mut table = PriceTable {
            models: HashMap::with_capacity(file.models.len()),
            as_of: Some(file.as_of),
            unknown: None,
        };
        for (name, price) in &file.models {
            table.insert_config(name, price, "data/prices.json:models")?;
        }
        Ok(table)
    }

    fn insert_config(
        &mut self,
        name: &str,
        price: &ModelPriceConfig,
        parent: &str,
    ) -> Result<(), ConfigError> {
        if name.is_empty() {
            return Err(ConfigError::new(parent, "model names must not be empty"));
        }
        let price = price.compile(&format!("{parent}.{name}"))?;
        self.models.insert(name.to_string(), price);
        Ok(())
    }

    /// Sets one model's prices.
    pub fn insert(&mut self, model: impl Into<String>, price: ModelPrice) {
        self.models.insert(model.into(), price);
    }

    /// The date of the built-in prices (`as_of` in `data/prices.json`).
    pub fn as_of(&self) -> Option<&str> {
        self.as_of.as_deref()
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The table entry for `model`: its exact name, else the longest entry
    /// that is a prefix of it followed by `-` (`gpt-4o-2024-08-06` →
    /// `gpt-4o`, `gpt-4o-mini-2024-07-18` → `gpt-4o-mini`).
    pub fn lookup(&self, model: &str) -> Option<(&str, &ModelPrice)> {
        if let Some((name, price)) = self.models.get_key_value(model) {
            return Some((name.as_str(), price));
        }
        model.rmatch_indices('-').find_map(|(i, _)| {
            let prefix = model.get(..i)?;
            self.models
                .get_key_value(prefix)
                .map(|(name, price)| (name.as_str(), price))
        })
    }

    /// The cost of `usage` on `model` in micro-USD, rounded half up;
    /// `None` when the model has no price. See the module documentation.
    pub fn cost_micro_usd(&self, model: &str, usage: &Usage) -> Option<u64> {
        let price = match self.lookup(model) {
            Some((_, p)) => p,
            None => self.unknown.as_ref()?,
        };
        Some(price.cost_micro_usd(usage))
    }

    /// Whether `model` has a price (its own, or `pricing.unknown_model`).
    pub fn priced(&self, model: &str) -> bool {
        self.unknown.is_some() || self.lookup(model).is_some()
    }

    /// The model names of the table.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// The most expensive input and output prices of the table (and of
    /// `unknown_model`): a safe estimate when the model is not known.
    pub fn max_price(&self) -> ModelPrice {
        let mut m = self.unknown.unwrap_or(ModelPrice {
            input: 0,
            output: 0,
            cached_input: 0,
            cache_creation: 0,
        });
        for p in self.models.values() {
            m.input = m.input.max(p.input);
            m.output = m.output.max(p.output);
            m.cached_input = m.cached_input.max(p.cached_input);
            m.cache_creation = m.cache_creation.max(p.cache_creation);
        }
        m
    }
}

impl ModelPrice {
    /// The cost of `usage` at these prices, micro-USD, rounded half up.
    pub fn cost_micro_usd(&self, usage: &Usage) -> u64 {
        let term = |tokens: u64, price: u64| u128::from(tokens).saturating_mul(u128::from(price));
        let total = term(usage.uncached_input_tokens(), self.input)
            .saturating_add(term(usage.cache_read_tokens, self.cached_input))
            .saturating_add(term(usage.cache_creation_tokens, self.cache_creation))
            .saturating_add(term(usage.output_tokens, self.output));
        let micro = total.saturating_add(u128::from(MICRO / 2)) / u128::from(MICRO);
        u64::try_from(micro).unwrap_or(u64::MAX)
    }
}

/// Micro-USD as a decimal USD string with 6 decimals (`1234` →
/// `"0.001234"`), e.g. for `x-llmgate-cost-usd`.
pub fn format_usd(micro_usd: u64) -> String {
    format!("{}.{:06}", micro_usd / MICRO, micro_usd % MICRO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, read: u64, creation: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: read,
            cache_creation_tokens: creation,
        }
    }

    fn config(json: &str) -> Result<PricingConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn defaults_load_and_cover_the_listed_models() {
        let t = PriceTable::defaults().unwrap();
        assert!(t.as_of().unwrap().starts_with("2026-"));
        for m in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "o3",
            "o4-mini",
            "gpt-5",
            "gpt-5-mini",
            "claude-3-5-haiku",
            "claude-3-7-sonnet",
            "claude-sonnet-4",
            "claude-opus-4",
            "claude-haiku-4-5",
            "claude-sonnet-4-5",
        ] {
            assert_eq!(t.lookup(m).unwrap().0, m);
        }
        let gpt4o = t.lookup("gpt-4o").unwrap().1;
        assert_eq!(
            *gpt4o,
            ModelPrice {
                input: 2_500_000,
                output: 10_000_000,
                cached_input: 1_250_000,
                cache_creation: 2_500_000
            }
        );
        assert_eq!(t.lookup("gpt-4o-mini").unwrap().1.cached_input, 75_000);
        assert_eq!(PricingConfig::default().compile().unwrap(), t);
    }

    #[test]
    fn prefix_match() {
        let t = PriceTable::defaults().unwrap();
        let name = |m: &str| t.lookup(m).map(|(n, _)| n.to_string());
        assert_eq!(name("gpt-4o-2024-08-06").as_deref(), Some("gpt-4o"));
        assert_eq!(name("gpt-4o-mini").as_deref(), Some("gpt-4o-mini"));
        assert_eq!(
            name("gpt-4o-mini-2024-07-18").as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            name("claude-sonnet-4-5-20250929").as_deref(),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(
            name("claude-sonnet-4-20250514").as_deref(),
            Some("claude-sonnet-4")
        );
        assert_eq!(
            name("claude-3-5-haiku-latest").as_deref(),
            Some("claude-3-5-haiku")
        );
        assert_eq!(name("o3-mini-2025-01-31").as_deref(), Some("o3-mini"));
        assert_eq!(name("gpt-4o2"), None, "a prefix must be followed by '-'");
        assert_eq!(name("gpt-4"), None);
        assert_eq!(name("my-gpt-4o"), None);
        assert_eq!(name(""), None);
        assert_eq!(name("-"), None);
        assert_eq!(name("gpt-4o-"), Some("gpt-4o".into()));
    }

    #[test]
    fn cost_arithmetic() {
        let cfg = config(
            r#"{"models":{"m":{"input_per_mtok":2.5,"output_per_mtok":10.0,"cached_input_per_mtok":1.25}}}"#,
        )
        .unwrap();
        let t = cfg.compile().unwrap();
        // 1M input, 1M output: $2.50 + $10.00.
        assert_eq!(
            t.cost_micro_usd("m", &usage(1_000_000, 1_000_000, 0, 0)),
            Some(12_500_000)
        );
        // 1000 in (400 cached) + 100 out: 600*2.5 + 400*1.25 + 100*10 = 1500+500+1000 = 3000 micro.
        assert_eq!(t.cost_micro_usd("m", &usage(1000, 100, 400, 0)), Some(3000));
        // Rounding half up: 1 input token = 2.5 micro -> 3; 1 cached = 1.25 -> 1.
        assert_eq!(t.cost_micro_usd("m", &usage(1, 0, 0, 0)), Some(3));
        assert_eq!(t.cost_micro_usd("m", &usage(1, 0, 1, 0)), Some(1));
        // Summed before rounding: 3 tokens * 2.5 = 7.5 -> 8 (not 3 * 3 = 9).
        assert_eq!(t.cost_micro_usd("m", &usage(3, 0, 0, 0)), Some(8));
        // Zero usage on a known model costs 0, an unknown model has no cost.
        assert_eq!(t.cost_micro_usd("m", &usage(0, 0, 0, 0)), Some(0));
        assert_eq!(
            t.cost_micro_usd("unknown-model", &usage(10, 10, 0, 0)),
            None
        );
        // Cache creation falls back to the input price when not given.
        assert_eq!(t.cost_micro_usd("m", &usage(1000, 0, 0, 1000)), Some(2500));
        // Inconsistent usage (more cached than input) saturates, no panic.
        assert_eq!(t.cost_micro_usd("m", &usage(0, 0, 1000, 0)), Some(1250));
        // Huge counts saturate.
        let max = usage(u64::MAX, u64::MAX, 0, 0);
        assert!(t.cost_micro_usd("m", &max).unwrap() > 0);
        let big =
            config(r#"{"models":{"m":{"input_per_mtok":1000000,"output_per_mtok":1000000}}}"#)
                .unwrap()
                .compile()
                .unwrap();
        assert_eq!(big.cost_micro_usd("m", &max), Some(u64::MAX));
    }

    #[test]
    fn anthropic_cost_with_cache() {
        let t = PriceTable::defaults().unwrap();
        // claude-sonnet-4-5: $3 in, $15 out, $0.30 read, $3.75 write.
        // Parsed Anthropic usage: input_tokens 25 + read 2000 + creation 100.
        let u = usage(2125, 15, 2000, 100);
        // 25*3 + 2000*0.3 + 100*3.75 + 15*15 = 75 + 600 + 375 + 225 = 1275.
        assert_eq!(
            t.cost_micro_usd("claude-sonnet-4-5-20250929", &u),
            Some(1275)
        );
        // OpenAI: gpt-4o-mini, 1200 prompt (1024 cached) + 7 out:
        // 176*0.15 + 1024*0.075 + 7*0.6 = 26.4 + 76.8 + 4.2 = 107.4 -> 107.
        assert_eq!(
            t.cost_micro_usd("gpt-4o-mini-2024-07-18", &usage(1200, 7, 1024, 0)),
            Some(107)
        );
    }

    #[test]
    fn overrides_and_extensions() {
        let cfg = config(
            r#"{"models":{"gpt-4o":{"input_per_mtok":1,"output_per_mtok":2},"my-local":{"input_per_mtok":0,"output_per_mtok":0}}}"#,
        )
        .unwrap();
        let t = cfg.compile().unwrap();
        assert_eq!(
            *t.lookup("gpt-4o-2024-08-06").unwrap().1,
            ModelPrice {
                input: 1_000_000,
                output: 2_000_000,
                cached_input: 1_000_000,
                cache_creation: 1_000_000
            }
        );
        assert_eq!(
            t.cost_micro_usd("my-local", &usage(1000, 1000, 0, 0)),
            Some(0)
        );
        assert!(t.lookup("claude-sonnet-4").is_some(), "defaults kept");
    }

    #[test]
    fn config_errors_name_the_field() {
        let cases = [
            (
                r#"{"models":{"gpt-4o":{"input_per_mtok":-1,"output_per_mtok":2}}}"#,
                "pricing.models.gpt-4o.input_per_mtok",
            ),
            (
                r#"{"models":{"x":{"input_per_mtok":1,"output_per_mtok":-0.5}}}"#,
                "pricing.models.x.output_per_mtok",
            ),
            (
                r#"{"models":{"x":{"input_per_mtok":1,"output_per_mtok":1,"cached_input_per_mtok":-2}}}"#,
                "pricing.models.x.cached_input_per_mtok",
            ),
            (
                r#"{"models":{"x":{"input_per_mtok":1,"output_per_mtok":1,"cache_creation_per_mtok":1e7}}}"#,
                "pricing.models.x.cache_creation_per_mtok",
            ),
            (
                r#"{"models":{"":{"input_per_mtok":1,"output_per_mtok":1}}}"#,
                "pricing.models",
            ),
        ];
        for (json, field) in cases {
            let err = config(json).unwrap().compile().unwrap_err();
            assert_eq!(err.field, field, "{json}");
        }
        for (v, field) in [
            (f64::NAN, "input_per_mtok"),
            (f64::INFINITY, "input_per_mtok"),
        ] {
            let mut cfg = PricingConfig::default();
            cfg.models.insert(
                "m".into(),
                ModelPriceConfig {
                    input_per_mtok: v,
                    output_per_mtok: 1.0,
                    cached_input_per_mtok: None,
                    cache_creation_per_mtok: None,
                },
            );
            assert_eq!(
                cfg.compile().unwrap_err().field,
                format!("pricing.models.m.{field}")
            );
        }
        // Unknown fields and missing required ones are rejected by serde.
        assert!(config(r#"{"modles":{}}"#).is_err());
        assert!(
            config(r#"{"models":{"x":{"input_per_mtok":1,"output_per_mtok":1,"cached":1}}}"#)
                .is_err()
        );
        assert!(config(r#"{"models":{"x":{"input_per_mtok":1}}}"#).is_err());
        assert_eq!(config("{}").unwrap(), PricingConfig::default());
    }

    #[test]
    fn usd_formatting() {
        assert_eq!(format_usd(0), "0.000000");
        assert_eq!(format_usd(1234), "0.001234");
        assert_eq!(format_usd(12_500_000), "12.500000");
        assert_eq!(format_usd(u64::MAX), "18446744073709.551615");
    }
}
