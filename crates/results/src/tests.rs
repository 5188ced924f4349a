use std::time::Duration;

use sweep_store::{EpochRow, Finish, NewJob, NewSweep, Status, Store};

use crate::SweepResults;

const LEASE: Duration = Duration::from_secs(60);

/// A sweep of jobs `(config_json, best valid acc if run)`, each run for one epoch.
fn sweep(jobs: &[(&str, Option<f64>)]) -> (Store, SweepResults) {
    let mut store = Store::open_in_memory().unwrap();
    let ids: Vec<String> = (0..jobs.len()).map(|i| format!("job{i}")).collect();
    let new: Vec<NewJob<'_>> = jobs
        .iter()
        .zip(&ids)
        .map(|((config, _), id)| NewJob {
            id,
            config_json: config,
            batch_size: 16,
            workers: 2,
            lr: 0.01,
            momentum: 0.9,
            epochs: 1,
        })
        .collect();
    let sweep = NewSweep { id: "s", name: "s", spec_json: "{}", source: None, source_path: None };
    store.register_sweep(&sweep, &new).unwrap();
    for _ in jobs {
        let claimed = store.claim("s", "me", LEASE).unwrap().unwrap();
        let i: usize = claimed.id[3..].parse().unwrap();
        match jobs[i].1 {
            Some(acc) => {
                let epoch = EpochRow {
                    epoch: 1,
                    train_loss: 1.0,
                    train_acc: 0.5,
                    valid_loss: 1.0,
                    valid_acc: acc,
                    lr: 0.01,
                    seconds: 1.0,
                };
                store.record_epoch(&claimed.id, "me", &epoch, b"state", true, LEASE).unwrap();
                store.finish(&claimed.id, "me", Finish::Done).unwrap();
            }
            None => store.finish(&claimed.id, "me", Finish::Failed("diverged")).unwrap(),
        }
    }
    let row = store.find_sweep(Some("s")).unwrap();
    let results = SweepResults::load(&store, row, &["workers"]).unwrap();
    (store, results)
}

