//! Head training (issue #5): the golden run against PyTorch, learning,
//! resuming bit for bit, divergence, and the best epoch.

#![allow(missing_docs)]

use std::cell::Cell;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use sweep_worker::{
    split, train, train_fused, train_with, EpochReport, EpochSink, Error, FeatureMatrix, HeadKernel, Hooks, Loss,
    SinkError, Split, TrainConfig, TrainJob, TrainOutcome, TrainState,
};

/// Collects every report and the bytes of the last state; stops after
/// `stop_after_epochs` epochs or at the `stop_at_poll`-th poll of `should_stop`.
#[derive(Default)]
struct Recorder {
    reports: Vec<EpochReport>,
    states: Vec<Vec<u8>>,
    last: Option<TrainState>,
    stop_after_epochs: Option<usize>,
    stop_at_poll: Option<usize>,
    polls: Cell<usize>,
}

impl EpochSink for Recorder {
    fn epoch(&mut self, report: &EpochReport, state: &TrainState) -> Result<(), SinkError> {
        self.reports.push(report.clone());
        self.states.push(state.to_bytes()?);
        self.last = Some(state.clone());
        Ok(())
    }

    fn should_stop(&self) -> bool {
        self.polls.set(self.polls.get() + 1);
        self.stop_after_epochs.is_some_and(|k| self.reports.len() >= k) || self.stop_at_poll == Some(self.polls.get())
    }
}

/// Reports without their wall-clock seconds, the one field that may differ.
fn timeless(reports: &[EpochReport]) -> Vec<EpochReport> {
    reports.iter().map(|r| EpochReport { seconds: 0.0, ..r.clone() }).collect()
}

fn config(loss: Loss) -> TrainConfig {
    TrainConfig {
        batch_size: 16,
        lr: 0.01,
        momentum: 0.9,
        epochs: 5,
        weight_decay: 0.0,
        step_size: 15,
        gamma: 0.1,
        seed: 0,
        loss,
    }
}

/// Gaussian blobs: `n` samples of width `dim` around `classes` random centres
/// (spread `spread`, unit noise).
fn blobs(n: usize, dim: usize, classes: usize, spread: f32, seed: u64) -> (FeatureMatrix, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut normal = move || -> f32 {
        // Box-Muller, enough for test data.
        let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
    };
    let centres: Vec<f32> = (0..classes * dim).map(|_| spread * normal()).collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
    let features: Vec<f32> =
        labels.iter().flat_map(|&y| (0..dim).map(|d| centres[y as usize * dim + d]).collect::<Vec<_>>()).collect();
    let features: Vec<f32> = features.into_iter().map(|c| c + normal()).collect();
    (FeatureMatrix::from_vec(features, n, dim).unwrap(), labels)
}

/// A job on the CPU from no saved state.
fn job<'a>(
    features: &'a FeatureMatrix,
    labels: &'a [u32],
    classes: usize,
    split: &'a Split,
    config: &'a TrainConfig,
) -> TrainJob<'a> {
    TrainJob { features, labels, classes, split, config, resume: None, device: &Device::Cpu }
}

// ---- golden: the production path against PyTorch ----

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(x) => vec![x.as_f64().unwrap() as f32],
        other => panic!("not a number: {other}"),
    }
}

