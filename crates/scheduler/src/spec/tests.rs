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
        let schema = path.to_str().is_some_and(|p| p.ends_with(".schema.json"));
        if matches!(path.extension().and_then(|e| e.to_str()), Some("toml" | "json")) && !schema {
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

/// Asserts that TOML `src` is refused with exactly these error lines, in this order.
#[track_caller]
fn check(src: &str, expected: &[&str]) {
    check_as(Format::Toml, src, expected);
}

/// [`check`] for JSON.
#[track_caller]
fn check_json(src: &str, expected: &[&str]) {
    check_as(Format::Json, src, expected);
}

#[track_caller]
fn check_as(format: Format, src: &str, expected: &[&str]) {
    let file = if format == Format::Toml { "s.toml" } else { "s.json" };
    let errs = match SweepSpec::parse(src, format, Path::new(file), Path::new("/data")) {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(errs) => errs.to_string(),
    };
    assert_eq!(errs, expected.join("\n"), "\n--- got:\n{errs}\n--- for:\n{src}");
}

const HEAD: &str = "name = \"t\"\n[data]\nlayout = \"synthetic\"\n[model]\nweights = \"random\"\n";

#[test]
fn unknown_top_level_key_suggests_the_known_one() {
    check(
        "nmae = \"t\"\n[data]\nlayout = \"synthetic\"\n[model]\nweights = \"random\"\n",
        &["s.toml: name: missing: every sweep needs a name", "s.toml:1: nmae: unknown key (did you mean `name`?)"],
    );
}

#[test]
fn wrong_types_name_the_expected_type() {
    check(
        "name = [\"t\"]\n[data]\nlayout = \"synthetic\"\n[model]\nweights = \"random\"\n[train]\nlr = \"0.1\"\nbatch_size = 16.0\n",
        &[
            "s.toml:1: name: must be a string, got an array",
            "s.toml:7: train.lr: must be a number, got a string",
            "s.toml:8: train.batch_size: must be an integer, got a float",
        ],
    );
}

#[test]
fn out_of_range_values_say_the_range() {
    check(
        "name = \"t\"\n[data]\nlayout = \"synthetic\"\nvalid_fraction = 0\n[model]\nweights = \"random\"\n[train]\nmomentum = 1\n",
        &["s.toml:4: data.valid_fraction: must be > 0 and < 1, got 0", "s.toml:8: train.momentum: must be >= 0 and < 1, got 1"],
    );
    check(
        "name = \"t\"\n[data]\nlayout = \"synthetic\"\nvalid_fraction = 1.0\n[model]\nweights = \"random\"\n",
        &["s.toml:4: data.valid_fraction: must be > 0 and < 1, got 1"],
    );
    // Past 64 bits is out of range like any other value, at its key and line.
    check(
        &format!("{HEAD}[train]\nbatch_size = 99999999999999999999\nlr = nan\ngamma = inf\n"),
        &[
            "s.toml:7: train.batch_size: must be between 1 and 1048576, got 99999999999999999999",
            "s.toml:8: train.lr: must be > 0, got NaN",
            "s.toml:9: train.gamma: must be > 0 and <= 1, got inf",
        ],
    );
}

#[test]
fn grid_problems_point_at_the_value() {
    check(
        &format!("{HEAD}[grid]\nlr = []\nmomentum = [0.9, 0.5, 0.9]\nlearning_rate = [0.1]\nbatchsize = [1]\nepochs = [1,\n  true]\nseed = [1, 0x1]\n"),
        &[
            "s.toml:7: grid.lr: must not be an empty list",
            "s.toml:8: grid.momentum[2]: repeats the value 0.9",
            "s.toml:9: grid.learning_rate: unknown key",
            "s.toml:10: grid.batchsize: unknown key (did you mean `batch_size`?)",
            "s.toml:12: grid.epochs[1]: must be an integer, got a boolean",
            "s.toml:13: grid.seed[1]: repeats the value 1",
        ],
    );
}

#[test]
fn a_bad_config_is_named_by_its_index() {
    check(
        &format!("{HEAD}[[configs]]\nlr = 0.1\n[[configs]]\nlr = -1\nepoch = 3\n"),
        &[
            "s.toml:9: configs[1].lr: must be > 0, got -1",
            "s.toml:10: configs[1].epoch: unknown key (did you mean `epochs`?)",
        ],
    );
}

#[test]
fn missing_sections_are_each_reported() {
    let missing = [
        "s.toml: name: missing: every sweep needs a name",
        "s.toml: data: missing: the [data] table says where the images are",
        "s.toml: model: missing: the [model] table names the backbone and its weights",
    ];
    check("[train]\nlr = 0.1\n", &missing);
    check("", &missing);
    check(
        "name = \"t\"\ndata = 3\nmodel = \"x\"\ntrain = []\nconfigs = {}\n",
        &[
            "s.toml:2: data: must be a table, got an integer",
            "s.toml:3: model: must be a table, got a string",
            "s.toml:4: train: must be a table, got an array",
            "s.toml:5: configs: must be an array of tables ([[configs]]), got a table",
        ],
    );
}

#[test]
fn syntax_errors_give_the_parsers_line() {
    check("name = \"t\"\n[data\nlayout = \"synthetic\"\n", &["s.toml:2: unclosed table, expected `]`"]);
    check(
        "name = \"t\"\n[data]\nlayout = synthetic\n",
        &["s.toml:3: string values must be quoted, expected literal string"],
    );
    check(&format!("{HEAD}[train]\nlr = 0.1\nlr = 0.2\n"), &["s.toml:8: duplicate key `lr`"]);
    check_json(
        "{\"name\": \"t\",\n \"data\": {\"layout\": \"synthetic\"},\n \"model\": {\"weights\": \"random\",}\n}",
        &["s.json:3: trailing comma"],
    );
    check_json("[1, 2]", &["s.json: must be a table, got an array"]);
}

#[test]
fn json_errors_have_keys_but_no_lines() {
    check_json(
        r#"{"name": "t", "data": {"layout": "synthetic", "root": "x"}, "model": {"weights": "random", "mean": [0.5, 0.5]},
            "train": {"lr": "x", "seed": 18446744073709551615}}"#,
        &[
            "s.json: data.root: the synthetic layout generates its images and takes no root",
            "s.json: model.mean: must have 3 values (R, G, B), got 2",
            "s.json: train.lr: must be a number, got a string",
            "s.json: train.seed: must be between 0 and 9223372036854775807, got 18446744073709551615",
        ],
    );
}

