//! `sweep plot`: learning curves (the paper's "Accuracy of Training and
//! Validation Over Time", one pair of curves per job) or best accuracy
//! against one hyperparameter. PNG via plotters, with the DejaVu font
//! embedded so that text renders on machines without system fonts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

use anyhow::{bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use sweep_store::{EpochRow, JobRow, Store};

use crate::args::{GlobalArgs, PlotArgs};
use crate::Outcome;

const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans is a valid font"));
    });
}

/// The hyperparameters whose values differ between jobs, in the table's order.
fn varying(jobs: &[JobRow]) -> Vec<&'static str> {
    let keys = ["batch_size", "workers", "lr", "momentum", "epochs"];
    let varying: Vec<&str> =
        keys.iter().copied().filter(|k| jobs.iter().any(|j| value(j, k) != value(&jobs[0], k))).collect();
    if varying.is_empty() {
        vec!["lr", "momentum"]
    } else {
        varying
    }
}

fn value(job: &JobRow, key: &str) -> f64 {
    match key {
        "batch_size" => job.batch_size as f64,
        "workers" => job.workers as f64,
        "lr" => job.lr,
        "momentum" => job.momentum,
        "epochs" => job.epochs as f64,
        _ => f64::NAN,
    }
}

fn label(job: &JobRow, keys: &[&str]) -> String {
    keys.iter().map(|k| format!("{k}={}", value(job, k))).collect::<Vec<_>>().join(" ")
}

pub fn plot(global: &GlobalArgs, args: &PlotArgs) -> anyhow::Result<Outcome> {
    let store = Store::open(&global.db)?;
    let sweep = store.find_sweep(args.sweep.as_deref())?;
    let jobs = store.jobs(&sweep.id)?;
    let curves: Vec<(JobRow, Vec<EpochRow>)> = jobs
        .into_iter()
        .map(|j| store.epochs(&j.id).map(|e| (j, e)))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|(_, e)| !e.is_empty())
        .collect();
    if curves.is_empty() {
        bail!("sweep {} has no recorded epochs yet: nothing to plot", sweep.name);
    }
    register_font();
    match &args.by {
        None => curves_png(&args.out, &sweep.name, &curves)?,
        Some(by) => by_png(&args.out, &sweep.name, &curves, by, args.series.as_deref())?,
    }
    eprintln!("wrote {}", args.out.display());
    Ok(Outcome::Success)
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn palette(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    COLORS[i % COLORS.len()]
}

