//! Random search: a sweep file's `[search]` gives a distribution per config key and
//! `trials` the number of settings drawn from them, by `search_seed`:
//!
//! ```toml
//! trials = 27
//! [search]
//! learning_rate = { log_uniform = [0.001, 0.3] }
//! momentum_gamma = { uniform = [0.8, 0.99] }
//! batch_size = { int = [32, 256] }
//! activation = { choice = ["tanh", "relu"] }
//! ```
//!
//! Each draw is a hash of (search seed, trial, key name), so a key's values do not depend on
//! which other keys are searched, and floats are rounded to six significant digits, so the
//! same file gives the same trials on every machine (no library generator whose stream could
//! change between versions, no platform `exp` whose last bit could).

use std::collections::BTreeMap;

use serde::Deserialize;

/// How one key's values are drawn.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub enum Distribution {
    /// Uniform on [low, high).
    Uniform([f64; 2]),
    /// Uniform in the logarithm on [low, high), 0 < low: learning rates, penalties.
    LogUniform([f64; 2]),
    /// A whole number in [low, high], each equally likely.
    Int([i64; 2]),
    /// One of the values, each equally likely.
    Choice(Vec<toml::Value>),
}

/// The forms a distribution takes, for errors.
const FORMS: &str = "`{ uniform = [low, high] }`, `{ log_uniform = [low, high] }`, `{ int = [low, high] }` or `{ choice = [value, ...] }`";

/// A distribution as written: a table of exactly one of the four kinds (serde's own enum
/// errors say "wanted exactly 1 element" and name no form).
impl TryFrom<toml::Value> for Distribution {
    type Error = String;

    fn try_from(written: toml::Value) -> Result<Self, String> {
        let toml::Value::Table(table) = written else {
            return Err(format!(
                "a distribution is one of {FORMS}, not {written} (hint: a fixed value goes in the base config, or `{{ choice = [{written}] }}`)"
            ));
        };
        let kinds: Vec<&String> = table.keys().collect();
        let [kind] = kinds[..] else {
            return Err(format!(
                "a distribution is one of {FORMS}; this one has {}",
                match kinds.len() {
                    0 => "no kind".to_string(),
                    _ => format!(
                        "{} keys ({})",
                        kinds.len(),
                        kinds
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            ));
        };
        // The value as the kind takes it, or what it takes.
        fn parsed<T: serde::de::DeserializeOwned>(
            kind: &str,
            value: &toml::Value,
            what: &str,
        ) -> Result<T, String> {
            value.clone().try_into().map_err(|e: toml::de::Error| {
                format!(
                    "`{kind}` takes {what}, not {value} ({})",
                    e.message().trim()
                )
            })
        }
        let value = &table[kind];
        match kind.as_str() {
            "uniform" => parsed(kind, value, "[low, high]").map(Distribution::Uniform),
            "log_uniform" => parsed(kind, value, "[low, high]").map(Distribution::LogUniform),
            "int" => parsed(kind, value, "[low, high] as whole numbers").map(Distribution::Int),
            "choice" => parsed(kind, value, "a list of values").map(Distribution::Choice),
            other => Err(format!(
                "`{other}` is not a distribution: use one of {FORMS}"
            )),
        }
    }
}

impl Distribution {
    /// The spec's own mistakes (before any config is read): an empty range, a log scale that
    /// reaches 0, a choice of nothing. The message names the key.
    pub fn check(&self, key: &str) -> Result<(), String> {
        let fail = |why: String| Err(format!("`search.{key}`: {why}"));
        match self {
            Distribution::Uniform([low, high]) | Distribution::LogUniform([low, high])
                if !(low.is_finite() && high.is_finite()) =>
            {
                fail(format!("the range [{low}, {high}] is not finite"))
            }
            Distribution::Uniform([low, high]) if low >= high => fail(format!(
                "the range [{low}, {high}] is empty (the low end must be below the high end)"
            )),
            Distribution::LogUniform([low, high]) if *low <= 0.0 => fail(format!(
                "log_uniform's range [{low}, {high}] reaches {}: a log scale needs both ends above 0 (hint: uniform, or a low end such as 1e-6)",
                if *low == 0.0 { "0" } else { "below 0" }
            )),
            Distribution::LogUniform([low, high]) if low >= high => fail(format!(
                "the range [{low}, {high}] is empty (the low end must be below the high end)"
            )),
            Distribution::Int([low, high]) if low > high => fail(format!(
                "the range [{low}, {high}] is empty (the low end must not be above the high end)"
            )),
            Distribution::Choice(values) if values.is_empty() => {
                fail("choice lists no values".to_string())
            }
            _ => Ok(()),
        }
    }

    /// Values that stand for the whole range when checking that the key takes them: both ends
    /// of a range, every value of a choice.
    pub fn extremes(&self) -> Vec<toml::Value> {
        match self {
            Distribution::Uniform([low, high]) | Distribution::LogUniform([low, high]) => {
                vec![toml::Value::Float(*low), toml::Value::Float(*high)]
            }
            Distribution::Int([low, high]) => {
                vec![toml::Value::Integer(*low), toml::Value::Integer(*high)]
            }
            Distribution::Choice(values) => values.clone(),
        }
    }

    /// What the distribution draws, for an error saying a key cannot take it.
    pub fn draws(&self) -> &'static str {
        match self {
            Distribution::Uniform(_) | Distribution::LogUniform(_) => "decimal numbers",
            Distribution::Int(_) => "whole numbers",
            Distribution::Choice(_) => "the values it lists",
        }
    }

    /// The value at `u` in [0, 1).
    fn at(&self, u: f64) -> toml::Value {
        match self {
            Distribution::Uniform([low, high]) => {
                toml::Value::Float(six_digits(low + u * (high - low)).clamp(*low, *high))
            }
            Distribution::LogUniform([low, high]) => {
                let v = (low.ln() + u * (high.ln() - low.ln())).exp();
                toml::Value::Float(six_digits(v).clamp(*low, *high))
            }
            Distribution::Int([low, high]) => {
                let span = (high - low) as f64 + 1.0;
                toml::Value::Integer(low + ((u * span) as i64).min(high - low))
            }
            Distribution::Choice(values) => {
                values[((u * values.len() as f64) as usize).min(values.len() - 1)].clone()
            }
        }
    }
}

/// `v` rounded to six significant digits, through its decimal text (the same on every
/// machine).
fn six_digits(v: f64) -> f64 {
    format!("{v:.5e}").parse().unwrap_or(v)
}

/// The trials of a search: `trials` settings, each key of `space` drawn for each.
pub fn draw_trials(
    space: &BTreeMap<String, Distribution>,
    trials: usize,
    seed: u64,
) -> Vec<BTreeMap<String, toml::Value>> {
    (0..trials)
        .map(|trial| {
            space
                .iter()
                .map(|(key, d)| (key.clone(), d.at(unit(seed, trial as u64, key))))
                .collect()
        })
        .collect()
}

/// A number in [0, 1) from (seed, trial, key): SplitMix64's finaliser over the three, the
/// key by its FNV-1a hash, the top 53 bits as the fraction.
fn unit(seed: u64, trial: u64, key: &str) -> f64 {
    let key_hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut z = seed;
    for word in [trial, key_hash] {
        z = mix(z.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ word);
    }
    (mix(z) >> 11) as f64 / (1u64 << 53) as f64
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