#[test]
fn data_and_model_values_are_checked() {
    check(
        "name = \"t\"\n[data]\nlayout = \"synthetic\"\nroot = \"imgs\"\n[model]\nweights = \"random\"\nmean = [0.5, 0.5]\nstd = [1, 0, \"a\"]\n",
        &[
            "s.toml:2: data.root: the synthetic layout generates its images and takes no root",
            "s.toml:7: model.mean: must have 3 values (R, G, B), got 2",
            "s.toml:8: model.std[1]: must be > 0, got 0",
            "s.toml:8: model.std[2]: must be a number or a fraction in quotes such as \"1/255\", got \"a\"",
        ],
    );
    // An empty root is reported once, not also as missing.
    check(
        "name = \"t\"\n[data]\nlayout = \"kaggle\"\nroot = \"\"\n[model]\nweights = \"random:x\"\nbackbone = \"resnet51\"\n",
        &[
            "s.toml:4: data.root: must not be empty",
            "s.toml:6: model.weights: \"random:x\": the seed after `random:` must be a whole number",
            "s.toml:7: model.backbone: must be one of \"resnet18\", \"resnet34\", \"resnet50\", \"resnet50-v1\", got \"resnet51\"",
        ],
    );
}

#[test]
fn load_picks_the_format_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("s.yaml");
    std::fs::write(&yaml, "name: t\n").unwrap();
    let err = SweepSpec::load(&yaml).unwrap_err().to_string();
    assert_eq!(err, format!("{}: unknown sweep file extension: expected .toml or .json", yaml.display()));
    let missing = dir.path().join("absent.toml");
    let err = SweepSpec::load(&missing).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}: cannot read: ", missing.display())), "{err}");
    let json = dir.path().join("s.json");
    std::fs::write(&json, r#"{"name": "t", "data": {"layout": "synthetic"}, "model": {"weights": "random"}}"#).unwrap();
    assert_eq!(SweepSpec::load(&json).unwrap().name, "t");
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// 1 to 3 distinct valid values of `key`.
    fn axis(key: TrainKey) -> BoxedStrategy<Vec<Param>> {
        fn ints(range: std::ops::RangeInclusive<u64>) -> BoxedStrategy<Vec<Param>> {
            prop::collection::btree_set(range, 1..=3).prop_map(|s| s.into_iter().map(Param::Int).collect()).boxed()
        }
        fn floats(range: std::ops::Range<f64>) -> BoxedStrategy<Vec<Param>> {
            prop::collection::vec(range, 1..=3)
                .prop_map(|mut xs| {
                    let mut seen = Vec::new();
                    xs.retain(|x| {
                        !seen.contains(x) && {
                            seen.push(*x);
                            true
                        }
                    });
                    xs.into_iter().map(Param::Float).collect()
                })
                .boxed()
        }
        match key {
            TrainKey::BatchSize => ints(1..=4096),
            TrainKey::Workers => ints(0..=16),
            TrainKey::Lr => floats(1e-6..2.0),
            TrainKey::Momentum => floats(0.0..1.0),
            TrainKey::Epochs | TrainKey::StepSize => ints(1..=100),
            TrainKey::Optimizer => Just(vec![Param::Choice("sgd")]).boxed(),
            TrainKey::WeightDecay => floats(0.0..0.1),
            TrainKey::Gamma => floats(0.01..1.0),
            TrainKey::Seed => ints(0..=u64::from(u32::MAX)),
            TrainKey::Loss => prop::sample::subsequence(vec!["cross_entropy", "multi_margin"], 1..=2)
                .prop_map(|v| v.into_iter().map(Param::Choice).collect())
                .boxed(),
        }
    }

    /// A grid of 1 to 4 axes in canonical order, and a shuffled order to write them in.
    fn grid() -> impl Strategy<Value = (Vec<(TrainKey, Vec<Param>)>, Vec<usize>)> {
        prop::sample::subsequence(TrainKey::ALL.to_vec(), 1..=4)
            .prop_flat_map(|keys| keys.into_iter().map(|k| axis(k).prop_map(move |v| (k, v))).collect::<Vec<_>>())
            .prop_flat_map(|axes| {
                let order: Vec<usize> = (0..axes.len()).collect();
                (Just(axes), Just(order).prop_shuffle())
            })
    }

    /// A value as a sweep file writes it; `exp` spells floats with an exponent.
    fn render(p: Param, exp: bool) -> String {
        match p {
            Param::Int(i) => i.to_string(),
            Param::Float(x) if exp => format!("{x:e}"),
            Param::Float(x) => format!("{x:?}"),
            Param::Choice(s) => format!("\"{s}\""),
        }
    }

    fn list(values: &[Param], exp: bool) -> String {
        values.iter().map(|v| render(*v, exp)).collect::<Vec<_>>().join(", ")
    }

    fn toml(axes: &[(TrainKey, Vec<Param>)], order: &[usize], grid_first: bool) -> String {
        let grid: String =
            order.iter().map(|&i| format!("{} = [{}]\n", axes[i].0.name(), list(&axes[i].1, false))).collect();
        let env = "[model]\nweights = \"random\"\nbackbone = \"resnet18\"\n[data]\nlayout = \"synthetic\"\n";
        if grid_first {
            format!("name = \"p\"\n[grid]\n{grid}{env}")
        } else {
            format!("name = \"p\"\n{env}[grid]\n{grid}")
        }
    }

    fn json(axes: &[(TrainKey, Vec<Param>)], order: &[usize]) -> String {
        let grid: Vec<String> =
            order.iter().rev().map(|&i| format!("\"{}\": [{}]", axes[i].0.name(), list(&axes[i].1, true))).collect();
        format!(
            r#"{{"grid": {{{}}}, "data": {{"layout": "synthetic"}}, "name": "p", "model": {{"backbone": "resnet18", "weights": "random"}}}}"#,
            grid.join(", ")
        )
    }

    fn ids(src: &str, format: Format) -> Vec<String> {
        let spec =
            SweepSpec::parse(src, format, Path::new("p"), Path::new("/")).unwrap_or_else(|e| panic!("{e}\n{src}"));
        spec.jobs(u64::MAX).unwrap().into_iter().map(|j| j.id).collect()
    }

    proptest! {
        #[test]
        fn a_grid_expands_to_its_cartesian_product((axes, order) in grid(), grid_first in any::<bool>()) {
            let canonical: Vec<usize> = (0..axes.len()).collect();
            let src = toml(&axes, &canonical, false);
            let spec = SweepSpec::parse(&src, Format::Toml, Path::new("p"), Path::new("/")).unwrap();
            let jobs = spec.jobs(u64::MAX).unwrap();
            let product: usize = axes.iter().map(|(_, v)| v.len()).product();
            prop_assert_eq!(jobs.len(), product);
            prop_assert_eq!(spec.job_count_upper_bound(), product as u64);
            let unique: std::collections::HashSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
            prop_assert_eq!(unique.len(), jobs.len());
            // Every job takes each axis's values from that axis, the rest from the defaults:
            // with the count and unique ids, that is every point of the product once.
            let defaults = TrainParams::default();
            for job in &jobs {
                for key in TrainKey::ALL {
                    match axes.iter().find(|(k, _)| *k == key) {
                        Some((_, values)) => prop_assert!(values.contains(&job.params.get(key))),
                        None => prop_assert_eq!(job.params.get(key), defaults.get(key)),
                    }
                }
            }

            // Key order, section order, format and float spelling change nothing, order included.
            let expected: Vec<String> = jobs.into_iter().map(|j| j.id).collect();
            prop_assert_eq!(&ids(&toml(&axes, &order, grid_first), Format::Toml), &expected);
            prop_assert_eq!(&ids(&json(&axes, &order), Format::Json), &expected);
        }
    }
}