fn indices(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

/// The largest absolute difference, with the reference's values as f32.
fn max_abs_diff(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len());
    ours.iter().zip(reference).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Replays `tests/fixtures/train/golden.json` (written by `make_fixture.py`:
/// PyTorch's nn.Linear, loss, optim.SGD with momentum and weight decay, and
/// StepLR) through `train`'s own loop, with the fixture's initial head and
/// batch orders. Every step's loss, each epoch's valid loss, the final
/// weights and momentum buffers agree to 1e-6 (absolute; the values are of
/// order 1, so a few float32 ulps); valid accuracies are equal.
fn golden(loss: Loss, key: &str) {
    let kernels = [HeadKernel::Candle, HeadKernel::Avx2, HeadKernel::Avx512];
    for kernel in kernels {
        if kernel.runs_on_this_cpu() {
            golden_with(loss, key, kernel);
        } else {
            eprintln!("{key}: skipped the {kernel:?} head kernel: this CPU lacks its instructions");
        }
    }
    assert!(HeadKernel::Avx2.runs_on_this_cpu() || std::env::var_os("CI").is_none(), "CI machines have AVX2");
}

fn golden_with(loss: Loss, key: &str, kernel: HeadKernel) {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/train/golden.json")).expect("golden.json is valid JSON");
    let c = &fixture["config"];
    let classes = fixture["classes"].as_u64().unwrap() as usize;
    let features = floats(&fixture["features"]);
    let n = fixture["labels"].as_array().unwrap().len();
    let dim = features.len() / n;
    let features = FeatureMatrix::from_vec(features, n, dim).unwrap();
    let labels: Vec<u32> = indices(&fixture["labels"]).into_iter().map(|y| y as u32).collect();
    let split = Split { train: indices(&fixture["train"]), valid: indices(&fixture["valid"]) };
    let cfg = TrainConfig {
        batch_size: c["batch_size"].as_u64().unwrap() as usize,
        lr: c["lr"].as_f64().unwrap(),
        momentum: c["momentum"].as_f64().unwrap(),
        epochs: c["epochs"].as_u64().unwrap() as usize,
        weight_decay: c["weight_decay"].as_f64().unwrap(),
        step_size: c["step_size"].as_u64().unwrap() as usize,
        gamma: c["gamma"].as_f64().unwrap(),
        seed: 0,
        loss,
    };
    let init = TrainState {
        epoch: 0,
        weight: Tensor::from_vec(floats(&fixture["weight"]), (classes, dim), &Device::Cpu).unwrap(),
        bias: Tensor::from_vec(floats(&fixture["bias"]), classes, &Device::Cpu).unwrap(),
        momentum: None,
        best_valid_acc: f64::NEG_INFINITY,
        best_epoch: 0,
    };
    let orders: Vec<Vec<u32>> = fixture["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| indices(o).into_iter().map(|i| i as u32).collect())
        .collect();
    let order = |epoch: usize| orders[epoch].clone();
    let mut step_losses: Vec<Vec<f32>> = Vec::new();
    let mut record_losses = |epoch: usize, losses: &[f32]| {
        assert_eq!(epoch, step_losses.len());
        step_losses.push(losses.to_vec());
    };
    let mut sink = Recorder::default();
    let hooks = Hooks { kernel, order: Some(&order), step_losses: Some(&mut record_losses) };
    let golden = TrainJob { resume: Some(init), ..job(&features, &labels, classes, &split, &cfg) };
    let outcome = train_with(golden, &mut sink, hooks).expect("the golden run trains");
    assert!(matches!(outcome, TrainOutcome::Finished { .. }));

    let reference = &fixture[key];
    let ref_steps: Vec<Vec<f32>> = reference["step_losses"].as_array().unwrap().iter().map(floats).collect();
    assert_eq!(step_losses.len(), ref_steps.len());
    for (epoch, (ours, theirs)) in step_losses.iter().zip(&ref_steps).enumerate() {
        let diff = max_abs_diff(ours, theirs);
        assert!(
            diff <= 1e-6,
            "{key} ({kernel:?}): epoch {}: step losses differ by {diff:e}:\n{ours:?}\n{theirs:?}",
            epoch + 1
        );
    }
    let state = sink.last.as_ref().expect("epochs were reported");
    let (momentum_weight, momentum_bias) = state.momentum.as_ref().expect("momentum buffers");
    for (name, ours, theirs) in [
        ("weight", &state.weight, "weight"),
        ("bias", &state.bias, "bias"),
        ("momentum.weight", momentum_weight, "momentum_weight"),
        ("momentum.bias", momentum_bias, "momentum_bias"),
    ] {
        let diff = max_abs_diff(&values(ours), &floats(&reference[theirs]));
        assert!(diff <= 1e-6, "{key} ({kernel:?}): final {name} differs by {diff:e}");
    }
    let n_train = split.train.len() as f64;
    let n_valid = split.valid.len() as f64;
    for (epoch, report) in sink.reports.iter().enumerate() {
        assert_eq!(report.epoch, epoch + 1);
        assert_eq!(report.lr, cfg.lr * cfg.gamma.powi((epoch / cfg.step_size) as i32));
        let train_loss: f64 = ref_steps[epoch]
            .iter()
            .zip(split.train.chunks(cfg.batch_size))
            .map(|(&l, batch)| f64::from(l) * batch.len() as f64)
            .sum::<f64>()
            / n_train;
        assert!((report.train_loss - train_loss).abs() <= 1e-6, "{key}: epoch {}: train loss", epoch + 1);
        let valid_loss = reference["valid_loss"][epoch].as_f64().unwrap();
        assert!((report.valid_loss - valid_loss).abs() <= 1e-6, "{key}: epoch {}: valid loss", epoch + 1);
        let valid_correct = reference["valid_correct"][epoch].as_f64().unwrap();
        assert_eq!(report.valid_acc, valid_correct / n_valid, "{key}: epoch {}: valid accuracy", epoch + 1);
    }
}

#[test]
fn cross_entropy_matches_pytorch_step_by_step() {
    golden(Loss::CrossEntropy, "cross_entropy");
}

#[test]
fn multi_margin_matches_pytorch_step_by_step() {
    golden(Loss::MultiMargin, "multi_margin");
}

// ---- learning ----

fn final_valid_acc(cfg: &TrainConfig) -> f64 {
    let (features, labels) = blobs(500, 32, 5, 1.0, 7);
    let split = split(500, 0.2, 0).unwrap();
    let mut sink = Recorder::default();
    train(job(&features, &labels, 5, &split, cfg), &mut sink).unwrap();
    assert_eq!(sink.reports.len(), cfg.epochs);
    sink.reports.last().unwrap().valid_acc
}

/// Separable blobs are learned (> 0.95 valid accuracy in 5 epochs), for both
/// losses; with lr = 0 the same run stays near chance (0.2), so the threshold
/// is not met by an optimizer that does nothing.
#[test]
fn the_head_learns_separable_blobs_and_lr_zero_does_not() {
    for loss in [Loss::CrossEntropy, Loss::MultiMargin] {
        let acc = final_valid_acc(&config(loss));
        assert!(acc > 0.95, "{loss:?}: valid accuracy {acc}");
    }
    let frozen = final_valid_acc(&TrainConfig { lr: 0.0, ..config(Loss::CrossEntropy) });
    assert!(frozen < 0.5, "lr 0 reached {frozen}");
}

// ---- resume ----

fn resume_problem() -> (FeatureMatrix, Vec<u32>, Split, TrainConfig) {
    let (features, labels) = blobs(240, 16, 4, 0.5, 11);
    let split = split(240, 0.25, 1).unwrap();
    // 180 train samples, batch 16: 12 steps an epoch, the last one short.
    let cfg =
        TrainConfig { epochs: 6, weight_decay: 1e-3, step_size: 2, gamma: 0.5, seed: 3, ..config(Loss::CrossEntropy) };
    (features, labels, split, cfg)
}

/// A state's content, floats as bits: the safetensors bytes themselves
/// order their metadata as a `HashMap` iterates.
fn canonical(bytes: &[u8]) -> (usize, u64, usize, Vec<Vec<u32>>) {
    let s = TrainState::from_bytes(bytes, &Device::Cpu).unwrap();
    let (mw, mb) = s.momentum.expect("momentum buffers");
    let bits = |t: &Tensor| values(t).into_iter().map(f32::to_bits).collect::<Vec<_>>();
    (s.epoch, s.best_valid_acc.to_bits(), s.best_epoch, vec![bits(&s.weight), bits(&s.bias), bits(&mw), bits(&mb)])
}

fn resumed_run(stop: Recorder) -> (Vec<EpochReport>, Vec<Vec<u8>>) {
    let (features, labels, split, cfg) = resume_problem();
    let mut first = stop;
    let outcome = train(job(&features, &labels, 4, &split, &cfg), &mut first).unwrap();
    let done = first.reports.len();
    assert_eq!(outcome, TrainOutcome::Stopped { epoch: done });
    assert!(done > 0 && done < cfg.epochs);
    let state = TrainState::from_bytes(first.states.last().unwrap(), &Device::Cpu).unwrap();
    assert_eq!(state.epoch, done);
    let mut rest = Recorder::default();
    let outcome =
        train(TrainJob { resume: Some(state), ..job(&features, &labels, 4, &split, &cfg) }, &mut rest).unwrap();
    assert!(matches!(outcome, TrainOutcome::Finished { .. }));
    let reports = first.reports.into_iter().chain(rest.reports).collect::<Vec<_>>();
    (reports, first.states.into_iter().chain(rest.states).collect())
}

/// Stopped after epoch 2 (between epochs) or during epoch 4 (its state is
/// dropped; the job resumes from epoch 3's), restored from the state's bytes
/// and finished: every epoch's metrics and every state, weights and momentum
/// included, equal the uninterrupted run's bit for bit.
#[test]
fn a_resumed_run_equals_the_uninterrupted_one_bit_for_bit() {
    let (features, labels, split, cfg) = resume_problem();
    let mut whole = Recorder::default();
    train(job(&features, &labels, 4, &split, &cfg), &mut whole).unwrap();
    assert_eq!(whole.reports.len(), cfg.epochs);

    let between = resumed_run(Recorder { stop_after_epochs: Some(2), ..Recorder::default() });
    assert_eq!(timeless(&between.0), timeless(&whole.reports));
    assert!(between.1.iter().map(|b| canonical(b)).eq(whole.states.iter().map(|b| canonical(b))));

    // Polls come before each step: 12 per epoch; poll 3 * 12 + 5 is in the 4th epoch.
    let within = resumed_run(Recorder { stop_at_poll: Some(3 * 12 + 5), ..Recorder::default() });
    assert_eq!(timeless(&within.0), timeless(&whole.reports));
    assert!(within.1.iter().map(|b| canonical(b)).eq(whole.states.iter().map(|b| canonical(b))));
}

// ---- divergence ----

/// A huge lr on unnormalised features overflows the logits: the job fails
/// with `NonFinite` and no epoch with a non-finite number reaches the sink.
#[test]
fn a_diverging_run_fails_with_non_finite_and_reports_nothing_non_finite() {
    let (features, labels) = blobs(200, 16, 4, 1.0, 2);
    let features = FeatureMatrix::from_tensor(&(features.to_tensor().unwrap() * 1e15).unwrap()).unwrap();
    let split = split(200, 0.2, 0).unwrap();
    let cfg = TrainConfig { lr: 1e15, ..config(Loss::CrossEntropy) };
    let mut sink = Recorder::default();
    let err = train(job(&features, &labels, 4, &split, &cfg), &mut sink).unwrap_err();
    assert!(matches!(err, Error::NonFinite { phase: "train", .. }), "{err}");
    assert!(err.to_string().contains("diverged"), "{err}");
    for r in &sink.reports {
        for x in [r.train_loss, r.train_acc, r.valid_loss, r.valid_acc] {
            assert!(x.is_finite(), "a non-finite epoch was reported: {r:?}");
        }
    }
}

// ---- the best epoch ----

/// The final state's best epoch and accuracy are those of the first epoch
/// with the highest valid accuracy (the paper's `if epoch_acc > best_acc`),
/// and `is_best` marks exactly the epochs that beat all before them.
#[test]
fn the_best_epoch_is_the_first_with_the_highest_valid_accuracy() {
    // Overlapping blobs and 12 valid samples: accuracies tie and fall back.
    let (features, labels) = blobs(60, 8, 3, 0.6, 4);
    let split = split(60, 0.2, 0).unwrap();
    let cfg = TrainConfig { epochs: 12, lr: 0.05, ..config(Loss::CrossEntropy) };
    let mut sink = Recorder::default();
    let outcome = train(job(&features, &labels, 3, &split, &cfg), &mut sink).unwrap();
    let accs: Vec<f64> = sink.reports.iter().map(|r| r.valid_acc).collect();
    let best = accs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let first_best = accs.iter().position(|&a| a == best).unwrap() + 1;
    assert!(
        accs[first_best..].contains(&best),
        "the test needs a later epoch that ties the best, to tell first from last: {accs:?}"
    );
    let state = sink.last.as_ref().unwrap();
    assert_eq!((state.best_epoch, state.best_valid_acc), (first_best, best), "{accs:?}");
    assert_eq!(outcome, TrainOutcome::Finished { best_valid_acc: best, best_epoch: first_best });
    for (i, r) in sink.reports.iter().enumerate() {
        let beats_all_before = accs[..i].iter().all(|&a| r.valid_acc > a);
        assert_eq!(r.is_best, beats_all_before, "epoch {}: {accs:?}", i + 1);
    }
    let restored = TrainState::from_bytes(sink.states.last().unwrap(), &Device::Cpu).unwrap();
    assert_eq!((restored.best_epoch, restored.best_valid_acc), (first_best, best));
}

/// Issue 12: heads trained as one group give each head its epochs alone
/// (accuracies, learning rates and best epochs equal, losses to 1e-5
/// relative: only the products' summation order differs), a head leaves the
/// group when its epochs are done, and each head's state holds its own rows
/// only, not a copy of the group's.
#[test]
fn fused_heads_give_each_head_its_epochs_alone_in_states_of_their_own() {
    let (features, labels, split, cfg) = resume_problem();
    let configs = [
        cfg.clone(),
        TrainConfig { lr: 0.05, momentum: 0.0, ..cfg.clone() },
        TrainConfig { weight_decay: 0.0, epochs: 3, loss: Loss::CrossEntropy, ..cfg.clone() },
    ];
    let mut fused: Vec<Recorder> = configs.iter().map(|_| Recorder::default()).collect();
    let jobs = configs.iter().map(|c| job(&features, &labels, 4, &split, c)).collect();
    let mut sinks: Vec<&mut dyn EpochSink> = fused.iter_mut().map(|r| r as &mut dyn EpochSink).collect();
    let outcomes = train_fused(jobs, &mut sinks);
    for ((c, got), outcome) in configs.iter().zip(&fused).zip(outcomes) {
        assert!(matches!(outcome.unwrap(), TrainOutcome::Finished { .. }));
        let mut alone = Recorder::default();
        train(job(&features, &labels, 4, &split, c), &mut alone).unwrap();
        assert_eq!(got.reports.len(), c.epochs);
        assert_eq!(alone.reports.len(), c.epochs);
        for (a, b) in got.reports.iter().zip(&alone.reports) {
            let key = |r: &EpochReport| (r.epoch, r.train_acc, r.valid_acc, r.lr, r.is_best);
            assert_eq!(key(a), key(b));
            for (x, y) in [(a.train_loss, b.train_loss), (a.valid_loss, b.valid_loss)] {
                assert!((x - y).abs() <= 1e-5 * y.abs(), "{x} fused, {y} alone: {a:?} {b:?}");
            }
        }
        let state = got.last.as_ref().unwrap();
        for (t, n) in [(&state.weight, 4 * 16), (&state.bias, 4)] {
            let (storage, _) = t.storage_and_layout();
            let candle_core::Storage::Cpu(cpu) = &*storage else { panic!("not on the CPU") };
            assert_eq!(cpu.as_slice::<f32>().unwrap().len(), n, "a head's state holds more than its rows");
        }
    }
}
