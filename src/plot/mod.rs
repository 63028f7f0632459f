//! Pictures of runs, as PNG and SVG (plotters, with a bundled DejaVu Sans so nothing depends on
//! the system's fonts): accuracy and loss against epochs, train beside validation, the best
//! epoch marked; a confusion-matrix heat map; a sweep's comparison chart.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};
use crate::train::EpochRecord;
use ticks::{epoch_label, log_ticks, significant};

mod ticks;

const FONT: &str = "sans-serif";
static FONT_ONCE: Once = Once::new();

fn register_font() {
    FONT_ONCE.call_once(|| {
        // A bundled font that fails to parse is a build defect, caught by the plot tests.
        let _ = plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../../assets/DejaVuSans.ttf"),
        );
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Usage(format!("drawing {}: {e}", path.display()))
}

/// Draws into a temporary file beside `path` (same extension, which picks the encoder) and
/// renames it into place, like every other output, so a failed draw never leaves half a file.
fn draw_atomic(
    path: &Path,
    draw: impl FnOnce(&Path) -> std::result::Result<(), String>,
) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("plot");
    let tmp = path.with_file_name(format!(".tmp-{}-{name}", std::process::id()));
    let result = draw(&tmp)
        .map_err(|e| plot_err(path, e))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One run's curves for a chart.
#[derive(Debug, Clone)]
pub struct RunCurves {
    pub label: String,
    pub records: Vec<EpochRecord>,
    pub best_epoch: usize,
}

impl RunCurves {
    /// A run directory's curves, labelled with the directory's name. The best epoch is the
    /// summary's; a run without one (interrupted, or still training: metrics.csv is rewritten
    /// whole after every epoch) gets the epoch that early stopping would call best so far,
    /// judged from metrics.csv by [`EarlyStopping`](crate::train::EarlyStopping)'s own rule.
    pub fn read(dir: &Path) -> Result<RunCurves> {
        let run = crate::rundir::RunDir::new(dir);
        if !run.has_metrics() {
            return Err(run.not_a_run("metrics.csv"));
        }
        let records = run.read_metrics(usize::MAX)?;
        let best_epoch = if run.summary().exists() {
            run.read_summary()?.best_epoch
        } else {
            crate::train::EarlyStopping::best_epoch_of(&records)
        };
        let label = dir
            .file_name()
            .and_then(|n| n.to_str())
            .map_or_else(|| dir.display().to_string(), str::to_string);
        Ok(RunCurves {
            label,
            records,
            best_epoch,
        })
    }
}

/// Which metric a chart shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Accuracy,
    Loss,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Loss => "loss",
        }
    }
    fn train(self, r: &EpochRecord) -> f64 {
        match self {
            Metric::Accuracy => r.train_accuracy,
            Metric::Loss => r.train_loss,
        }
    }
    fn val(self, r: &EpochRecord) -> f64 {
        match self {
            Metric::Accuracy => r.val_accuracy,
            Metric::Loss => r.val_loss,
        }
    }
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

fn draw_curves<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    runs: &[RunCurves],
    metric: Metric,
    title: &str,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let values = runs.iter().flat_map(|r| {
        r.records
            .iter()
            .flat_map(|e| [metric.train(e), metric.val(e)])
    });
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.06).max(1e-3);
    let max_epoch = runs
        .iter()
        .flat_map(|r| r.records.last().map(|e| e.epoch))
        .max()
        .unwrap_or(1)
        .max(2);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d(1f64..max_epoch as f64, (lo - pad)..(hi + pad))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(max_epoch.min(12))
        .x_label_formatter(&epoch_label)
        .y_desc(metric.name())
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, run) in runs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let prefix = if runs.len() > 1 {
            format!("{}: ", run.label)
        } else {
            String::new()
        };
        let train: Vec<(f64, f64)> = run
            .records
            .iter()
            .map(|e| (e.epoch as f64, metric.train(e)))
            .collect();
        let val: Vec<(f64, f64)> = run
            .records
            .iter()
            .map(|e| (e.epoch as f64, metric.val(e)))
            .collect();
        // Train: dashed and lighter; validation: solid.
        let light = color.mix(0.55);
        chart
            .draw_series(DashedLineSeries::new(train, 6, 4, light.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(format!("{prefix}train (dashed)"))
            .legend(move |(x, y)| {
                DashedPathElement::new(vec![(x, y), (x + 22, y)], 6, 4, light.stroke_width(2))
            });
        chart
            .draw_series(LineSeries::new(val, color.stroke_width(3)))
            .map_err(|e| e.to_string())?
            .label(format!("{prefix}validation"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
            });
        if let Some(best) = run.records.iter().find(|e| e.epoch == run.best_epoch) {
            let point = (best.epoch as f64, metric.val(best));
            chart
                .draw_series(std::iter::once(Circle::new(point, 7, color.filled())))
                .map_err(|e| e.to_string())?
                .label(format!("{prefix}best epoch {}", best.epoch))
                .legend(move |(x, y)| Circle::new((x + 11, y), 6, color.filled()));
        }
    }
    let corner = match metric {
        Metric::Loss => SeriesLabelPosition::UpperRight,
        _ => SeriesLabelPosition::LowerRight,
    };
    draw_legend(&mut chart, corner)?;
    root.present().map_err(|e| e.to_string())
}