#[test]
fn folds_make_one_job_per_fold_and_enter_the_ids() {
    let plain = parse(&format!("{MINIMAL}\n[grid]\nlr = [0.01, 0.1]\n")).unwrap();
    let folded_src = format!("{MINIMAL}\n[grid]\nlr = [0.01, 0.1]\n")
        .replace("layout = \"synthetic\"", "layout = \"synthetic\"\nfolds = 3");
    let folded = parse(&folded_src).unwrap();
    assert_eq!(folded.folds, Some(3));
    let jobs = folded.jobs(DEFAULT_MAX_JOBS).unwrap();
    assert_eq!(jobs.len(), 6);
    let folds: Vec<Option<usize>> = jobs.iter().map(|j| j.params.fold()).collect();
    assert_eq!(folds, [Some(0), Some(1), Some(2), Some(0), Some(1), Some(2)]);
    let plain_ids: Vec<String> = plain.jobs(10).unwrap().into_iter().map(|j| j.id).collect();
    assert!(jobs.iter().all(|j| !plain_ids.contains(&j.id)), "a fold job is not the plain job");
    assert!(matches!(folded.jobs(5), Err(TooManyJobs { count: 6, limit: 5 })));

    let both = folded_src.replace("folds = 3", "folds = 3\nvalid_fraction = 0.2");
    let errs = parse(&both).unwrap_err().to_string();
    assert!(errs.contains("data.folds: valid_fraction does not apply with folds"), "{errs}");
    let one = folded_src.replace("folds = 3", "folds = 1");
    assert!(parse(&one).unwrap_err().to_string().contains("data.folds: must be between 2 and 1000, got 1"));
}

