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
use sweep_results::{Job, Value};
use sweep_store::{EpochRow, Store};

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

/// A job's setting as a number on an axis (`NaN` when it is not a number).
fn value(job: &Job, key: &str) -> f64 {
    match job.param(key) {
        Some(Value::Number(x)) => x,
        _ => f64::NAN,
    }
}

fn label(job: &Job, keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("{k}={}", job.param(k).map_or("-".to_owned(), |v| v.to_string())))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn plot(global: &GlobalArgs, args: &PlotArgs) -> anyhow::Result<Outcome> {
    let store = Store::open_read_only(&global.db)?;
    let sweep = store.find_sweep(args.sweep.as_deref())?;
    let results = super::table::load(&store, sweep)?;
    let curves = results.curves(&store)?;
    let name = &results.sweep.name;
    if curves.is_empty() {
        bail!("sweep {name} has no recorded epochs yet: nothing to plot");
    }
    let mut keys = results.varying_keys();
    if keys.is_empty() {
        keys = vec!["lr".to_owned(), "momentum".to_owned()];
    }
    register_font();
    match &args.by {
        None => {
            let best = results.best().map(|b| b.row.id.as_str());
            let best = curves.iter().position(|(j, _)| Some(j.row.id.as_str()) == best).unwrap_or(0);
            curves_png(&args.out, name, &curves, &keys, best)?
        }
        Some(by) => {
            // A key the sweep sampled log_uniform gets a log axis.
            let spec: serde_json::Value = serde_json::from_str(&results.sweep.spec_json).unwrap_or_default();
            let log_sampled = spec.pointer(&format!("/space/{by}/log_uniform")).is_some();
            by_png(&args.out, name, &curves, &keys, by, args.series.as_deref(), log_sampled)?
        }
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

type Curves<'a> = [(&'a Job, Vec<EpochRow>)];

fn curves_png(out: &Path, name: &str, curves: &Curves<'_>, keys: &[String], best: usize) -> anyhow::Result<()> {
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
    draw_legend(&legend, curves, keys, best)?;
    root.present().with_context(|| format!("{}: cannot write the PNG", out.display()))?;
    Ok(())
}

fn draw_legend(area: &Area<'_>, curves: &Curves<'_>, keys: &[String], best: usize) -> anyhow::Result<()> {
    for (i, (job, _)) in curves.iter().enumerate().take(40) {
        let y = 6 + 22 * i as i32;
        let color = palette(i);
        let width = if i == best { 4 } else { 2 };
        area.draw(&PathElement::new(vec![(20, y + 8), (60, y + 8)], color.stroke_width(width))).map_err(draw_err)?;
        let acc = job.row.best_valid_acc.map_or("-".to_owned(), |a| format!("{a:.4}"));
        let mark = if i == best { "  (best)" } else { "" };
        let id = &job.row.id;
        let text = format!("{}  {}  best valid acc {acc}{mark}", &id[..8.min(id.len())], label(job, keys));
        area.draw(&Text::new(text, (70, y), (FONT, 15).into_font().color(&BLACK))).map_err(draw_err)?;
    }
    Ok(())
}

fn by_png(
    out: &Path,
    name: &str,
    curves: &Curves<'_>,
    varying: &[String],
    by: &str,
    series: Option<&str>,
    log_sampled: bool,
) -> anyhow::Result<()> {
    let jobs: Vec<&Job> = curves.iter().map(|(j, _)| *j).collect();
    // Any numeric setting can be an axis; any setting a series.
    let numeric: Vec<&str> =
        jobs[0].config.iter().filter(|(k, v)| v.is_number() && k.as_str() != "fold").map(|(k, _)| k.as_str()).collect();
    if !numeric.contains(&by) {
        bail!("--by {by}: expected one of {}", numeric.join(", "));
    }
    let series_key = match series {
        Some(s) if jobs[0].config.contains_key(s) => Some(s),
        Some(s) => {
            bail!("--series {s}: expected one of {}", jobs[0].config.keys().cloned().collect::<Vec<_>>().join(", "))
        }
        None => varying.iter().map(String::as_str).find(|k| *k != by),
    };
    // One line per value of the series key: x = `by`, y = best valid accuracy
    // (the best over jobs that share x, when other keys vary too).
    let mut lines: BTreeMap<String, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
    for job in &jobs {
        let Some(acc) = job.row.best_valid_acc else { continue };
        let line = series_key.map_or_else(
            || "all jobs".to_owned(),
            |k| format!("{k}={}", job.param(k).map_or("-".to_owned(), |v| v.to_string())),
        );
        let x = value(job, by);
        let point = lines.entry(line).or_default().entry(x.to_bits()).or_insert((x, acc));
        point.1 = point.1.max(acc);
    }
    let xs: Vec<f64> = jobs.iter().map(|j| value(j, by)).collect();
    let (x_min, x_max) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    let mut log = x_min > 0.0 && x_max / x_min >= 10.0;
    let (mut x_min, x_max) = (x_min, x_max);
    if log_sampled && x_max > 0.0 {
        // A log_uniform key with zero_probability holds zeros: they have no
        // place on a log axis and are left out, said so.
        log = true;
        let zeros = xs.iter().filter(|x| **x <= 0.0).count();
        if zeros > 0 {
            eprintln!("note: {zeros} job(s) with {by} = 0 are left out of the log axis");
            for points in lines.values_mut() {
                points.retain(|_, (x, _)| *x > 0.0);
            }
            x_min = xs.iter().copied().filter(|x| *x > 0.0).fold(f64::INFINITY, f64::min);
        }
    }
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