#[test]
fn same_as_ignores_only_speed_keys() {
    let (_, r) = sweep(&[
        (r#"{"lr":0.1,"workers":2}"#, Some(0.5)),
        (r#"{"lr":0.1,"workers":4}"#, Some(0.5)),
        (r#"{"lr":0.2,"workers":4}"#, Some(0.7)),
    ]);
    let same: Vec<Option<&str>> = r.jobs.iter().map(|j| j.same_as.as_deref()).collect();
    assert_eq!(same, [None, Some("job0"), None]);
    assert_eq!(r.same_as_count(), 1);
    assert_eq!(r.varying_keys(), ["workers", "lr"]);
}

#[test]
fn best_is_the_first_of_the_highest() {
    let (_, r) = sweep(&[(r#"{"lr":1}"#, Some(0.5)), (r#"{"lr":2}"#, Some(0.7)), (r#"{"lr":3}"#, Some(0.7))]);
    assert_eq!(r.best().unwrap().row.id, "job1");
    let (_, none) = sweep(&[(r#"{"lr":1}"#, None)]);
    assert!(none.best().is_none());
}

#[test]
fn sort_puts_accuracy_first_and_missing_last() {
    let (_, mut r) = sweep(&[(r#"{"lr":1}"#, None), (r#"{"lr":2}"#, Some(0.4)), (r#"{"lr":3}"#, Some(0.9))]);
    r.sort_by("best_valid_acc").unwrap();
    let order: Vec<&str> = r.jobs.iter().map(|j| j.row.id.as_str()).collect();
    assert_eq!(order, ["job2", "job1", "job0"]);
    r.sort_by("job_id").unwrap();
    let order: Vec<&str> = r.jobs.iter().map(|j| j.row.id.as_str()).collect();
    assert_eq!(order, ["job0", "job1", "job2"]);
    let err = r.sort_by("nope").unwrap_err().to_string();
    assert!(err.starts_with("no such column: nope (one of job_id, batch_size"), "{err}");
}

#[test]
fn folds_give_mean_and_sample_std_of_done_folds() {
    let (_, r) = sweep(&[
        (r#"{"lr":1,"fold":0}"#, Some(0.5)),
        (r#"{"lr":1,"fold":1}"#, Some(0.7)),
        (r#"{"lr":2,"fold":0}"#, Some(0.9)),
        (r#"{"lr":2,"fold":1}"#, None),
    ]);
    assert!(r.is_kfold());
    let groups = r.folds();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].first().row.id, "job0");
    assert!((groups[0].mean.unwrap() - 0.6).abs() < 1e-12);
    assert!((groups[0].std.unwrap() - 0.02f64.sqrt()).abs() < 1e-12);
    assert_eq!(groups[0].status, Status::Done);
    assert_eq!(groups[1].accuracies, [0.9]);
    assert_eq!(groups[1].std, None);
    assert_eq!(groups[1].status, Status::Failed);
    assert_eq!(r.varying_keys(), ["lr"]);
}

#[test]
fn status_text_says_how_far() {
    let (_, r) = sweep(&[(r#"{"lr":1}"#, Some(0.5))]);
    assert_eq!(r.jobs[0].status_text(), "done");
    let mut job = r.jobs[0].clone();
    job.row.status = Status::Interrupted;
    assert_eq!(job.status_text(), "interrupted (1/1)");
}

#[test]
fn the_objective_comes_from_the_recorded_spec_and_picks_the_best() {
    use crate::Objective;
    assert_eq!(Objective::of_spec("{}"), Objective::ValidAcc);
    assert_eq!(Objective::of_spec(r#"{"search":{"objective":"valid_loss"}}"#), Objective::ValidLoss);
    assert_eq!(Objective::of_spec(r#"{"search":{"method":"random","objective":"train_loss"}}"#), Objective::TrainLoss);
    assert_eq!(Objective::of_spec("not json"), Objective::ValidAcc);
    // Each job's loss equals its accuracy here (one epoch each): the lowest
    // loss is the job with the lowest accuracy.
    let (_, mut r) = sweep(&[(r#"{"lr":0.1}"#, Some(0.5)), (r#"{"lr":0.2}"#, Some(0.3)), (r#"{"lr":0.3}"#, None)]);
    assert_eq!(r.best().map(|j| j.row.id.as_str()), Some("job0"));
    r.objective = Objective::ValidLoss;
    assert_eq!(r.best().map(|j| j.row.id.as_str()), Some("job0"), "every valid loss is 1.0: the first of equals");
    r.sort_by_objective();
    assert_eq!(r.jobs.last().map(|j| j.row.id.as_str()), Some("job2"), "a job without a score sorts last");
    r.sort_by("lr").unwrap();
    assert_eq!(r.jobs[0].row.id, "job0");
    assert!(r.sort_by("nope").is_err());
}

#[test]
fn importance_splits_an_additive_grid_by_its_main_effects() {
    // y = 0.5 + 0.2 s_lr + 0.1 s_m: lr explains 0.04 / 0.05, momentum 0.01 / 0.05.
    let (_, r) = sweep(&[
        (r#"{"lr":1,"momentum":"a"}"#, Some(0.2)),
        (r#"{"lr":1,"momentum":"b"}"#, Some(0.4)),
        (r#"{"lr":2,"momentum":"a"}"#, Some(0.6)),
        (r#"{"lr":2,"momentum":"b"}"#, Some(0.8)),
        (r#"{"lr":3,"momentum":"a"}"#, None), // failed: not a sample
    ]);
    let imp = r.importance();
    assert_eq!(imp.jobs, 4);
    let got: Vec<(&str, f64, usize)> = imp.keys.iter().map(|k| (k.key.as_str(), k.score, k.levels)).collect();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].0, got[0].2), ("lr", 2));
    assert!((got[0].1 - 0.8).abs() < 1e-12, "{got:?}");
    assert_eq!((got[1].0, got[1].2), ("momentum", 2));
    assert!((got[1].1 - 0.2).abs() < 1e-12, "{got:?}");
    assert!(imp.unexplained() < 1e-12);
    assert!((imp.variance - 0.05).abs() < 1e-12);
}

#[test]
fn importance_gives_a_pure_interaction_to_no_single_key() {
    let (_, r) = sweep(&[
        (r#"{"lr":1,"momentum":0.5}"#, Some(0.8)),
        (r#"{"lr":1,"momentum":0.9}"#, Some(0.2)),
        (r#"{"lr":2,"momentum":0.5}"#, Some(0.2)),
        (r#"{"lr":2,"momentum":0.9}"#, Some(0.8)),
    ]);
    let imp = r.importance();
    assert!(imp.keys.iter().all(|k| k.score.abs() < 1e-12), "{:?}", imp.keys);
    assert!((imp.unexplained() - 1.0).abs() < 1e-12);
    // Nothing to explain: one job, or all equal.
    let (_, one) = sweep(&[(r#"{"lr":1}"#, Some(0.5)), (r#"{"lr":2}"#, None)]);
    assert_eq!(one.importance().keys[0].score, 0.0);
    let (_, flat) = sweep(&[(r#"{"lr":1}"#, Some(0.5)), (r#"{"lr":2}"#, Some(0.5))]);
    assert_eq!(flat.importance().keys[0].score, 0.0);
}

#[test]
fn importance_bins_a_key_of_many_values() {
    let configs: Vec<String> = (0..24).map(|i| format!(r#"{{"lr":{i}}}"#)).collect();
    let jobs: Vec<(&str, Option<f64>)> =
        configs.iter().enumerate().map(|(i, c)| (c.as_str(), Some(i as f64 / 100.0))).collect();
    let (_, r) = sweep(&jobs);
    let imp = r.importance();
    assert_eq!(imp.keys[0].levels, crate::MAX_LEVELS);
    // Bins of three consecutive values: 1 − (2/3) / ((24² − 1) / 12) of the variance.
    let expected = 1.0 - (2.0 / 3.0) / ((24.0f64 * 24.0 - 1.0) / 12.0);
    assert!((imp.keys[0].score - expected).abs() < 1e-9, "{}", imp.keys[0].score);
}

#[test]
fn progress_and_best_so_far() {
    let (store, r) = sweep(&[(r#"{"lr":0.001}"#, Some(0.5)), (r#"{"lr":0.1}"#, Some(0.4)), (r#"{"lr":1}"#, Some(0.7))]);
    let p = r.progress();
    assert_eq!((p.epochs_done, p.epochs_total), (3, 3));
    assert_eq!(p.elapsed_seconds, 3.0);
    assert_eq!(p.remaining_seconds, Some(0.0));
    let trials: Vec<(usize, f64)> = r.best_so_far().iter().map(|t| (t.number, t.best_so_far)).collect();
    assert_eq!(trials, [(1, 0.5), (2, 0.5), (3, 0.7)]);
    let watched: Vec<&str> = r.watched(2).iter().map(|j| j.row.id.as_str()).collect();
    assert_eq!(watched, ["job2", "job0"], "the best, then by accuracy");
    let detail = crate::JobDetail::load(&store, "job2").unwrap().unwrap();
    assert_eq!(detail.epochs.len(), 1);
    let kinds: Vec<(&str, i64)> = detail.checkpoints.iter().map(|c| (c.kind.as_str(), c.bytes)).collect();
    assert_eq!(kinds, [("best", 5), ("last", 5)]);
    assert_eq!(detail.sweeps, ["s"]);
    assert!(crate::JobDetail::load(&store, "nope").unwrap().is_none());
}

/// Issue 12: a pruned job is listed after the finished ones and is the best
/// only when no other job has a score.
#[test]
fn pruned_jobs_rank_below_the_finished_and_are_best_only_alone() {
    let mut store = Store::open_in_memory().unwrap();
    let job = |id| NewJob { id, config_json: "{}", batch_size: 16, workers: 2, lr: 0.01, momentum: 0.9, epochs: 3 };
    let sweep = NewSweep { id: "s", name: "s", spec_json: "{}", source: None, source_path: None };
    store.register_sweep(&sweep, &[job("pruned"), job("done"), job("pending")]).unwrap();
    let epoch = |acc| EpochRow {
        epoch: 1,
        train_loss: 1.0,
        train_acc: 0.5,
        valid_loss: 1.0,
        valid_acc: acc,
        lr: 0.01,
        seconds: 1.0,
    };
    store.claim("s", "me", LEASE).unwrap().unwrap();
    store.record_pruned_epoch("pruned", "me", &epoch(0.9), b"x", true, LEASE, Some(0), "behind", false).unwrap();
    let only_pruned = SweepResults::load(&store, store.find_sweep(Some("s")).unwrap(), &[]).unwrap();
    assert_eq!(only_pruned.best().map(|j| j.row.id.as_str()), Some("pruned"));
    store.claim("s", "me", LEASE).unwrap().unwrap();
    store.record_epoch("done", "me", &epoch(0.5), b"x", true, LEASE).unwrap();
    store.finish("done", "me", Finish::Done).unwrap();
    let mut r = SweepResults::load(&store, store.find_sweep(Some("s")).unwrap(), &[]).unwrap();
    assert_eq!(r.best().map(|j| j.row.id.as_str()), Some("done"));
    r.sort_by_objective();
    let order: Vec<&str> = r.jobs.iter().map(|j| j.row.id.as_str()).collect();
    assert_eq!(order, ["done", "pruned", "pending"]);
    let pruned = r.jobs[1].pruned.as_ref().unwrap();
    assert_eq!((pruned.epoch, pruned.rung, pruned.reason.as_str()), (1, Some(0), "behind"));
    assert_eq!(r.jobs[1].status_text(), "pruned (1/3)");
    assert_eq!(r.pruned_count(), 1);
    assert!(r.jobs[0].pruned.is_none() && r.jobs[2].pruned.is_none());
}