/// `n` whole numbers from `from`, as a TOML list's items.
fn ints(from: u64, n: u64) -> String {
    (from..from + n).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// `n` numbers `i / 200` for `i` from `from`, as a TOML list's items.
fn fractions(from: u64, n: u64) -> String {
    (from..from + n).map(|i| format!("{:?}", i as f64 / 200.0)).collect::<Vec<_>>().join(", ")
}

/// Issue 16: a grid whose size does not fit in 64 bits is refused by counting
/// (checked arithmetic), without expanding or allocating anything.
#[test]
fn a_grid_past_u64_is_refused_with_its_size() {
    // 150^9, about 3.8e19 jobs.
    let n = 150;
    let src = format!(
        "{HEAD}[grid]\nbatch_size = [{}]\nworkers = [{}]\nlr = [{}]\nmomentum = [{}]\nepochs = [{}]\n\
         weight_decay = [{}]\nstep_size = [{}]\ngamma = [{}]\nseed = [{}]\n",
        ints(1, n),
        ints(0, n),
        fractions(1, n),
        fractions(0, n),
        ints(1, n),
        fractions(0, n),
        ints(1, n),
        fractions(1, n),
        ints(0, n),
    );
    let spec = parse(&src).unwrap();
    assert_eq!(spec.job_count_upper_bound(), u64::MAX);
    let err = spec.jobs(u64::MAX).unwrap_err();
    assert_eq!(err, TooManyJobs { count: u64::MAX, limit: MAX_JOBS_CEILING });
    assert_eq!(
        err.to_string(),
        "the sweep expands to at least 18446744073709551615 jobs, more than the limit of 1000000 \
         (--max-jobs can raise it to 1000000 at most)"
    );
    // With folds too: the product is checked, not wrapped or saturated into a small number.
    let folded = parse(&src.replace("layout = \"synthetic\"", "layout = \"synthetic\"\nfolds = 1000")).unwrap();
    assert_eq!(folded.jobs(DEFAULT_MAX_JOBS).unwrap_err().count, u64::MAX);
}

/// Issue 16: 10^12 jobs with `--max-jobs` raised past the ceiling are refused
/// at once with their count (before, the plan was built and took the memory).
#[test]
fn a_trillion_jobs_are_refused_even_with_max_jobs_raised() {
    let src = format!(
        "{HEAD}[grid]\nbatch_size = [{}]\nepochs = [{}]\nstep_size = [{}]\nseed = [{}]\n",
        ints(1, 1000),
        ints(1, 1000),
        ints(1, 1000),
        ints(0, 1000)
    );
    let spec = parse(&src).unwrap();
    let start = std::time::Instant::now();
    let err = spec.jobs(10u64.pow(13)).unwrap_err();
    assert_eq!(err, TooManyJobs { count: 10u64.pow(12), limit: MAX_JOBS_CEILING });
    assert_eq!(
        err.to_string(),
        "the sweep expands to 1000000000000 jobs, more than the limit of 1000000 (--max-jobs can raise it to 1000000 at most)"
    );
    // Under the default limit, the message does not send the user to --max-jobs in vain.
    let err = spec.jobs(DEFAULT_MAX_JOBS).unwrap_err();
    assert_eq!(err, TooManyJobs { count: 10u64.pow(12), limit: DEFAULT_MAX_JOBS });
    assert!(err.to_string().ends_with("(--max-jobs can raise it to 1000000 at most)"), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(5), "counting took {:?}", start.elapsed());
    // At the ceiling exactly, the sweep expands.
    let at_ceiling =
        parse(&format!("{HEAD}[grid]\nseed = [{}]\nepochs = [{}]\n", ints(0, 1000), ints(1, 1000))).unwrap();
    assert_eq!(at_ceiling.job_count_upper_bound(), MAX_JOBS_CEILING);
    assert!(matches!(at_ceiling.jobs(MAX_JOBS_CEILING - 1), Err(TooManyJobs { count: 1_000_000, limit: 999_999 })));
}

#[test]
fn repeats_in_a_long_axis_are_found() {
    // 100,000 values: found by hashing, not by comparing every pair.
    let src = format!("{HEAD}[grid]\nseed = [{}, 7]\nmomentum = [0.0, 0.5, -0.0]\n", ints(0, 100_000));
    check(
        &src,
        &["s.toml:7: grid.seed[100000]: repeats the value 7", "s.toml:8: grid.momentum[2]: repeats the value -0"],
    );
}

/// Issue 16: `[data] skip_bad_images`, for data sets in files.
#[test]
fn skip_bad_images_is_a_boolean_of_file_layouts_and_enters_the_ids_only_when_set() {
    let kaggle = "name = \"t\"\n[data]\nlayout = \"kaggle\"\nroot = \"dogs\"\n[model]\nweights = \"random\"\n";
    let plain = parse(kaggle).unwrap();
    assert!(!plain.data.skip_bad_images);
    let with = |line: &str| kaggle.replace("root = \"dogs\"\n", &format!("root = \"dogs\"\n{line}\n"));
    let skip = parse(&with("skip_bad_images = true")).unwrap();
    assert!(skip.data.skip_bad_images);
    let off = parse(&with("skip_bad_images = false")).unwrap();
    let ids = |s: &SweepSpec| s.jobs(10).unwrap().into_iter().map(|j| j.id).collect::<Vec<_>>();
    // Written false is the default: the same jobs as a file without the key.
    assert_eq!(ids(&off), ids(&plain));
    assert_eq!(off.environment_json(), plain.environment_json());
    // Set, the data set may differ: other jobs.
    assert_ne!(ids(&skip), ids(&plain));
    assert_eq!(skip.environment_json()["data"]["skip_bad_images"], true);
    let folder = with("skip_bad_images = true").replace("\"kaggle\"", "\"folder\"");
    assert!(parse(&folder).unwrap().data.skip_bad_images);
    let json = r#"{"name": "t", "data": {"layout": "folder", "root": "x", "skip_bad_images": true}, "model": {"weights": "random"}}"#;
    assert!(SweepSpec::parse(json, Format::Json, Path::new("s.json"), Path::new("/")).unwrap().data.skip_bad_images);

    check(&with("skip_bad_images = \"yes\""), &["s.toml:5: data.skip_bad_images: must be true or false, got a string"]);
    check(&with("skip_bad_images = 1"), &["s.toml:5: data.skip_bad_images: must be true or false, got an integer"]);
    // Generated images are never bad: the key is not the synthetic layout's.
    check(
        &HEAD.replace("layout = \"synthetic\"", "layout = \"synthetic\"\nskip_bad_images = true"),
        &["s.toml:4: data.skip_bad_images: unknown key"],
    );
}

/// Issue 18: `std = [1/255, …]` gets an error that says what to write, not
/// the parser's "string values must be quoted".
#[test]
fn a_fraction_in_toml_says_to_write_a_decimal() {
    let src =
        "name = \"x\"\n[data]\nlayout = \"synthetic\"\n[model]\nweights = \"random\"\nstd = [1/255, 1/255, 1/255]\n";
    let err = SweepSpec::parse(src, Format::Toml, Path::new("f.toml"), Path::new(".")).unwrap_err().to_string();
    assert!(err.starts_with("f.toml:6: "), "{err}");
    assert!(
        err.contains(
            "TOML has no fractions: write `std = [1/255, 1/255, 1/255]` with the fractions in quotes (\"1/255\") \
             or as decimals (0.00392156862745098)"
        ),
        "{err}"
    );
}

/// Issue 18: fractions in quotes are taken (`std = ["1/255", …]`), and give
/// the ids of the same decimals; a string that is no fraction says what to write.
#[test]
fn fractions_in_quotes_are_numbers() {
    let file = |std: &str| {
        format!("name = \"x\"\n[data]\nlayout = \"synthetic\"\n[model]\nweights = \"random\"\nstd = {std}\n")
    };
    let parse = |src: &str| SweepSpec::parse(src, Format::Toml, Path::new("f.toml"), Path::new("."));
    let quoted = parse(&file(r#"["1/255", "1/255", " 2 / 255 "]"#)).unwrap();
    assert_eq!(quoted.model.std, [1.0 / 255.0, 1.0 / 255.0, 2.0 / 255.0]);
    let decimal = parse(&file(&format!("[{}, {}, {}]", 1.0 / 255.0, 1.0 / 255.0, 2.0 / 255.0))).unwrap();
    assert_eq!(quoted.id(), decimal.id());
    let err = parse(&file(r#"["1/255", "one", "1/0"]"#)).unwrap_err().to_string();
    assert_eq!(
        err,
        "f.toml:6: model.std[1]: must be a number or a fraction in quotes such as \"1/255\", got \"one\"\n\
         f.toml:6: model.std[2]: must be a number or a fraction in quotes such as \"1/255\", got \"1/0\""
    );
    let err = parse(&file(r#"["-1/255", "1/255", "1/255"]"#)).unwrap_err().to_string();
    assert!(err.contains("model.std[0]: must be > 0"), "{err}");
}

/// Issue 18: `channel_order` and `preset` in `[model]`. RGB (the default,
/// written or not) keeps every id; BGR enters the ids; a preset gives the
/// ids of its values written by hand, and refuses them beside it.
#[test]
fn channel_order_and_preset_enter_the_ids_only_when_they_change_the_transform() {
    let with = |lines: &str| format!("{HEAD}{lines}\n");
    let ids = |s: &SweepSpec| s.jobs(10).unwrap().into_iter().map(|j| j.id).collect::<Vec<_>>();
    let plain = parse(&with("")).unwrap();
    assert_eq!(plain.model.channel_order, sweep_worker::ChannelOrder::Rgb);
    for same in ["channel_order = \"rgb\"", "preset = \"torchvision\""] {
        let spec = parse(&with(same)).unwrap();
        assert_eq!(ids(&spec), ids(&plain), "{same}");
        assert_eq!(spec.environment_json(), plain.environment_json(), "{same}");
    }
    let bgr = parse(&with("channel_order = \"bgr\"")).unwrap();
    assert_eq!(bgr.model.channel_order, sweep_worker::ChannelOrder::Bgr);
    assert_eq!(bgr.environment_json()["model"]["channel_order"], "bgr");
    assert_ne!(ids(&bgr), ids(&plain));
    let caffe = parse(&with("preset = \"caffe\"")).unwrap();
    assert_eq!(caffe.model.channel_order, sweep_worker::ChannelOrder::Bgr);
    assert_eq!(caffe.model.mean, [103.939 / 255.0, 116.779 / 255.0, 123.68 / 255.0]);
    assert_eq!(caffe.model.std, [1.0 / 255.0; 3]);
    assert!(caffe.model_given.mean && caffe.model_given.std && caffe.model_given.channel_order);
    let by_hand = parse(&with(
        "channel_order = \"bgr\"\nmean = [\"103.939/255\", \"116.779/255\", \"123.68/255\"]\nstd = [\"1/255\", \"1/255\", \"1/255\"]",
    ))
    .unwrap();
    assert_eq!(ids(&caffe), ids(&by_hand));

    check(
        &with("preset = \"caffe\"\nmean = [0.5, 0.5, 0.5]\nchannel_order = \"rgb\""),
        &[
            "s.toml:7: model.mean: does not apply with preset: the preset sets mean",
            "s.toml:8: model.channel_order: does not apply with preset: the preset sets channel_order",
        ],
    );
    check(
        &with("preset = \"keras\""),
        &["s.toml:6: model.preset: must be one of \"torchvision\", \"caffe\", got \"keras\""],
    );
    check(
        &with("channel_order = \"RGB\""),
        &["s.toml:6: model.channel_order: must be \"rgb\" or \"bgr\", got \"RGB\""],
    );
}

/// Issue 17: `feature_dtype` in `[model]`. f32 (the default, written or
/// not) keeps every id; f16 enters the ids (and the cache key).
#[test]
fn feature_dtype_enters_the_ids_only_when_f16() {
    let with = |lines: &str| format!("{HEAD}{lines}\n");
    let ids = |s: &SweepSpec| s.jobs(10).unwrap().into_iter().map(|j| j.id).collect::<Vec<_>>();
    let plain = parse(&with("")).unwrap();
    assert_eq!(plain.model.feature_dtype, sweep_worker::FeatureDType::F32);
    let f32 = parse(&with("feature_dtype = \"f32\"")).unwrap();
    assert_eq!(ids(&f32), ids(&plain));
    assert_eq!(f32.environment_json(), plain.environment_json());
    let f16 = parse(&with("feature_dtype = \"f16\"")).unwrap();
    assert_eq!(f16.model.feature_dtype, sweep_worker::FeatureDType::F16);
    assert_eq!(f16.environment_json()["model"]["feature_dtype"], "f16");
    assert_ne!(ids(&f16), ids(&plain));
    check(
        &with("feature_dtype = \"bf16\""),
        &["s.toml:6: model.feature_dtype: must be \"f32\" or \"f16\", got \"bf16\""],
    );
}