/// Writes `<stem>.png` and `<stem>.svg` with one metric's curves.
pub fn plot_curves(
    dir: &Path,
    stem: &str,
    runs: &[RunCurves],
    metric: Metric,
    title: &str,
) -> Result<()> {
    register_font();
    draw_atomic(&dir.join(format!("{stem}.png")), |p| {
        draw_curves(
            BitMapBackend::new(p, (960, 600)).into_drawing_area(),
            runs,
            metric,
            title,
        )
    })?;
    draw_atomic(&dir.join(format!("{stem}.svg")), |p| {
        draw_curves(
            SVGBackend::new(p, (960, 600)).into_drawing_area(),
            runs,
            metric,
            title,
        )
    })
}

/// accuracy.png/.svg and loss.png/.svg for the runs, in `dir`.
pub fn plot_run_curves(dir: &Path, runs: &[RunCurves], title: &str) -> Result<()> {
    plot_curves(
        dir,
        "accuracy",
        runs,
        Metric::Accuracy,
        &format!("{title}: accuracy"),
    )?;
    plot_curves(
        dir,
        "loss",
        runs,
        Metric::Loss,
        &format!("{title}: cross-entropy loss"),
    )
}

fn draw_confusion<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    counts: &[Vec<usize>],
    names: &[String],
    title: &str,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let n = counts.len() as i32;
    let (rows, per_class) = class_rows(counts, names);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(18)
        .x_label_area_size(60)
        .y_label_area_size(200)
        .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
        .map_err(|e| e.to_string())?;
    // Row 0 at the top: y = n - 1 - row.
    // Column labels stay horizontal (rotated text is not anchored reliably); "T-shirt/top"
    // shortens to "T-shirt" to fit a column.
    let column = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(c) => names
            .get(*c as usize)
            .map(|n| n.split('/').next().unwrap_or(n).to_string())
            .unwrap_or_default(),
        _ => String::new(),
    };
    let row = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(c) => per_class
            .get((n - 1 - *c) as usize)
            .cloned()
            .unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(n as usize)
        .y_labels(n as usize)
        .x_label_formatter(&column)
        .y_label_formatter(&row)
        .x_label_style((FONT, 12))
        .y_label_style((FONT, 14))
        .x_desc("predicted class")
        .y_desc("true class (per-class accuracy)")
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, counts_row) in counts.iter().enumerate() {
        for (j, &c) in counts_row.iter().enumerate() {
            let share = c as f64 / rows[i] as f64;
            let shade = confusion_shade(share);
            let (x, y) = (j as i32, n - 1 - i as i32);
            let cell = [
                (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
            ];
            chart
                .draw_series(std::iter::once(Rectangle::new(cell, shade.filled())))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(Text::new(
                    c.to_string(),
                    (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                    count_style(share),
                )))
                .map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())
}

/// Each true class's images in `counts` (at least 1, for an empty row's shares), and its
/// name with its accuracy.
fn class_rows(counts: &[Vec<usize>], names: &[String]) -> (Vec<usize>, Vec<String>) {
    let rows: Vec<usize> = counts
        .iter()
        .map(|r| r.iter().sum::<usize>().max(1))
        .collect();
    let per_class = (names.iter().enumerate())
        .map(|(i, name)| {
            let accuracy = 100.0 * counts[i][i] as f64 / rows[i] as f64;
            format!("{name} ({accuracy:.1}%)")
        })
        .collect();
    (rows, per_class)
}

/// A confusion cell's colour: white to deep blue by the `share` of the true class's images
/// in it.
fn confusion_shade(share: f64) -> RGBColor {
    RGBColor(
        (255.0 * (1.0 - 0.85 * share)) as u8,
        (255.0 * (1.0 - 0.6 * share)) as u8,
        255,
    )
}

/// A confusion cell's count, centred, white on the dark cells.
fn count_style(share: f64) -> TextStyle<'static> {
    let ink: &'static RGBColor = if share > 0.55 { &WHITE } else { &BLACK };
    TextStyle::from((FONT, 14).into_font())
        .color(ink)
        .pos(Pos::new(HPos::Center, VPos::Center))
}

