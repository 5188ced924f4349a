//! `[search]` and `[space]`: sampling, expansion, ids and errors.

use std::path::Path;

use super::sobol;
use crate::spec::{Format, Param, SweepSpec, TrainKey, DEFAULT_MAX_JOBS};

const HEAD: &str = "name = \"t\"\n[data]\nlayout = \"synthetic\"\n[model]\nweights = \"random\"\n";

fn parse(src: &str) -> SweepSpec {
    SweepSpec::parse(src, Format::Toml, Path::new("s.toml"), Path::new("/data")).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(src: &str) -> String {
    match SweepSpec::parse(src, Format::Toml, Path::new("s.toml"), Path::new("/data")) {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(e) => e.to_string(),
    }
}

fn search(method: &str, trials: u64) -> String {
    format!(
        "{HEAD}[search]\nmethod = \"{method}\"\ntrials = {trials}\nseed = 7\n[space]\n\
         lr = {{ log_uniform = [1e-4, 0.3] }}\nmomentum = {{ uniform = [0.5, 0.99] }}\n\
         weight_decay = {{ log_uniform = [1e-6, 1e-2], zero_probability = 0.25 }}\n\
         batch_size = {{ choice = [8, 16, 32, 64] }}\nepochs = 3\n"
    )
}

#[test]
fn trials_are_deterministic_and_raising_trials_keeps_the_first() {
    for method in ["random", "sobol"] {
        let a = parse(&search(method, 64)).jobs(DEFAULT_MAX_JOBS).unwrap();
        let b = parse(&search(method, 64)).jobs(DEFAULT_MAX_JOBS).unwrap();
        let c = parse(&search(method, 128)).jobs(DEFAULT_MAX_JOBS).unwrap();
        assert_eq!(a.len(), 64, "{method}");
        assert_eq!(c.len(), 128, "{method}");
        assert_eq!(a, b, "{method}");
        assert_eq!(a[..], c[..64], "{method}");
        assert!(a.iter().enumerate().all(|(i, j)| j.trial == Some(i as u64)));
        for job in &c {
            let p = &job.params;
            let f = |k| match p.get(k) {
                Param::Float(x) => x,
                other => panic!("{other:?}"),
            };
            assert!((1e-4..=0.3).contains(&f(TrainKey::Lr)));
            assert!((0.5..=0.99).contains(&f(TrainKey::Momentum)));
            let wd = f(TrainKey::WeightDecay);
            assert!(wd == 0.0 || (1e-6..=1e-2).contains(&wd), "{wd}");
            assert!(matches!(p.get(TrainKey::BatchSize), Param::Int(8 | 16 | 32 | 64)));
            assert_eq!(p.get(TrainKey::Epochs), Param::Int(3));
            // Twelve significant digits: the value reads back exactly.
            let text = f(TrainKey::Lr).to_string();
            assert!(text.trim_start_matches("0.").trim_start_matches('0').len() <= 13, "{text}");
        }
        let zeros = c.iter().filter(|j| j.params.get(TrainKey::WeightDecay) == Param::Float(0.0)).count();
        assert!((10..=55).contains(&zeros), "{method}: {zeros} of 128 weight decays are 0 (p = 0.25)");
    }
    // Another seed, other trials; another method, other trials.
    let other = parse(&search("random", 8).replace("seed = 7", "seed = 8")).jobs(DEFAULT_MAX_JOBS).unwrap();
    let random = parse(&search("random", 8)).jobs(DEFAULT_MAX_JOBS).unwrap();
    let sobol = parse(&search("sobol", 8)).jobs(DEFAULT_MAX_JOBS).unwrap();
    assert_ne!(other[0].id, random[0].id);
    assert_ne!(sobol[0].id, random[0].id);
}

#[test]
fn a_sampled_trial_equal_to_a_grid_job_has_its_id() {
    let sampled = parse(&format!(
        "{HEAD}[search]\nmethod = \"random\"\ntrials = 16\n[space]\nlr = {{ choice = [0.01, 0.1] }}\nepochs = 3\n"
    ));
    let grid = parse(&format!("{HEAD}[train]\nepochs = 3\n[grid]\nlr = [0.01, 0.1]\n"));
    let mut a: Vec<String> = sampled.jobs(DEFAULT_MAX_JOBS).unwrap().into_iter().map(|j| j.id).collect();
    let mut b: Vec<String> = grid.jobs(DEFAULT_MAX_JOBS).unwrap().into_iter().map(|j| j.id).collect();
    // 16 trials of two values: de-duplicated to the two grid jobs.
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // The search changes the sweep, not the jobs.
    assert_ne!(sampled.id(), grid.id());
}

#[test]
fn lists_in_space_and_grid_are_crossed_with_the_trials() {
    let spec = parse(&format!(
        "{HEAD}[search]\nmethod = \"sobol\"\ntrials = 4\n[grid]\nseed = [0, 1]\n[space]\n\
         lr = {{ uniform = [0.01, 0.1], step = 0.01 }}\nloss = [\"cross_entropy\", \"multi_margin\"]\n\
         step_size = {{ int_uniform = [2, 10], step = 4 }}\n"
    ));
    let jobs = spec.jobs(DEFAULT_MAX_JOBS).unwrap();
    assert_eq!(spec.job_count_upper_bound(), 16);
    assert!(jobs.len() <= 16 && jobs.len() >= 8, "{}", jobs.len());
    // Trial outermost: each trial's four grid points together.
    assert!(jobs[..4].iter().all(|j| j.trial == Some(0)));
    for job in &jobs {
        let Param::Float(lr) = job.params.get(TrainKey::Lr) else { panic!() };
        assert!((lr * 100.0 - (lr * 100.0).round()).abs() < 1e-9 && (0.01..=0.1).contains(&lr), "{lr}");
        assert!(matches!(job.params.get(TrainKey::StepSize), Param::Int(2 | 6 | 10)));
    }
}

#[test]
fn sobol_points_are_stratified_in_every_dimension() {
    // Any 2^k first points of a (scrambled) Sobol sequence put one point in
    // each interval [j/2^k, (j+1)/2^k) of every coordinate.
    for dim in 0..sobol::DIMENSIONS {
        for seed in [0u32, 12345] {
            let k = 6;
            let mut seen = vec![false; 1 << k];
            for i in 0..(1u64 << k) {
                let u = sobol::point(i, dim, seed);
                let cell = (u * (1 << k) as f64) as usize;
                assert!(!seen[cell], "dim {dim}, seed {seed}: point {i} shares cell {cell}");
                seen[cell] = true;
            }
        }
    }
    // Two dimensions together: 2^k points fill the 2^k cells of a
    // 2^(k/2) x 2^(k/2) grid for the first pairs (t = 0 for dims 1 and 2).
    let mut cells = std::collections::HashSet::new();
    for i in 0..64u64 {
        let (u, v) = (sobol::point(i, 0, 1), sobol::point(i, 1, 2));
        cells.insert(((u * 8.0) as usize, (v * 8.0) as usize));
    }
    assert_eq!(cells.len(), 64);
}

#[test]
fn joe_kuo_polynomials_are_primitive_and_directions_valid() {
    for (s, a, m) in sobol::JOE_KUO {
        // x^s + a_1 x^(s-1) + … + a_(s-1) x + 1 over GF(2), as bits.
        let poly: u32 = (1 << s) | (a << 1) | 1;
        let order = (1u32 << s) - 1;
        // x's order modulo the polynomial must be 2^s - 1.
        let mut x = 1u32;
        let mut found = None;
        for n in 1..=order {
            x <<= 1;
            if x & (1 << s) != 0 {
                x ^= poly;
            }
            if x == 1 {
                found = Some(n);
                break;
            }
        }
        assert_eq!(found, Some(order), "polynomial of degree {s}, a = {a}");
        for (k, m) in m.iter().enumerate() {
            assert!(m % 2 == 1 && *m < 1 << (k + 1), "m_{} = {m} (s = {s}, a = {a})", k + 1);
        }
    }
}

#[test]
fn every_problem_of_a_search_is_reported_at_once_with_its_line() {
    let src = format!(
        "{HEAD}[search]\nmethod = \"random\"\ntrials = 0\n[space]\n\
         lr = {{ log_uniform = [0.3, 1e-4] }}\n\
         momentum = {{ uniform = [0.5, 0.5] }}\n\
         weight_decay = {{ log_uniform = [0, 1e-2] }}\n\
         gamma = {{ normal = [0.1, 1] }}\n\
         step_size = {{ int_uniform = [1, 10], step = 0 }}\n\
         batch_size = {{ uniform = [8, 64] }}\n\
         seed = {{ choice = [] }}\n"
    );
    let expected = [
        "s.toml:8: search.trials: must be between 1 and 1000000, got 0",
        "s.toml:10: space.lr.log_uniform: low > high: 0.3 > 0.0001",
        "s.toml:11: space.momentum.uniform: an empty range: 0.5 to 0.5",
        "s.toml:12: space.weight_decay.log_uniform: the log of a non-positive value: 0 (use a low > 0)",
        "s.toml:13: space.gamma.normal: unknown key",
        "s.toml:13: space.gamma: needs a distribution: one of \"uniform\", \"log_uniform\", \"int_uniform\", \"choice\"",
        "s.toml:14: space.step_size.step: must be >= 1, got 0",
        "s.toml:15: space.batch_size.uniform: batch_size takes whole numbers: use int_uniform, log_uniform or choice",
        "s.toml:16: space.seed.choice: must not be an empty list",
    ];
    assert_eq!(errors(&src), expected.join("\n"));

    let src = format!("{HEAD}[space]\nlr = {{ log_uniform = [1e-4, 0.3] }}\n");
    assert_eq!(
        errors(&src),
        "s.toml:6: space: needs a [search] table with method = \"random\" or \"sobol\" (a grid of lists goes in [grid])"
    );
    let src = format!(
        "{HEAD}[search]\nmethod = \"grid\"\nseed = 3\nobjective = \"valid_los\"\n[train]\nlr = 0.1\n\
         [space]\nlr = [0.1]\nmomentum = {{ uniform = [0.5, 0.9], step = -1 }}\n\
         epochs = {{ log_uniform = [1, 10], step = 2 }}\nlr_decay = 3\n"
    );
    let expected = [
        "s.toml:8: search.seed: applies to method = \"random\" or \"sobol\" only",
        "s.toml:9: search.objective: must be one of \"valid_acc\", \"valid_loss\", \"train_loss\", got \"valid_los\"",
        "s.toml:13: space.lr: also set in [train]: set each key in one place",
        "s.toml:14: space.momentum.step: must be > 0, got -1",
        "s.toml:15: space.epochs.step: does not apply to log_uniform",
        "s.toml:16: space.lr_decay: unknown key",
    ];
    assert_eq!(errors(&src), expected.join("\n"));
    let src = format!("{HEAD}[search]\nmethod = \"sobol\"\n[space]\nlr = {{ uniform = [0.1, 0.2] }}\n");
    assert_eq!(errors(&src), "s.toml:6: search.trials: missing: how many trials to sample");
    let src = format!("{HEAD}[search]\nobjective = \"valid_loss\"\n[space]\nlr = {{ uniform = [0.1, 0.2] }}\n");
    assert_eq!(
        errors(&src),
        "s.toml:9: space.lr: a distribution needs [search] method = \"random\" or \"sobol\", not \"grid\""
    );
    let src = format!("{HEAD}[search]\nmethod = \"random\"\ntrials = 3\n");
    assert_eq!(errors(&src), "s.toml: space: method = \"random\" needs a distribution in [space] to sample");
    let src = format!("{HEAD}[search]\nmethod = \"random\"\ntrials = 3\n[space]\nlr = {{ uniform = [0.1, 0.2], zero_probability = 0.5 }}\n");
    assert_eq!(errors(&src), "s.toml:10: space.lr.zero_probability: 0 is no value of lr: it must be > 0, got 0");
}

#[test]
fn the_objective_and_the_search_enter_the_sweep_id_only_when_set() {
    let plain = parse(HEAD);
    let grid = parse(&format!("{HEAD}[search]\nmethod = \"grid\"\n"));
    assert_eq!(plain.id(), grid.id());
    let loss = parse(&format!("{HEAD}[search]\nobjective = \"valid_loss\"\n"));
    assert_ne!(plain.id(), loss.id());
    assert_eq!(loss.objective().name(), "valid_loss");
    assert!(loss.canonical_json().contains(r#""search":{"objective":"valid_loss"}"#), "{}", loss.canonical_json());
    assert_eq!(plain.jobs(1).unwrap()[0].id, loss.jobs(1).unwrap()[0].id);
}
