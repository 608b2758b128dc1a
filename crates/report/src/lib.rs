//! The run report: one self-contained `report.html` with the leaderboard as a bar chart, loss
//! curves per model, the best model's confusion matrix, and sample validation predictions.
//!
//! Plots are drawn with plotters into SVG and inlined, images are inlined as base64 PNG, so the
//! file opens anywhere without a network or companion files.

mod preview;

pub use preview::preview_grid;

use std::fmt::Write as _;

use autodl_api::EpochRecord;
use base64::Engine;
use plotters::prelude::*;

/// Why the report could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A chart failed to draw.
    #[error("cannot draw {what}: {reason}")]
    Draw {
        /// Which chart.
        what: String,
        /// Why.
        reason: String,
    },
}

/// One model as the report shows it.
#[derive(Debug, Clone, Default)]
pub struct ModelEntry {
    /// Trial id.
    pub id: String,
    /// Ranking metric name.
    pub metric_name: String,
    /// Ranking metric, when the model trained.
    pub metric: Option<f64>,
    /// `completed`, `failed`, ...
    pub status: String,
    /// Why it failed or was skipped.
    pub reason: String,
    /// Per-epoch curve.
    pub epochs: Vec<EpochRecord>,
}

/// A confusion matrix with its class names (rows are truth, columns prediction).
#[derive(Debug, Clone)]
pub struct Confusion {
    /// Class names.
    pub classes: Vec<String>,
    /// Row-major counts.
    pub counts: Vec<u64>,
}

/// A picture with a caption.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Caption.
    pub caption: String,
    /// PNG bytes.
    pub png: Vec<u8>,
}

/// Everything the report holds.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Title line.
    pub title: String,
    /// Facts about the run (data, budget, wall time), shown as a list.
    pub facts: Vec<(String, String)>,
    /// The leaderboard as a Markdown table.
    pub leaderboard_markdown: String,
    /// Every model, best first.
    pub models: Vec<ModelEntry>,
    /// The best model's confusion matrix (pixel classification).
    pub confusion: Option<Confusion>,
    /// Precision-recall curves of the best detector, one per class: `(class name, points)`
    /// with points as `(recall, precision)`.
    pub pr_curves: Vec<(String, Vec<(f64, f64)>)>,
    /// Sample predictions on validation images.
    pub samples: Vec<Sample>,
}

fn draw_err(what: &str) -> impl Fn(String) -> ReportError + '_ {
    move |reason| ReportError::Draw {
        what: what.to_owned(),
        reason,
    }
}