fn curves_png(out: &Path, name: &str, curves: &[(JobRow, Vec<EpochRow>)]) -> anyhow::Result<()> {
    let jobs: Vec<JobRow> = curves.iter().map(|(j, _)| j.clone()).collect();
    let keys = varying(&jobs);
    let best = curves
        .iter()
        .enumerate()
        .max_by(|a, b| a.1 .0.best_valid_acc.unwrap_or(0.0).total_cmp(&b.1 .0.best_valid_acc.unwrap_or(0.0)))
        .map_or(0, |(i, _)| i);
    let legend_rows = curves.len() as u32;
    let height = 560 + 22 * legend_rows.min(40);
    let root = BitMapBackend::new(out, (1400, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let (plots, legend) = root.split_vertically(540);
    let title = format!("{name}: accuracy and loss of training (dashed) and validation (solid) over epochs");
    let plots = plots.titled(&title, (FONT, 22)).map_err(draw_err)?;
    let (acc_area, loss_area) = plots.split_horizontally(700);
    let max_epoch = curves.iter().flat_map(|(_, e)| e.iter().map(|r| r.epoch)).max().unwrap_or(1).max(2) as f64;
    let max_loss = curves
        .iter()
        .flat_map(|(_, e)| e.iter().flat_map(|r| [r.train_loss, r.valid_loss]))
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let series = |r: &EpochRow, valid: bool, acc: bool| -> (f64, f64) {
        let y = match (valid, acc) {
            (true, true) => r.valid_acc,
            (false, true) => r.train_acc,
            (true, false) => r.valid_loss,
            (false, false) => r.train_loss,
        };
        (r.epoch as f64, y)
    };
    for (area, acc, y_max, y_desc) in [(&acc_area, true, 1.0, "Accuracy"), (&loss_area, false, max_loss, "Loss")] {
        let mut chart = ChartBuilder::on(area)
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(1f64..max_epoch, 0f64..y_max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("Epoch")
            .y_desc(y_desc)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(draw_err)?;
        for (i, (_, epochs)) in curves.iter().enumerate() {
            let color = palette(i);
            let width = if i == best { 4 } else { 1 };
            let valid: Vec<(f64, f64)> = epochs.iter().map(|r| series(r, true, acc)).collect();
            let train: Vec<(f64, f64)> = epochs.iter().map(|r| series(r, false, acc)).collect();
            chart.draw_series(LineSeries::new(valid, color.stroke_width(width))).map_err(draw_err)?;
            chart.draw_series(DashedLineSeries::new(train, 6, 4, color.stroke_width(width))).map_err(draw_err)?;
        }
    }
    draw_legend(&legend, curves, &keys, best)?;
    root.present().with_context(|| format!("{}: cannot write the PNG", out.display()))?;
    Ok(())
}

fn draw_legend(area: &Area<'_>, curves: &[(JobRow, Vec<EpochRow>)], keys: &[&str], best: usize) -> anyhow::Result<()> {
    for (i, (job, _)) in curves.iter().enumerate().take(40) {
        let y = 6 + 22 * i as i32;
        let color = palette(i);
        let width = if i == best { 4 } else { 2 };
        area.draw(&PathElement::new(vec![(20, y + 8), (60, y + 8)], color.stroke_width(width))).map_err(draw_err)?;
        let acc = job.best_valid_acc.map_or("-".to_owned(), |a| format!("{a:.4}"));
        let mark = if i == best { "  (best)" } else { "" };
        let text = format!("{}  {}  best valid acc {acc}{mark}", &job.id[..8.min(job.id.len())], label(job, keys));
        area.draw(&Text::new(text, (70, y), (FONT, 15).into_font().color(&BLACK))).map_err(draw_err)?;
    }
    Ok(())
}

fn by_png(
    out: &Path,
    name: &str,
    curves: &[(JobRow, Vec<EpochRow>)],
    by: &str,
    series: Option<&str>,
) -> anyhow::Result<()> {
    let known = ["batch_size", "workers", "lr", "momentum", "epochs"];
    if !known.contains(&by) {
        bail!("--by {by}: expected one of {}", known.join(", "));
    }
    let jobs: Vec<JobRow> = curves.iter().map(|(j, _)| j.clone()).collect();
    let series_key = match series {
        Some(s) if known.contains(&s) => Some(s),
        Some(s) => bail!("--series {s}: expected one of {}", known.join(", ")),
        None => varying(&jobs).into_iter().find(|k| *k != by && jobs.iter().any(|j| value(j, k) != value(&jobs[0], k))),
    };
    // One line per value of the series key: x = `by`, y = best valid accuracy
    // (the best over jobs that share x, when other keys vary too).
    let mut lines: BTreeMap<String, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
    for job in &jobs {
        let Some(acc) = job.best_valid_acc else { continue };
        let line = series_key.map_or_else(|| "all jobs".to_owned(), |k| format!("{k}={}", value(job, k)));
        let x = value(job, by);
        let point = lines.entry(line).or_default().entry(x.to_bits()).or_insert((x, acc));
        point.1 = point.1.max(acc);
    }
    let xs: Vec<f64> = jobs.iter().map(|j| value(j, by)).collect();
    let (x_min, x_max) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    let log = x_min > 0.0 && x_max / x_min >= 10.0;
    let tx = |x: f64| if log { x.log10() } else { x };
    let (lo, hi) = (tx(x_min), tx(x_max));
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 0.5 };
    let root = BitMapBackend::new(out, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let x_desc = if log { format!("{by} (log10)") } else { by.to_owned() };
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{name}: best valid accuracy by {by}"), (FONT, 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((lo - pad)..(hi + pad), 0f64..1f64)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("Best valid accuracy")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(draw_err)?;
    for (i, (line, points)) in lines.iter().enumerate() {
        let color = palette(i);
        let mut pts: Vec<(f64, f64)> = points.values().map(|&(x, y)| (tx(x), y)).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(draw_err)?
            .label(line.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 5, color.filled()))).map_err(draw_err)?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(draw_err)?;
    root.present().with_context(|| format!("{}: cannot write the PNG", out.display()))?;
    Ok(())
}

fn draw_err<E: std::error::Error + Send + Sync + 'static>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e}")
}
