//! A sweep file's `[prune]`: the rungs of successive halving (min_epochs · eta^k below
//! max_epochs) and Hyperband's brackets, and which settings each bracket judges. Pure: no
//! run directory is read here (`prune` drives the training and the decisions).

use serde::{Deserialize, Serialize};

/// A sweep file's `[prune]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prune {
    /// The first rung: every run trains at least this many epochs.
    pub min_epochs: usize,
    /// Every run's `epochs`: what a setting that survives every rung trains.
    pub max_epochs: usize,
    /// Each rung keeps the best 1/eta of the settings it judges.
    #[serde(default = "default_eta")]
    pub eta: usize,
    /// Hyperband's brackets (1: plain successive halving).
    #[serde(default = "one_bracket")]
    pub brackets: usize,
}

fn default_eta() -> usize {
    3
}

fn one_bracket() -> usize {
    1
}

impl std::fmt::Display for Prune {
    /// As the sweep file writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[prune] min_epochs = {}, max_epochs = {}, eta = {}",
            self.min_epochs, self.max_epochs, self.eta
        )?;
        match self.brackets {
            1 => Ok(()),
            k => write!(f, ", brackets = {k}"),
        }
    }
}

impl Prune {
    /// The spec's own mistakes; the message names the key.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.eta < 2 {
            return Err(format!(
                "`prune.eta = {}` keeps every setting: each rung keeps the best 1/eta, so eta must be at least 2",
                self.eta
            ));
        }
        if self.min_epochs == 0 {
            return Err("`prune.min_epochs = 0`: the first rung needs at least one epoch".into());
        }
        if self.min_epochs > self.max_epochs {
            return Err(format!(
                "`prune.min_epochs = {}` is above `prune.max_epochs = {}`: no run would reach the first rung",
                self.min_epochs, self.max_epochs
            ));
        }
        // Bracket b starts at min_epochs · eta^b: one bracket per rung, and one with none.
        let most = self.rungs().len() + 1;
        if self.brackets == 0 || self.brackets > most {
            let firsts: Vec<String> = (0..most)
                .map(|b| match self.bracket(b).rungs().first() {
                    Some(r) => format!("from epoch {r}"),
                    None => "none pruned".to_string(),
                })
                .collect();
            return Err(format!(
                "`prune.brackets = {}`: between min_epochs = {} and max_epochs = {} with eta = {} there are 1 to {most} brackets ({})",
                self.brackets,
                self.min_epochs,
                self.max_epochs,
                self.eta,
                firsts.join(", ")
            ));
        }
        Ok(())
    }

    /// Bracket `b` of Hyperband's: successive halving from min_epochs · eta^b.
    pub fn bracket(&self, b: usize) -> Prune {
        let factor = u32::try_from(b)
            .ok()
            .and_then(|b| self.eta.max(2).checked_pow(b))
            .unwrap_or(usize::MAX);
        Prune {
            min_epochs: self.min_epochs.saturating_mul(factor),
            brackets: 1,
            ..*self
        }
    }

    /// The bracket of each of `settings` settings, in sweep order: shares in proportion to
    /// eta^s / (s + 1) for a bracket of s rungs (Hyperband's), dealt by a smooth weighted round
    /// robin (each turn every bracket gains its weight; the richest, the first on a tie, takes
    /// the setting and pays the total). Integer powers and IEEE sums only: the same on every
    /// machine.
    pub fn brackets_for(&self, settings: usize) -> Vec<usize> {
        let k = self.brackets.max(1);
        let weights: Vec<f64> = (0..k)
            .map(|b| {
                let s = self.bracket(b).rungs().len();
                let power = (self.eta as u64).saturating_pow(s as u32);
                power as f64 / (s as f64 + 1.0)
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let mut credit = vec![0.0; k];
        (0..settings)
            .map(|_| {
                for (c, w) in credit.iter_mut().zip(&weights) {
                    *c += w;
                }
                let chosen =
                    (0..k).fold(0, |best, b| if credit[b] > credit[best] { b } else { best });
                credit[chosen] -= total;
                chosen
            })
            .collect()
    }

    /// The epochs at which settings are judged: min_epochs · eta^k below max_epochs.
    pub fn rungs(&self) -> Vec<usize> {
        let mut rungs = Vec::new();
        let mut rung = self.min_epochs.max(1);
        while rung < self.max_epochs {
            rungs.push(rung);
            rung = rung.saturating_mul(self.eta.max(2));
        }
        rungs
    }

    /// The most that successive halving can spend on `settings`, each given as (its cost per
    /// epoch, all its runs together; its runs' `epochs`): every setting to the first rung, then
    /// after each rung the best 1/eta (at least one) on to the next, those taken here to be the
    /// costliest, so the figure bounds the sweep whatever its results. Settings that stop early
    /// only leave fewer to go on.
    pub fn most_cost(&self, settings: &[(f64, usize)]) -> f64 {
        let mut total = 0.0;
        let mut going_on = settings.len();
        let mut done = 0;
        // The last stage takes each setting to its own epochs.
        for end in self.rungs().into_iter().chain([usize::MAX]) {
            let mut stage: Vec<f64> = settings
                .iter()
                .map(|&(cost, epochs)| cost * (end.min(epochs) - done.min(epochs)) as f64)
                .collect();
            stage.sort_by(|a, b| b.total_cmp(a));
            total += stage.iter().take(going_on).sum::<f64>();
            done = end;
            going_on = (going_on / self.eta.max(2)).max(1);
        }
        total
    }
}
