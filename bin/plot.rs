//! Pictures of a run as PNG files: training loss, learning rate and validation metrics
//! from its log ([`burnbert_eval::log::RunLog`]), and confusion matrices.

use std::collections::BTreeSet;
use std::error::Error;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use burnbert_eval::log::{LogError, RunLog};

/// DejaVu Sans (see assets/fonts/README.md). plotters' ab_glyph text has no access to
/// system fonts, and an embedded font makes the pictures the same on every machine.
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Width and height of the run pictures, in pixels.
const SIZE: (u32, u32) = (900, 500);

/// Line colours (matplotlib's "tab10"), so that the pictures look familiar.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Why a log could not be read or a picture not drawn.
// I/O errors are part of the message, not a `source`: programs print the whole chain
// (`{:#}`), which would say them twice.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The folder for a picture could not be created.
    #[error("cannot create {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Drawing or writing a picture failed.
    #[error("cannot draw {}: {message}", path.display())]
    Draw { path: PathBuf, message: String },
    /// The embedded font did not load (a broken build).
    #[error("the embedded font (assets/fonts/DejaVuSans.ttf) cannot be loaded")]
    Font,
    /// The data cannot make the picture asked for.
    #[error("{0}")]
    Invalid(String),
}

/// Draws `loss.png` (training loss per step, raw and smoothed, with each epoch's mean),
/// `learning_rate.png` and `eval.png` (validation metrics per epoch) into `dir`, creating
/// it if needed, and returns the files written. A picture without data (no epochs yet,
/// say) is skipped.
pub fn plot_run(log: &RunLog, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    fs::create_dir_all(dir).map_err(|error| PlotError::Write {
        path: dir.to_path_buf(),
        error,
    })?;
    type Picture = fn(&RunLog, &Path) -> Result<bool, PlotError>;
    let pictures: [(&str, Picture); 3] = [
        ("loss.png", plot_loss),
        ("learning_rate.png", plot_learning_rate),
        ("eval.png", plot_eval),
    ];
    let mut written = Vec::new();
    for (name, picture) in pictures {
        let path = dir.join(name);
        if picture(log, &path)? {
            written.push(path);
        }
    }
    Ok(written)
}

fn plot_loss(log: &RunLog, path: &Path) -> Result<bool, PlotError> {
    let raw: Vec<(f64, f64)> = log
        .steps
        .iter()
        .filter(|s| s.loss.is_finite())
        .map(|s| (s.step as f64, s.loss))
        .collect();
    if raw.is_empty() {
        return Ok(false);
    }
    // About 30 independent stretches across the picture, whatever the run's length.
    let window = (raw.len() as f64 / 30.0).clamp(2.0, 50.0);
    let smoothed = smooth(&raw, 1.0 - 1.0 / window);
    // Each epoch's mean loss, at the epoch's last step.
    let means: Vec<(f64, f64)> = log
        .epochs
        .iter()
        .filter(|e| e.train_loss.is_finite())
        .filter_map(|e| {
            let last = log
                .steps
                .iter()
                .filter(|s| s.epoch == e.epoch)
                .map(|s| s.step)
                .max()?;
            Some((last as f64, e.train_loss))
        })
        .collect();
    let x = padded(raw.iter().map(|p| p.0), 0.02);
    let y = padded(raw.iter().chain(&means).map(|p| p.1), 0.05);
    let digits = decimals(&y);
    render(path, SIZE, |root| {
        let mut chart = chart(root, "training loss", x, y)?;
        mesh(&mut chart, "optimizer step", "loss")
            .x_label_formatter(&whole)
            .y_label_formatter(&|v| format!("{v:.*}", digits))
            .draw()?;
        let [raw_color, mean_color] = [COLORS[0], COLORS[1]];
        chart
            .draw_series(LineSeries::new(raw, raw_color.mix(0.3)))?
            .label("loss per step")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], raw_color.mix(0.3)));
        chart
            .draw_series(LineSeries::new(smoothed, raw_color.stroke_width(2)))?
            .label(format!(
                "smoothed (exponential average over ~{window:.0} steps)"
            ))
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], raw_color.stroke_width(2))
            });
        if !means.is_empty() {
            chart
                .draw_series(
                    means
                        .iter()
                        .map(|&p| Circle::new(p, 5, mean_color.filled())),
                )?
                .label("epoch mean")
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, mean_color.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })?;
    Ok(true)
}

