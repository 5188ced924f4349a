//! Results people look at (issue #7): plots, exports, the speed-only mark,
//! and the README's first command.

use crate::run::TINY;
use crate::{json, stderr, stdout, Env};

/// Share of pixels in a region that are not white.
fn ink(img: &image::RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> f64 {
    let mut inked = 0u64;
    for y in y0..y1 {
        for x in x0..x1 {
            if img.get_pixel(x, y).0 != [255, 255, 255] {
                inked += 1;
            }
        }
    }
    inked as f64 / ((x1 - x0) as u64 * (y1 - y0) as u64) as f64
}

#[test]
fn plots_are_real_pictures() {
    let env = Env::new();
    let file = env.write("tiny.toml", TINY);
    assert!(env.sweep(&["run", file.to_str().unwrap()]).status.success());

    let curves = env.path("curves.png");
    let out = env.sweep(&["plot", "--out", curves.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let img = image::open(&curves).unwrap().to_rgb8();
    assert_eq!(img.width(), 1400);
    assert!(img.height() >= 560);
    // Both panels carry axes, grid and curves; the legend carries text.
    let accuracy_panel = ink(&img, 80, 60, 680, 480);
    let loss_panel = ink(&img, 780, 60, 1380, 480);
    let legend = ink(&img, 0, 545, 700, img.height());
    assert!(accuracy_panel > 0.02 && accuracy_panel < 0.9, "accuracy panel ink {accuracy_panel}");
    assert!(loss_panel > 0.02 && loss_panel < 0.9, "loss panel ink {loss_panel}");
    assert!(legend > 0.005, "legend ink {legend}");

    let by = env.path("by-lr.png");
    let out = env.sweep(&["plot", "tiny", "--by", "lr", "--out", by.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let img = image::open(&by).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1000, 640));
    let plot_area = ink(&img, 100, 60, 980, 560);
    assert!(plot_area > 0.02 && plot_area < 0.9, "plot area ink {plot_area}");

    // A bad key is refused by the argument parser.
    assert_eq!(env.sweep(&["plot", "--by", "colour", "--out", "x.png"]).status.code(), Some(2));
}

#[test]
fn export_writes_what_pandas_and_other_machines_need() {
    let env = Env::new();
    let file = env.write("tiny.toml", TINY);
    assert!(env.sweep(&["run", file.to_str().unwrap()]).status.success());
    let dir = env.path("export");
    let out = env.sweep(&["export", "--out", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let jobs = std::fs::read_to_string(dir.join("jobs.csv")).unwrap();
    assert!(jobs.starts_with("job_id,batch_size,workers,lr,momentum,epochs,best_valid_acc,"), "{jobs}");
    assert_eq!(jobs.lines().count(), 3);
    let epochs = std::fs::read_to_string(dir.join("epochs.csv")).unwrap();
    assert_eq!(epochs.lines().next().unwrap(), "job_id,epoch,train_loss,train_acc,valid_loss,valid_acc,lr,seconds");
    assert_eq!(epochs.lines().count(), 1 + 2 * 3);
    assert_eq!(std::fs::read_to_string(dir.join("tiny.toml")).unwrap(), TINY);
    let heads: Vec<_> = std::fs::read_dir(dir.join("heads")).unwrap().collect();
    assert_eq!(heads.len(), 2);
    for head in heads {
        let bytes = std::fs::read(head.unwrap().path()).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
        // 3 classes x 512 features (ResNet-18).
        assert_eq!(header["head.weight"]["shape"], serde_json::json!([3, 512]));
        assert_eq!(header["head.bias"]["shape"], serde_json::json!([3]));
    }
}

#[test]
fn jobs_differing_only_in_workers_are_marked_and_agree() {
    let env = Env::new();
    let file = env.write("tiny.toml", &TINY.replace("lr = [0.01, 0.05]", "workers = [1, 2]"));
    let out = env.sweep(&["run", file.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json(&out);
    let (a, b) = (&rows[0], &rows[1]);
    assert_eq!((a["workers"].as_i64(), b["workers"].as_i64()), (Some(1), Some(2)));
    assert_eq!(a["same_as"], serde_json::Value::Null);
    assert_eq!(b["same_as"], a["job_id"]);
    assert_eq!(a["best_valid_acc"], b["best_valid_acc"]);
    assert_eq!(a["best_epoch"], b["best_epoch"]);
    let text = stdout(&env.sweep(&["table"]));
    assert!(text.contains("differ from the job in `Same As` only in workers"), "{text}");
}

#[test]
fn readme_first_command_runs_the_demo() {
    // README.md's first command is `cargo run -p sweep-cli -- run sweeps/demo.toml`;
    // this runs the same binary on the same file.
    let readme = include_str!("../../README.md");
    let first = readme.lines().find(|l| l.starts_with("cargo ")).unwrap();
    assert!(first.contains("run sweeps/demo.toml"), "{first}");
    let env = Env::new();
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sweeps/demo.toml");
    let out = env.sweep(&["run", demo.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json(&out);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r["status"] == "done"));
    // The demo's classes are learnable: its best job is far above chance (1/8).
    let best = rows.iter().map(|r| r["best_valid_acc"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(best > 0.6, "best demo accuracy {best}");
}

#[test]
fn csv_quotes_names_with_commas_and_quotes() {
    let env = Env::new();
    let name = r#"tiny, "quoted" name"#;
    let toml =
        TINY.replace(r#"name = "tiny""#, r#"name = 'tiny, "quoted" name'"#).replace("lr = [0.01, 0.05]", "lr = [0.01]");
    let file = env.write("tiny.toml", &toml.replace("epochs = 3", "epochs = 1"));
    let out = env.sweep(&["run", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.sweep(&["status", "--format", "csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1, "{}", stdout(&out));
    let at = |key: &str| headers.iter().position(|h| h == key).unwrap();
    assert_eq!(&rows[0][at("name")], name);
    assert_eq!(&rows[0][at("done")], "1");
}