/// confusion.png and confusion.svg: rows are true classes, columns predictions.
pub fn plot_confusion(
    dir: &Path,
    counts: &[Vec<usize>],
    names: &[String],
    title: &str,
) -> Result<()> {
    register_font();
    draw_atomic(&dir.join("confusion.png"), |p| {
        draw_confusion(
            BitMapBackend::new(p, (900, 860)).into_drawing_area(),
            counts,
            names,
            title,
        )
    })?;
    draw_atomic(&dir.join("confusion.svg"), |p| {
        draw_confusion(
            SVGBackend::new(p, (900, 860)).into_drawing_area(),
            counts,
            names,
            title,
        )
    })
}

fn draw_comparison<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    rows: &[ComparisonBar],
    title: &str,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let n = rows.len() as i32;
    // Bars start at 0% on an axis to 100%: a bar's length is the accuracy, so a 1-point gap
    // looks like one (an axis cut to the data's range drew it five times larger). The value
    // at each bar's end tells settings apart where the bars look alike.
    let (x0, x1) = (0.0, 100.0);
    let longest = rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(8) as u32;
    let spread = if rows.iter().any(|r| r.std.is_some()) {
        "mean ± sample std over seeds (whiskers)"
    } else {
        "one seed each: no spread to show"
    };
    // Horizontal bars, settings down the left (first at the top): long names stay readable.
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size((longest * 8 + 20).min(420))
        .build_cartesian_2d(x0..x1, (0..n - 1).into_segmented())
        .map_err(|e| e.to_string())?;
    let label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(c) => rows
            .get((n - 1 - *c) as usize)
            .map(|r| r.label.clone())
            .unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n as usize)
        .y_label_formatter(&label)
        .light_line_style(TRANSPARENT)
        .x_desc(format!("test accuracy (%), {spread}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let y = n - 1 - i as i32;
            let mut bar = Rectangle::new(
                [
                    (x0, SegmentValue::Exact(y)),
                    (r.mean * 100.0, SegmentValue::Exact(y + 1)),
                ],
                // Opaque, so the grid does not run through the bars.
                RGBColor(174, 199, 232).filled(),
            );
            bar.set_margin(6, 6, 0, 0);
            bar
        }))
        .map_err(|e| e.to_string())?;
    // Whiskers from mean − std to mean + std, with end caps 16 pixels tall.
    let whiskers: Vec<(SegmentValue<i32>, f64, f64)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let std = r.std?;
            let y = SegmentValue::CenterOf(n - 1 - i as i32);
            let (lo, hi) = ((r.mean - std) * 100.0, (r.mean + std) * 100.0);
            Some((y, lo.max(x0), hi.min(x1)))
        })
        .collect();
    chart
        .draw_series(whiskers.iter().map(|(y, lo, hi)| {
            PathElement::new(
                vec![(*lo, y.clone()), (*hi, y.clone())],
                BLACK.stroke_width(2),
            )
        }))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(whiskers.iter().flat_map(|(y, lo, hi)| {
            [*lo, *hi].map(|x| {
                EmptyElement::at((x, y.clone()))
                    + PathElement::new(vec![(0, -8), (0, 8)], BLACK.stroke_width(2))
            })
        }))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let text = match r.std {
                Some(std) => format!("{:.2}% ± {:.2}", 100.0 * r.mean, 100.0 * std),
                None => format!("{:.2}%", 100.0 * r.mean),
            };
            Text::new(
                text,
                (2.0, SegmentValue::CenterOf(n - 1 - i as i32)),
                (FONT, 15).into_font().color(&BLACK),
            )
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// One bar of comparison.png: a setting's mean test accuracy (a fraction) and, with more
/// than one seed, its sample standard deviation.
#[derive(Debug, Clone)]
pub struct ComparisonBar {
    pub label: String,
    pub mean: f64,
    pub std: Option<f64>,
}

/// comparison.png and comparison.svg: each setting's mean test accuracy with its spread.
pub fn plot_comparison(dir: &Path, rows: &[ComparisonBar], title: &str) -> Result<()> {
    register_font();
    draw_atomic(&dir.join("comparison.png"), |p| {
        draw_comparison(
            BitMapBackend::new(p, (1000, 640)).into_drawing_area(),
            rows,
            title,
        )
    })?;
    draw_atomic(&dir.join("comparison.svg"), |p| {
        draw_comparison(
            SVGBackend::new(p, (1000, 640)).into_drawing_area(),
            rows,
            title,
        )
    })
}