fn plot_learning_rate(log: &RunLog, path: &Path) -> Result<bool, PlotError> {
    let points: Vec<(f64, f64)> = log
        .steps
        .iter()
        .filter(|s| s.lr.is_finite())
        .map(|s| (s.step as f64, s.lr))
        .collect();
    if points.is_empty() {
        return Ok(false);
    }
    let x = padded(points.iter().map(|p| p.0), 0.02);
    // From zero: schedules warm up from it and decay to it.
    let top = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let y = 0.0..if top > 0.0 { top * 1.08 } else { 1.0 };
    render(path, SIZE, |root| {
        let mut chart = chart(root, "learning rate", x, y)?;
        mesh(&mut chart, "optimizer step", "learning rate")
            .x_label_formatter(&whole)
            .y_label_formatter(&|v| {
                if *v == 0.0 {
                    "0".into()
                } else {
                    format!("{v:.1e}")
                }
            })
            .draw()?;
        chart.draw_series(LineSeries::new(points, COLORS[0].stroke_width(2)))?;
        Ok(())
    })?;
    Ok(true)
}

fn plot_eval(log: &RunLog, path: &Path) -> Result<bool, PlotError> {
    let names: BTreeSet<&str> = log
        .epochs
        .iter()
        .flat_map(|e| e.metrics.keys().map(String::as_str))
        .collect();
    let series: Vec<(&str, Vec<(f64, f64)>)> = names
        .into_iter()
        .map(|name| {
            let points: Vec<(f64, f64)> = log
                .epochs
                .iter()
                .filter_map(|e| Some((e.epoch as f64, *e.metrics.get(name)?)))
                .filter(|p| p.1.is_finite())
                .collect();
            (name, points)
        })
        .filter(|(_, points)| !points.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(false);
    }
    let epochs: BTreeSet<usize> = log.epochs.iter().map(|e| e.epoch).collect();
    let (first, last) = (
        epochs.first().copied().unwrap_or(1),
        epochs.last().copied().unwrap_or(1),
    );
    let x = first as f64 - 0.5..last as f64 + 0.5;
    // Room above and below the points for their values.
    let y = padded(
        series
            .iter()
            .flat_map(|(_, points)| points.iter().map(|p| p.1)),
        0.15,
    );
    let digits = decimals(&y);
    let show_values = epochs.len() <= 12;
    render(path, SIZE, |root| {
        let mut chart = chart(root, "validation metrics", x, y)?;
        mesh(&mut chart, "epoch", "value")
            // With half an epoch of margin on each side, this many ticks fall on whole epochs.
            .x_labels((last - first + 2).min(12))
            .x_label_formatter(&whole)
            .y_label_formatter(&|v| format!("{v:.*}", digits))
            .draw()?;
        for (i, (name, points)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 5, color.filled())))?;
            if show_values {
                // Alternate above and below so that close metrics do not write over each other.
                let (dy, v_pos) = if i % 2 == 0 {
                    (-8, VPos::Bottom)
                } else {
                    (8, VPos::Top)
                };
                let style = TextStyle::from(("sans-serif", 13).into_font())
                    .color(&color)
                    .pos(Pos::new(HPos::Center, v_pos));
                chart.draw_series(points.iter().map(|&(x, y)| {
                    EmptyElement::at((x, y)) + Text::new(format!("{y:.3}"), (0, dy), style.clone())
                }))?;
            }
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })?;
    Ok(true)
}

