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
