//! Where a chart's axes are labelled: whole epochs, and a log loss axis that shows enough
//! values to read.

/// An epoch axis's label: epochs are whole, so a label only on whole numbers (a 2-epoch run
/// read "1 1 1 1 1 2 2 2 2 2 2" with every tenth rounded).
pub(super) fn epoch_label(x: &f64) -> String {
    match (x - x.round()).abs() < 1e-6 {
        true => format!("{x:.0}"),
        false => String::new(),
    }
}

/// `v` to `digits` significant digits, without trailing zeros: 0.45, 0.425, 1.5, 12.
pub(super) fn significant(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(digits - 1 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

/// Tick values for a log axis from `lo` to `hi`: the sparsest of ever finer sets of mantissas
/// (1, 2, 5; then 1, 1.5, 2, 3, 5, 7; then every half; then every tenth) times each power of
/// ten that puts at least four ticks in range, thinned to at most twelve. plotters' own log
/// ticks are the powers alone, and a loss axis spanning 0.4–0.55 holds none of them (and but
/// one of the second set).
pub(super) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let in_range = |mantissas: &[f64]| -> Vec<f64> {
        (first..=last)
            .flat_map(|p| {
                mantissas
                    .iter()
                    .map(move |m| significant(m * 10f64.powi(p), 3))
            })
            .filter(|v| (lo..=hi).contains(v))
            .collect()
    };
    let halves: Vec<f64> = (2..20).map(|i| i as f64 / 2.0).collect();
    let tenths: Vec<f64> = (10..100).map(|i| i as f64 / 10.0).collect();
    let sets: [&[f64]; 4] = [
        &[1.0, 2.0, 5.0],
        &[1.0, 1.5, 2.0, 3.0, 5.0, 7.0],
        &halves,
        &tenths,
    ];
    let ticks = (sets.iter())
        .map(|set| in_range(set))
        .find(|ticks| ticks.len() >= 4)
        .unwrap_or_else(|| in_range(&tenths));
    let every = ticks.len().div_ceil(12).max(1);
    ticks.into_iter().step_by(every).collect()
}