/// Draws a confusion matrix as a grid of cells shaded by their count, with the count
/// written in each; rows are the reference classes (the first at the top), columns the
/// predicted ones, as [`burnbert_eval::Metrics::confusion_matrix`] returns them. `labels` name the
/// classes in order. `path` must end in `.png`.
pub fn plot_confusion_matrix(
    matrix: &[Vec<usize>],
    labels: &[String],
    path: &Path,
) -> Result<(), PlotError> {
    let n = labels.len();
    if n == 0 || matrix.len() != n || matrix.iter().any(|row| row.len() != n) {
        return Err(PlotError::Invalid(format!(
            "a confusion matrix for {n} labels must have {n} rows of {n} counts, not {}",
            matrix
                .iter()
                .map(|row| row.len().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let total: usize = matrix.iter().flatten().sum();
    let correct: usize = (0..n).map(|i| matrix[i][i]).sum();
    let most = matrix.iter().flatten().copied().max().unwrap_or(0).max(1);
    let caption = if total == 0 {
        "confusion matrix: no examples".to_string()
    } else {
        format!(
            "confusion matrix: {total} examples, accuracy {:.3}",
            correct as f64 / total as f64
        )
    };

    let grid = (160 * n as u32).clamp(360, 900);
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    let label_width = 60 + 9 * longest;
    let size = (grid + label_width + 60, grid + 150);
    // Coordinates count half cells so that the axis ticks, one per class, can sit at the
    // cell centres (odd numbers); y runs bottom-up, so reference class r is row n - 1 - r.
    let side = 2 * n as i32;
    let centers: Vec<i32> = (0..n as i32).map(|i| 2 * i + 1).collect();
    let name = |v: &i32, flip: bool| {
        let i = (*v / 2) as usize;
        let i = if flip { n.saturating_sub(i + 1) } else { i };
        labels.get(i).cloned().unwrap_or_default()
    };
    let cell = |r: usize, c: usize| (2 * c as i32, 2 * (n - 1 - r) as i32);
    let count_size = (28.0 - 2.0 * n as f64).max(10.0);
    render(path, size, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&caption, ("sans-serif", 20))
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(label_width)
            .build_cartesian_2d(
                (0..side).with_key_points(centers.clone()),
                (0..side).with_key_points(centers.clone()),
            )?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted")
            .y_desc("reference")
            .x_label_formatter(&|v| name(v, false))
            .y_label_formatter(&|v| name(v, true))
            .axis_desc_style(("sans-serif", 18))
            .label_style(("sans-serif", 15))
            .draw()?;
        let cells = (0..n).flat_map(|r| (0..n).map(move |c| (r, c)));
        chart.draw_series(cells.clone().map(|(r, c)| {
            let (x, y) = cell(r, c);
            Rectangle::new(
                [(x, y), (x + 2, y + 2)],
                shade(matrix[r][c] as f64 / most as f64).filled(),
            )
        }))?;
        // White borders keep neighbouring cells of similar shade apart.
        chart.draw_series(cells.clone().map(|(r, c)| {
            let (x, y) = cell(r, c);
            Rectangle::new([(x, y), (x + 2, y + 2)], WHITE.stroke_width(2))
        }))?;
        chart.draw_series(cells.map(|(r, c)| {
            let (x, y) = cell(r, c);
            // Light text on dark cells.
            let color = if matrix[r][c] as f64 / most as f64 > 0.55 {
                &WHITE
            } else {
                &BLACK
            };
            let style = TextStyle::from(("sans-serif", count_size).into_font())
                .color(color)
                .pos(Pos::new(HPos::Center, VPos::Center));
            Text::new(matrix[r][c].to_string(), (x + 1, y + 1), style)
        }))?;
        Ok(())
    })
}

/// White for 0 to the first line colour for 1.
fn shade(share: f64) -> RGBColor {
    let mix = |to: u8| (255.0 + (to as f64 - 255.0) * share.clamp(0.0, 1.0)).round() as u8;
    let RGBColor(r, g, b) = COLORS[0];
    RGBColor(mix(r), mix(g), mix(b))
}

type DrawResult = Result<(), Box<dyn Error>>;

/// Draws one picture into `path` on a white background.
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> DrawResult,
) -> Result<(), PlotError> {
    // The image crate picks the format from the extension, and fails late and cryptically
    // on one it does not know.
    let png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !png {
        return Err(PlotError::Invalid(format!(
            "{}: pictures are PNG files; name it *.png",
            path.display()
        )));
    }
    register_font()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|error| PlotError::Write {
            path: dir.to_path_buf(),
            error,
        })?;
    }
    let root = BitMapBackend::new(path, size).into_drawing_area();
    let drawn = (|| -> DrawResult {
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
        Ok(())
    })();
    drawn.map_err(|e| PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    // plotters looks fonts up by family name, and "sans-serif" is the one its charts use
    // when not told otherwise.
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    ok.then_some(()).ok_or(PlotError::Font)
}

type LineChart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A titled line chart with room for axis labels and descriptions.
fn chart<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
    x: Range<f64>,
    y: Range<f64>,
) -> Result<LineChart<'a, 'b>, Box<dyn Error>> {
    Ok(ChartBuilder::on(root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(55)
        .y_label_area_size(85)
        .build_cartesian_2d(x, y)?)
}

/// Axis descriptions, label fonts and a quiet grid; the caller adds formatters and draws.
fn mesh<'a, 'b, 'c>(
    chart: &'c mut LineChart<'a, 'b>,
    x_desc: &str,
    y_desc: &str,
) -> MeshStyle<'a, 'c, RangedCoordf64, RangedCoordf64, BitMapBackend<'b>> {
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 14))
        .light_line_style(BLACK.mix(0.05))
        .max_light_lines(4);
    mesh
}