/// validation.png and validation.svg: every run of a sweep's validation loss against its
/// epochs on one log-scale axis (Optuna's "intermediate values"), the runs in `best` drawn
/// strong and labelled, every other run light and the `pruned` ones fainter still, so a
/// search shows how its trials went and where pruning stopped them.
pub fn plot_validation(
    dir: &Path,
    runs: &[RunCurves],
    (best, pruned): (&[usize], &[usize]),
    title: &str,
) -> Result<()> {
    register_font();
    draw_atomic(&dir.join("validation.png"), |p| {
        draw_validation(
            BitMapBackend::new(p, (1000, 640)).into_drawing_area(),
            runs,
            (best, pruned),
            title,
        )
    })?;
    draw_atomic(&dir.join("validation.svg"), |p| {
        draw_validation(
            SVGBackend::new(p, (1000, 640)).into_drawing_area(),
            runs,
            (best, pruned),
            title,
        )
    })
}

fn draw_validation<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    runs: &[RunCurves],
    (best, pruned): (&[usize], &[usize]),
    title: &str,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    // A diverged epoch's loss is not finite: its curve stops there.
    let points = |run: &RunCurves| -> Vec<(f64, f64)> {
        run.records
            .iter()
            .map(|e| (e.epoch as f64, e.val_loss))
            .take_while(|(_, l)| l.is_finite() && *l > 0.0)
            .collect()
    };
    let all: Vec<(f64, f64)> = runs.iter().flat_map(points).collect();
    let max_epoch = all.iter().map(|p| p.0).fold(2.0, f64::max);
    let lo = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = all.iter().map(|p| p.1).fold(0.0, f64::max);
    let (lo, hi) = if lo < hi { (lo, hi) } else { (0.1, 10.0) };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d(
            1f64..max_epoch,
            (lo * 0.95..hi * 1.05)
                .log_scale()
                .with_key_points(log_ticks(lo * 0.95, hi * 1.05)),
        )
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels((max_epoch as usize).min(12))
        .x_label_formatter(&epoch_label)
        .y_desc("validation loss (log scale)")
        // With a decimal point always ("1.0"), so no loss reads like an epoch.
        .y_label_formatter(&|y| format!("{:?}", significant(*y, 3)))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    // Pruned runs first and faintest, then the others, then the best on top.
    let faint = RGBColor(200, 110, 60).mix(0.3);
    let grey = RGBColor(150, 150, 150).mix(0.5);
    for (style, label, of_kind) in [(faint, "pruned", true), (grey, "every other run", false)] {
        let kind: Vec<&RunCurves> = (runs.iter().enumerate())
            .filter(|(i, _)| !best.contains(i) && pruned.contains(i) == of_kind)
            .map(|(_, r)| r)
            .collect();
        for (n, run) in kind.iter().enumerate() {
            let series = chart
                .draw_series(LineSeries::new(points(run), style.stroke_width(1)))
                .map_err(|e| e.to_string())?;
            if n == 0 {
                series
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
            }
        }
    }
    for (n, &i) in best.iter().enumerate() {
        let Some(run) = runs.get(i) else { continue };
        let color = PALETTE[n % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(points(run), color.stroke_width(3)))
            .map_err(|e| e.to_string())?
            .label(format!("{} (best setting)", run.label))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
            });
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(|e| e.to_string())
}

/// The legend of `chart`'s labelled series, in `corner`, as every chart here draws it.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    corner: SeriesLabelPosition,
) -> std::result::Result<(), String> {
    chart
        .configure_series_labels()
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .position(corner)
        .draw()
        .map_err(|e| e.to_string())
}

/// `wgtrain plot`: the curves of the run directories among `paths` (files are passed over:
/// `runs/sweep-x/*` also matches results and plots) drawn into `out` (one run's own
/// directory, else `plots`); returns where they went.
pub fn plot_runs(
    paths: &[std::path::PathBuf],
    out: Option<std::path::PathBuf>,
) -> Result<std::path::PathBuf> {
    let runs: Vec<_> = paths.iter().filter(|p| !p.is_file()).cloned().collect();
    if runs.is_empty() {
        return Err(Error::Usage(
            "no run directory among the paths given".into(),
        ));
    }
    let curves = (runs.iter())
        .map(|dir| RunCurves::read(dir))
        .collect::<Result<Vec<_>>>()?;
    let out = out.unwrap_or_else(|| match runs.len() {
        1 => runs[0].clone(),
        _ => std::path::PathBuf::from("plots"),
    });
    crate::error::ensure_dir(&out, "--out")?;
    // One run is titled by its experiment's name, as training titles it (its directory's
    // name, the label that tells overlaid runs apart, may be anything: "pl").
    let title = match curves.len() {
        1 => crate::rundir::RunDir::new(&runs[0])
            .read_config()
            .map_or_else(|_| curves[0].label.clone(), |c| c.name),
        n => format!("{n} runs"),
    };
    plot_run_curves(&out, &curves, &title)?;
    Ok(out)
}