/// A horizontal bar per model with a metric.
pub fn bar_chart(models: &[ModelEntry]) -> Result<String, ReportError> {
    let rows: Vec<(&str, f64)> = models
        .iter()
        .filter_map(|m| m.metric.map(|v| (m.id.as_str(), v)))
        .collect();
    let mut svg = String::new();
    if rows.is_empty() {
        return Ok(svg);
    }
    let height = 60 + 36 * rows.len() as u32;
    let max = rows.iter().map(|r| r.1).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    {
        let root = SVGBackend::with_string(&mut svg, (720, height)).into_drawing_area();
        let err = draw_err("the leaderboard chart");
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let n = rows.len() as i32;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(200)
            .build_cartesian_2d(0.0..max, (0..n).into_segmented())
            .map_err(|e| err(e.to_string()))?;
        let labels: Vec<String> = rows.iter().map(|r| r.0.to_owned()).collect();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(models.first().map_or("metric", |m| m.metric_name.as_str()))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, (_, v))| {
                let i = i as i32;
                let mut bar = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(i)),
                        (*v, SegmentValue::Exact(i + 1)),
                    ],
                    Palette99::pick(i as usize).filled(),
                );
                bar.set_margin(4, 4, 0, 0);
                bar
            }))
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// Training and validation loss per epoch, and the metric on a second chart.
pub fn loss_chart(model: &ModelEntry) -> Result<String, ReportError> {
    let mut svg = String::new();
    if model.epochs.is_empty() {
        return Ok(svg);
    }
    let what = format!("the loss curves of {}", model.id);
    let err = draw_err(&what);
    {
        let root = SVGBackend::with_string(&mut svg, (720, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let (left, right) = root.split_horizontally(360);
        let n = model.epochs.len() as f64;
        let losses = model
            .epochs
            .iter()
            .flat_map(|e| [e.train_loss, e.val_loss])
            .filter(|v| v.is_finite());
        let top = losses.fold(0.0f64, f64::max).max(1e-6) * 1.05;
        let mut chart = ChartBuilder::on(&left)
            .caption("loss", ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(1.0..n.max(2.0), 0.0..top)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (label, colour, pick) in [
            (
                "train",
                BLUE,
                (|e: &EpochRecord| e.train_loss) as fn(&EpochRecord) -> f64,
            ),
            ("validation", RED, |e: &EpochRecord| e.val_loss),
        ] {
            chart
                .draw_series(LineSeries::new(
                    model.epochs.iter().map(|e| (e.epoch as f64, pick(e))),
                    colour.stroke_width(2),
                ))
                .map_err(|e| err(e.to_string()))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let best = model
            .epochs
            .iter()
            .map(|e| e.metric)
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
            .max(1e-6)
            * 1.05;
        let mut chart = ChartBuilder::on(&right)
            .caption(model.metric_name.as_str(), ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(1.0..n.max(2.0), 0.0..best)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(
                model.epochs.iter().map(|e| (e.epoch as f64, e.metric)),
                GREEN.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// Precision against recall, one line per class, for a detector.
pub fn pr_chart(curves: &[(String, Vec<(f64, f64)>)]) -> Result<String, ReportError> {
    let mut svg = String::new();
    if curves.iter().all(|(_, c)| c.is_empty()) {
        return Ok(svg);
    }
    let err = draw_err("the precision-recall chart");
    {
        let root = SVGBackend::with_string(&mut svg, (480, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "precision-recall at IoU 0.5 (validation)",
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(44)
            .build_cartesian_2d(0.0..1.0, 0.0..1.05)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("recall")
            .y_desc("precision")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (i, (name, points)) in curves.iter().enumerate() {
            let [r, g, b] = autodl_api::class_colour(i);
            let colour = RGBColor(r, g, b);
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(|e| err(e.to_string()))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// The learning-rate finder's curve on a log axis, with the chosen rate marked.
pub fn lr_chart(lrs: &[f64], losses: &[f64], chosen: f64) -> Result<String, ReportError> {
    let mut svg = String::new();
    let pts: Vec<(f64, f64)> = lrs
        .iter()
        .zip(losses)
        .filter(|(l, v)| **l > 0.0 && v.is_finite())
        .map(|(l, v)| (l.log10(), *v))
        .collect();
    if pts.len() < 2 {
        return Ok(svg);
    }
    let err = draw_err("the learning-rate finder chart");
    {
        let root = SVGBackend::with_string(&mut svg, (560, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let (x0, x1) = (pts[0].0, pts[pts.len() - 1].0);
        let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo) * 0.05).max(1e-6);
        let mut chart = ChartBuilder::on(&root)
            .caption("learning-rate finder", ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(48)
            .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (lo - pad)..(hi + pad))
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("learning rate")
            .y_desc("loss")
            .x_label_formatter(&|v| format!("1e{v:.0}"))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), BLUE.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?;
        let c = chosen.log10();
        chart
            .draw_series(LineSeries::new(
                [(c, lo - pad), (c, hi + pad)],
                RED.stroke_width(1),
            ))
            .map_err(|e| err(e.to_string()))?
            .label(format!("chosen {chosen:.2e}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A confusion matrix as an HTML table, each row shaded by its share of the row's pixels.
pub fn confusion_table(c: &Confusion) -> String {
    let n = c.classes.len();
    let mut html = String::from("<table class=\"cm\"><tr><th>truth \\ predicted</th>");
    for name in &c.classes {
        let _ = write!(html, "<th>{}</th>", escape(name));
    }
    html.push_str("</tr>");
    for (r, name) in c.classes.iter().enumerate() {
        let row = &c.counts[r * n..(r + 1) * n];
        let total: u64 = row.iter().sum();
        let _ = write!(html, "<tr><th>{}</th>", escape(name));
        for &v in row {
            let share = if total == 0 {
                0.0
            } else {
                v as f64 / total as f64
            };
            let _ = write!(
                html,
                "<td style=\"background: rgba(0, 90, 200, {share:.3})\">{v}</td>"
            );
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    html
}

fn markdown_table_to_html(md: &str) -> String {
    let mut html = String::from("<table class=\"board\">");
    for (i, line) in md.lines().filter(|l| l.starts_with('|')).enumerate() {
        if i == 1 {
            continue;
        }
        let tag = if i == 0 { "th" } else { "td" };
        html.push_str("<tr>");
        for cell in line.trim().trim_matches('|').split('|') {
            let _ = write!(html, "<{tag}>{}</{tag}>", escape(cell.trim()));
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    html
}

/// Renders the whole report.
pub fn render(report: &Report) -> Result<String, ReportError> {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} th{{background:#f4f4f4}}\
         .samples img{{image-rendering:pixelated;width:256px;margin:4px;border:1px solid #ccc}} figure{{display:inline-block;margin:4px}}\
         </style></head><body><h1>{t}</h1><ul>",
        t = escape(&report.title)
    );
    for (k, v) in &report.facts {
        let _ = write!(html, "<li><b>{}</b>: {}</li>", escape(k), escape(v));
    }
    html.push_str("</ul><h2>Leaderboard</h2>");
    html.push_str(&markdown_table_to_html(&report.leaderboard_markdown));
    html.push_str(&bar_chart(&report.models)?);
    html.push_str("<h2>Training curves</h2>");
    for m in &report.models {
        if m.epochs.is_empty() {
            continue;
        }
        let _ = write!(html, "<h3>{}</h3>", escape(&m.id));
        html.push_str(&loss_chart(m)?);
    }
    if let Some(c) = &report.confusion {
        html.push_str("<h2>Confusion matrix of the best model (validation pixels)</h2>");
        html.push_str(&confusion_table(c));
    }
    if !report.pr_curves.is_empty() {
        html.push_str("<h2>Precision-recall of the best model</h2>");
        html.push_str(&pr_chart(&report.pr_curves)?);
    }
    if !report.samples.is_empty() {
        html.push_str("<h2>Sample validation predictions</h2><div class=\"samples\">");
        for s in &report.samples {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&s.png);
            let _ = write!(
                html,
                "<figure><img alt=\"{c}\" src=\"data:image/png;base64,{b64}\"><figcaption>{c}</figcaption></figure>",
                c = escape(&s.caption)
            );
        }
        html.push_str("</div>");
    }
    html.push_str("</body></html>\n");
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, metric: Option<f64>) -> ModelEntry {
        ModelEntry {
            id: id.into(),
            metric_name: "miou".into(),
            metric,
            status: "completed".into(),
            reason: String::new(),
            epochs: (1..=3)
                .map(|e| EpochRecord {
                    epoch: e,
                    train_loss: 1.0 / e as f64,
                    val_loss: 1.2 / e as f64,
                    metric: 0.1 * e as f64,
                    elapsed_secs: e as f64,
                })
                .collect(),
        }
    }

    #[test]
    fn lr_chart_marks_the_choice() {
        let lrs: Vec<f64> = (0..20).map(|i| 1e-5 * 2f64.powi(i)).collect();
        let losses: Vec<f64> = (0..20).map(|i| 2.0 - 0.05 * i as f64).collect();
        let svg = lr_chart(&lrs, &losses, 1e-3).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("chosen 1.00e-3"),
            "{svg}"
        );
        assert!(lr_chart(&[1e-3], &[1.0], 1e-3).unwrap().is_empty());
    }

    #[test]
    fn report_is_self_contained_with_plots() {
        let report = Report {
            title: "run <x>".into(),
            facts: vec![("data".into(), "nc".into())],
            leaderboard_markdown: "| rank | model |\n|---|---|\n| 1 | unet |\n".into(),
            models: vec![
                entry("unet-a", Some(0.4)),
                entry("deeplab-b", Some(0.3)),
                ModelEntry {
                    id: "ssd".into(),
                    ..Default::default()
                },
            ],
            confusion: Some(Confusion {
                classes: vec!["a".into(), "b".into()],
                counts: vec![5, 1, 2, 8],
            }),
            pr_curves: vec![("tree".into(), vec![(0.1, 1.0), (0.5, 0.8), (0.7, 0.4)])],
            samples: vec![Sample {
                caption: "tile 1".into(),
                png: vec![137, 80, 78, 71],
            }],
        };
        let html = render(&report).unwrap();
        assert!(html.contains("run &lt;x&gt;"));
        assert_eq!(
            html.matches("<svg").count(),
            4,
            "a bar chart, a curve chart per trained model, a precision-recall chart"
        );
        assert!(html.contains("unet-a") && html.contains("deeplab-b"));
        assert!(html.contains("data:image/png;base64,iVBORw=="));
        assert!(html.contains("<td style=\"background: rgba(0, 90, 200, 0.833)\">5</td>"));
        assert!(
            !html.contains("src=\"http") && !html.contains("href=\"http"),
            "no external resources"
        );
    }
}
