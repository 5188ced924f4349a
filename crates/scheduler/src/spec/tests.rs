use std::path::Path;

use super::*;

fn parse(src: &str) -> Result<SweepSpec, SpecErrors> {
    SweepSpec::parse(src, Format::Toml, Path::new("s.toml"), Path::new("/data"))
}

const MINIMAL: &str = r#"
name = "t"
[data]
layout = "synthetic"
[model]
backbone = "resnet18"
weights = "random"
"#;

#[test]
fn minimal_sweep_is_one_job_with_the_paper_defaults() {
    let spec = parse(MINIMAL).unwrap();
    let jobs = spec.jobs(DEFAULT_MAX_JOBS).unwrap();
    assert_eq!(jobs.len(), 1);
    let cfg = jobs[0].params.train_config();
    assert_eq!((cfg.batch_size, cfg.lr, cfg.momentum, cfg.epochs), (16, 0.01, 0.9, 14));
}

#[test]
fn grid_is_a_cartesian_product_and_configs_join_without_duplicates() {
    let src = format!(
        "{MINIMAL}\n[grid]\nlr = [0.01, 0.1]\nbatch_size = [8, 16, 32]\n[[configs]]\nlr = 0.01\nbatch_size = 8\n[[configs]]\nlr = 0.5\n"
    );
    let spec = parse(&src).unwrap();
    let jobs = spec.jobs(DEFAULT_MAX_JOBS).unwrap();
    // 6 grid points, the first config repeats one, the second is new.
    assert_eq!(jobs.len(), 7);
    let axis = |key| jobs.iter().take(3).map(|j| j.params.get(key).to_string()).collect::<Vec<_>>();
    // batch_size comes before lr in canonical order, so it varies slowest.
    assert_eq!(axis(TrainKey::BatchSize), ["8", "8", "16"]);
    assert_eq!(axis(TrainKey::Lr), ["0.01", "0.1", "0.01"]);
    assert!(matches!(spec.jobs(5), Err(TooManyJobs { count: 8, limit: 5 })));
}

#[test]
fn ids_ignore_key_order_and_format() {
    let a = parse(&format!("{MINIMAL}\n[train]\nlr = 0.01\nmomentum = 0.9\n")).unwrap();
    let b = parse(&format!("{MINIMAL}\n[train]\nmomentum = 0.9\nlr = 1e-2\n")).unwrap();
    let json = r#"{"model": {"weights": "random", "backbone": "resnet18"}, "name": "t",
                   "train": {"momentum": 0.9, "lr": 0.01}, "data": {"layout": "synthetic"}}"#;
    let c = SweepSpec::parse(json, Format::Json, Path::new("s.json"), Path::new("/data")).unwrap();
    let ids = |s: &SweepSpec| s.jobs(10).unwrap().into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(ids(&a), ids(&c));
    assert_eq!(a.id(), c.id());
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let src = r#"name = "t"
[data]
layout = "kaggle"
vaild_fraction = 0.2
[model]
weights = "w.bin2"
[train]
lr = -1
momentum = 1.0
[grid]
batch_size = []
"#;
    let errs = parse(src).unwrap_err().to_string();
    let expected = [
        "s.toml:2: data.root: missing: the kaggle layout needs the folder of the images",
        "s.toml:4: data.vaild_fraction: unknown key (did you mean `valid_fraction`?)",
        "s.toml:6: model.weights: \"w.bin2\": expected a .safetensors or .pth file, \"hub:<repo>\", or \"random\"",
        "s.toml:8: train.lr: must be > 0, got -1",
        "s.toml:9: train.momentum: must be >= 0 and < 1, got 1",
        "s.toml:11: grid.batch_size: must not be an empty list",
    ];
    for e in expected {
        assert!(errs.lines().any(|l| l == e), "missing `{e}` in:\n{errs}");
    }
}

#[test]
fn every_file_in_sweeps_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sweeps");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if matches!(path.extension().and_then(|e| e.to_str()), Some("toml" | "json")) {
            let spec = SweepSpec::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!spec.jobs(DEFAULT_MAX_JOBS).unwrap().is_empty());
            seen += 1;
        }
    }
    assert!(seen >= 3, "sweeps/ holds demo, seed-table and grid-example");
    let seed = SweepSpec::load(&dir.join("seed-table.toml")).unwrap();
    assert_eq!(seed.jobs(DEFAULT_MAX_JOBS).unwrap().len(), 6);
    let grid = SweepSpec::load(&dir.join("grid-example.toml")).unwrap();
    assert_eq!(grid.jobs(DEFAULT_MAX_JOBS).unwrap().len(), 96);
}
