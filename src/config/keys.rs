//! The keys a config takes, and the nearest one to a key it does not: "did you mean" hints,
//! with common names from other trainers (`lr`, `weight_decay`) mapped to ours.

/// The top-level keys of a sweep file (the sweep module reads them), none of them a config key.
pub const SWEEP_KEYS: &[&str] = &["base", "seeds", "runs", "grid"];

/// Every key a config may hold, for "did you mean" hints.
pub const KEYS: &[&str] = &[
    "name",
    "layers",
    "activation",
    "network",
    "learning_rate",
    "batch_size",
    "epochs",
    "early_stopping",
    "early_stopping_rule",
    "patience",
    "optimizer",
    "momentum",
    "momentum_gamma",
    "l1",
    "l2",
    "penalty_scaling",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "gradient",
    "init",
    "seed",
    "val_fraction",
    "paper",
];

/// Common names from other trainers, mapped to ours.
const ALIASES: &[(&str, &str)] = &[
    ("lr", "learning_rate"),
    ("gamma", "momentum_gamma"),
    ("weight_decay", "l2"),
    ("l2_penalty", "l2"),
    ("l1_penalty", "l1"),
    ("l1_lambda", "l1"),
    ("l2_lambda", "l2"),
    ("layer_specs", "layers"),
    ("early_stop", "early_stopping"),
    ("early_stop_epoch", "patience"),
    ("batch", "batch_size"),
];

/// A hint for an unknown `key`: the key it most likely means, or every key.
pub fn suggestion(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == lower) {
        return format!(" (did you mean \"{to}\"?)");
    }
    let best = KEYS.iter().map(|k| (edit_distance(&lower, k), *k)).min();
    match best {
        Some((d, k)) if d <= 3 => format!(" (did you mean \"{k}\"?)"),
        _ => format!(" (known keys: {})", KEYS.join(", ")),
    }
}

/// Levenshtein distance, for typo hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}