fn legend<'a, 'b: 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

/// Tick labels for whole numbers only (steps, epochs); tick positions are computed in
/// floating point, hence the tolerance.
fn whole(v: &f64) -> String {
    let rounded = v.round();
    if (v - rounded).abs() < 1e-6 * rounded.abs().max(1.0) {
        format!("{rounded:.0}")
    } else {
        String::new()
    }
}

/// Decimals for the tick labels of an axis spanning `range`: enough to tell its ticks
/// (about a tenth of the span apart) apart, the same for all of them.
fn decimals(range: &Range<f64>) -> usize {
    (-((range.end - range.start) / 10.0).log10())
        .ceil()
        .max(0.0) as usize
}

/// The span of the finite `values`, widened by `margin` of it on each side (or by a bit of
/// the value itself when all are equal) so that no line runs along the frame.
fn padded(values: impl IntoIterator<Item = f64>, margin: f64) -> Range<f64> {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = if hi > lo {
        (hi - lo) * margin
    } else if lo != 0.0 {
        lo.abs() * 0.1
    } else {
        1.0
    };
    lo - pad..hi + pad
}

/// Exponential moving average with bias correction (TensorBoard's smoothing), so that the
/// first points are not pulled towards zero.
fn smooth(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let (mut average, mut norm) = (0.0, 0.0);
    points
        .iter()
        .map(|&(x, y)| {
            average = weight * average + (1.0 - weight) * y;
            norm = weight * norm + (1.0 - weight);
            (x, average / norm)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burnbert_eval::log::read_log;

    /// A two-epoch run of 40 steps: noisy falling loss, linear decay, improving metrics.
    fn synthetic_log() -> String {
        let mut lines = Vec::new();
        for step in 1..=40usize {
            let epoch = if step <= 20 { 1 } else { 2 };
            let loss = 0.7 * (-(step as f64) / 25.0).exp() + 0.05 * ((step * 7 % 5) as f64 - 2.0);
            let lr = 5e-5 * (1.0 - (step - 1) as f64 / 40.0);
            lines.push(format!(
                r#"{{"epoch":{epoch},"loss":{loss},"lr":{lr},"samples_per_second":7.5,"step":{step}}}"#
            ));
            if step % 20 == 0 {
                let accuracy = 0.7 + 0.05 * epoch as f64;
                let f1 = 0.8 + 0.04 * epoch as f64;
                lines.push(format!(
                    r#"{{"epoch":{epoch},"eval":{{"accuracy":{accuracy},"f1":{f1}}},"padding_ratio":0.3,"train_loss":{}}}"#,
                    0.6 - 0.2 * epoch as f64
                ));
            }
        }
        lines.join("\n") + "\n"
    }

    fn write_log(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("metrics.jsonl");
        fs::write(&path, text).unwrap();
        path
    }

    /// Decodes a PNG and checks its size and that it is more than a blank page: pixels
    /// vary, and the title strip at the top has dark (text) pixels.
    fn check_png(path: &Path, size: (u32, u32)) {
        let image = image::open(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .to_rgb8();
        assert_eq!(image.dimensions(), size, "{}", path.display());
        let luma: Vec<f64> = image
            .pixels()
            .map(|p| p.0.iter().map(|&c| c as f64).sum::<f64>() / 3.0)
            .collect();
        let mean = luma.iter().sum::<f64>() / luma.len() as f64;
        let variance = luma.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / luma.len() as f64;
        assert!(
            variance > 50.0,
            "{}: nearly uniform (variance {variance})",
            path.display()
        );
        let title_ink = (0..40)
            .flat_map(|y| (0..size.0).map(move |x| (x, y)))
            .filter(|&(x, y)| image.get_pixel(x, y).0[0] < 100)
            .count();
        assert!(title_ink > 50, "{}: no title text", path.display());
    }

    #[test]
    fn reads_steps_and_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), &synthetic_log());
        let log = read_log(&path).unwrap();
        assert_eq!(log.steps.len(), 40);
        assert_eq!(log.epochs.len(), 2);
        assert_eq!(log.steps[20].step, 21);
        assert_eq!(log.steps[20].epoch, 2);
        assert_eq!(log.epochs[1].epoch, 2);
        assert_eq!(
            log.epochs[1].metrics.keys().collect::<Vec<_>>(),
            ["accuracy", "f1"]
        );
        assert!((log.epochs[1].metrics["f1"] - 0.88).abs() < 1e-12);
        assert!((log.epochs[0].train_loss - 0.4).abs() < 1e-12);
    }

    #[test]
    fn a_resumed_run_replaces_the_records_it_redoes() {
        let dir = tempfile::tempdir().unwrap();
        let text = synthetic_log();
        let lines: Vec<&str> = text.lines().collect();
        // Steps 1-25 and epoch 1 (lines 1-26, the epoch record marked), then a resume from a
        // checkpoint at step 15: steps 16-40 and both epochs again.
        let mut resumed: Vec<String> = lines[..26]
            .iter()
            .map(|l| l.replace(r#""eval":{"#, r#""eval":{"stale":1,"#))
            .collect();
        resumed.extend(lines[15..].iter().map(|l| l.to_string()));
        let log = read_log(&write_log(dir.path(), &(resumed.join("\n") + "\n"))).unwrap();
        let steps: Vec<usize> = log.steps.iter().map(|s| s.step).collect();
        assert_eq!(steps, (1..=40).collect::<Vec<_>>());
        let epochs: Vec<usize> = log.epochs.iter().map(|e| e.epoch).collect();
        assert_eq!(epochs, [1, 2]);
        assert!(!log.epochs[0].metrics.contains_key("stale"));
    }

    #[test]
    fn nulls_read_as_nan_and_are_left_out_of_plots() {
        let dir = tempfile::tempdir().unwrap();
        let text = "{\"step\":1,\"epoch\":1,\"loss\":null,\"lr\":1e-5}\n\
                    {\"step\":2,\"epoch\":1,\"loss\":0.5,\"lr\":1e-5}\n\
                    {\"epoch\":1,\"eval\":{\"matthews_correlation\":null},\"train_loss\":0.5}\n";
        let log = read_log(&write_log(dir.path(), text)).unwrap();
        assert!(log.steps[0].loss.is_nan());
        assert!(log.epochs[0].metrics["matthews_correlation"].is_nan());
        // The only metric is NaN: no eval picture; one finite loss still draws.
        let written = plot_run(&log, dir.path()).unwrap();
        assert_eq!(
            written,
            [
                dir.path().join("loss.png"),
                dir.path().join("learning_rate.png")
            ]
        );
        check_png(&written[0], SIZE);
    }

    #[test]
    fn bad_line_error_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines: Vec<String> = synthetic_log().lines().map(String::from).collect();
        lines[2] = r#"{"step":3,"epoch":1,"loss":"high","lr":1e-5}"#.into();
        let path = write_log(dir.path(), &(lines.join("\n") + "\n"));
        let message = read_log(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}: line 3: ", path.display())),
            "{message}"
        );
        assert!(message.contains("invalid type"), "{message}");

        let path = write_log(
            dir.path(),
            "\n{\"step\":1,\"epoch\":1,\"loss\":0.5,\"lr\":1e-5}\n{\"hello\":1}\n",
        );
        let message = read_log(&path).unwrap_err().to_string();
        assert!(
            message.contains("line 3: neither a step record"),
            "{message}"
        );

        let path = write_log(
            dir.path(),
            "{\"step\":1,\"epoch\":1,\"loss\":0.5,\"lr\":1e-5}\n{\"step\":2,\n{}\n",
        );
        let message = read_log(&path).unwrap_err().to_string();
        assert!(
            message.contains("line 2: EOF while parsing a value (column 10)"),
            "{message}"
        );
    }

    #[test]
    fn unfinished_last_line_of_a_live_log_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let text = synthetic_log();
        let cut = &text[..text.len() - 20];
        let log = read_log(&write_log(dir.path(), cut)).unwrap();
        assert_eq!((log.steps.len(), log.epochs.len()), (40, 1));
        // A finished line that is broken is still an error.
        let message = read_log(&write_log(dir.path(), &format!("{cut}\n")))
            .unwrap_err()
            .to_string();
        assert!(message.contains("line 42:"), "{message}");
    }

    #[test]
    fn run_pictures_are_readable_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let log = read_log(&write_log(dir.path(), &synthetic_log())).unwrap();
        let out = dir.path().join("plots");
        let written = plot_run(&log, &out).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["loss.png", "learning_rate.png", "eval.png"]);
        for path in &written {
            check_png(path, SIZE);
        }
    }

    #[test]
    fn pictures_without_data_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        assert!(plot_run(&RunLog::default(), dir.path()).unwrap().is_empty());
        let steps_only: String = synthetic_log()
            .lines()
            .take(5)
            .map(|l| format!("{l}\n"))
            .collect();
        let log = read_log(&write_log(dir.path(), &steps_only)).unwrap();
        let written = plot_run(&log, dir.path()).unwrap();
        assert_eq!(
            written,
            [
                dir.path().join("loss.png"),
                dir.path().join("learning_rate.png")
            ]
        );
        assert!(!dir.path().join("eval.png").exists());
    }

    #[test]
    fn confusion_matrix_is_a_readable_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cm").join("confusion_matrix.png");
        let labels = ["not_equivalent".to_string(), "equivalent".to_string()];
        plot_confusion_matrix(&[vec![94, 35], vec![28, 251]], &labels, &path).unwrap();
        check_png(&path, (360 + 60 + 9 * 14 + 60, 360 + 150));
    }

    #[test]
    fn confusion_matrix_must_match_the_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cm.png");
        let labels = ["a".to_string(), "b".to_string()];
        let error = plot_confusion_matrix(&[vec![1, 2], vec![3]], &labels, &path).unwrap_err();
        assert_eq!(
            error.to_string(),
            "a confusion matrix for 2 labels must have 2 rows of 2 counts, not 2, 1"
        );
        assert!(!path.exists());
    }

    #[test]
    fn pictures_must_be_png_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confusion_matrix.pdf");
        let labels = ["a".to_string(), "b".to_string()];
        let error = plot_confusion_matrix(&[vec![1, 2], vec![3, 4]], &labels, &path).unwrap_err();
        let expected = format!("{}: pictures are PNG files; name it *.png", path.display());
        assert_eq!(error.to_string(), expected);
        assert!(!path.exists());
    }
}
