//! The pruning rules of `[prune]`, pure: given a trial's values so far and
//! the other trials' values at the same epoch (which the run loop reads from
//! the store), whether the trial stops. Nothing here reads or writes.
//!
//! Epochs count from 1; Optuna's steps from 0 (step = epoch − 1).
//!
//! **Median** (Optuna's `MedianPruner`, i.e. `PercentilePruner(50)`, read in
//! `optuna/pruners/_percentile.py`): after epoch `e` of a trial,
//! - no decision while fewer than `startup_trials` trials of the sweep are
//!   done (and never with none done), during the first `warmup_epochs`
//!   epochs (`e − 1 < warmup_epochs`), nor off the interval
//!   (`(e − 1 − warmup_epochs) mod interval ≠ 0`: every epoch is reported, so
//!   Optuna's "first step in the interval" is exactly this);
//! - the trial's best value so far (max for `valid_acc`, min for the losses;
//!   NaN values ignored, all NaN: pruned) is compared with the median
//!   (numpy's linear-interpolation percentile, NaN ignored) of the values at
//!   epoch `e` of the sweep's **done** trials that recorded epoch `e` (not
//!   their best so far: Optuna reads `intermediate_values[step]`); none: no
//!   decision (Optuna's `n_min_trials = 1`);
//! - it stops when its best is strictly worse than that median.
//!
//! Differences from Optuna: a trial is never pruned at its last epoch (it
//! has run every epoch: it is done); the trials compared are those of the
//! same sweep; `startup_trials` counts done trials only (Optuna's COMPLETE),
//! pruned ones are never compared.
//!
//! **ASHA** (asynchronous successive halving as Ray Tune's
//! `AsyncHyperBandScheduler` stops trials, one bracket): rungs at
//! `r_k = min_epochs × eta^k` epochs (k = 0, 1, …) below the trial's own
//! `epochs`. When a trial finishes epoch `r_k`, its value at that epoch is
//! compared with the values at `r_k` of every other trial of the sweep that
//! reached that rung (done, pruned there or later, running or interrupted
//! past it): with none, it continues (it arrived early: as in ASHA, a trial
//! is never stopped for lack of company); else it continues only while its
//! value is at least as good as the `(1 − 1/eta)` quantile of theirs (linear
//! interpolation; for a loss, the `1/eta` quantile), i.e. while it is in the
//! top `1/eta` of the rung. A value that is NaN stops it (Ray's would go on).
//! A stopped trial **waits** at its rung (status `waiting`, its checkpoint
//! kept): before a runner starts a new trial it asks the same rule again for
//! every waiting trial, against every trial that has reached that rung by
//! then, and **promotes** the first that now passes (the highest rung first,
//! then the sweep's order, as ASHA's `get_job` does), which goes on from its
//! checkpoint. When the sweep has nothing left to run, the trials still
//! waiting are pruned, with the rule's last verdict. So at the end every
//! trial in the top `1/eta` of a rung went past it, whenever it arrived
//! (Li et al.'s promotion; Ray's stop mode keeps the first verdict instead).
//!
//! **Hyperband's brackets** (`brackets = B > 1`, asynchronous Hyperband as in
//! Li et al. and Ray's `brackets`): trial `i` of the sweep (expansion order)
//! is in bracket `s = i mod B` (Ray draws the bracket at random, weighted;
//! round-robin keeps a sweep deterministic), runs ASHA with rungs at
//! `min_epochs × eta^(k + s)`, and is compared only with the trials of its
//! bracket: bracket 0 stops early and often, bracket `B − 1` gives its
//! trials the most epochs before the first cut.
//!
//! **Determinism**: a decision reads only what the store holds when the
//! epoch ends. With one job slot (the default for a sweep with `[prune]`,
//! or `--parallel 1`) trials run one after the other in expansion order, so
//! every decision, and the sweep's result, is the same on every run,
//! resumed or not (a resumed run finishes its interrupted trials before it
//! promotes any, as the uninterrupted run did). With parallel runners a decision depends on
//! which other trials have reached that epoch by then (as in Optuna and Ray
//! with parallel workers); each decision is still made once and recorded.

use crate::spec::{Objective, Prune};

/// What a decision reads, after epoch `epoch` of a trial.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The trial's values of the objective's metric, epochs 1..=epoch.
    pub own: &'a [f64],
    /// The other trials' values at `epoch`, each with whether it is done.
    pub others: &'a [(bool, f64)],
    /// How many trials of the sweep are done.
    pub done: usize,
}

/// A decision to stop a trial.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    /// ASHA's rung (0 is the first), `None` for the median rule.
    pub rung: Option<u64>,
    /// Why, with the numbers compared.
    pub reason: String,
}

impl Prune {
    /// Whether the rule may decide after epoch `epoch` of a trial of `epochs`
    /// epochs; only then is the store read.
    pub fn decides_at(&self, epoch: u64, epochs: u64) -> bool {
        if epoch == 0 || epoch >= epochs {
            return false;
        }
        match *self {
            Prune::Median { warmup_epochs, interval, .. } => {
                let step = epoch - 1;
                step >= warmup_epochs && (step - warmup_epochs).is_multiple_of(interval.max(1))
            }
            Prune::Asha { .. } => self.rung_at(epoch).is_some(),
        }
    }

    /// Hyperband's bracket `s` of ASHA: the rule whose rungs are at
    /// `min_epochs × eta^(k + s)`, i.e. ASHA with `min_epochs × eta^s`
    /// (saturating: a bracket past every epoch never decides); the median
    /// rule as it is.
    pub fn in_bracket(&self, s: u64) -> Prune {
        match *self {
            Prune::Asha { min_epochs, eta, brackets } => {
                let factor = u32::try_from(s).ok().and_then(|s| eta.checked_pow(s)).unwrap_or(u64::MAX);
                Prune::Asha { min_epochs: min_epochs.saturating_mul(factor), eta, brackets }
            }
            median => median,
        }
    }

    /// How many brackets the trials are spread over (1 but for Hyperband's).
    pub fn brackets(&self) -> u64 {
        match *self {
            Prune::Asha { brackets, .. } => brackets.max(1),
            Prune::Median { .. } => 1,
        }
    }

    /// ASHA's rung `k` when `epoch = min_epochs × eta^k`.
    fn rung_at(&self, epoch: u64) -> Option<u64> {
        let Prune::Asha { min_epochs, eta, .. } = *self else { return None };
        let (mut r, mut k) = (min_epochs.max(1), 0);
        while r < epoch {
            r = r.checked_mul(eta.max(2))?;
            k += 1;
        }
        (r == epoch).then_some(k)
    }

    /// The decision after epoch `epoch` (of `epochs`) for a trial of a sweep
    /// ranked by `objective`: `Some` to stop it there.
    pub fn decide(&self, objective: Objective, epoch: u64, epochs: u64, ev: &Evidence<'_>) -> Option<Stop> {
        if !self.decides_at(epoch, epochs) {
            return None;
        }
        let max = objective == Objective::ValidAcc;
        let metric = objective.name();
        match *self {
            Prune::Median { startup_trials, .. } => {
                if ev.done == 0 || (ev.done as u64) < startup_trials {
                    return None;
                }
                let own: Vec<f64> = ev.own.iter().copied().filter(|x| !x.is_nan()).collect();
                if own.is_empty() {
                    return Some(Stop { rung: None, reason: format!("epoch {epoch}: its {metric} is not a number") });
                }
                let best = own.iter().copied().fold(if max { f64::NEG_INFINITY } else { f64::INFINITY }, |a, b| {
                    if max {
                        a.max(b)
                    } else {
                        a.min(b)
                    }
                });
                let done: Vec<f64> = ev.others.iter().filter(|(d, _)| *d).map(|(_, x)| *x).collect();
                let median = percentile(&done, 50.0)?;
                let worse = if max { best < median } else { best > median };
                worse.then(|| Stop {
                    rung: None,
                    reason: format!(
                        "epoch {epoch}: best {metric} so far {best:.6} is {} the median {median:.6} of {} done \
                         trials at epoch {epoch}",
                        if max { "below" } else { "above" },
                        done.iter().filter(|x| !x.is_nan()).count()
                    ),
                })
            }
            Prune::Asha { eta, .. } => {
                let rung = self.rung_at(epoch)?;
                let value = *ev.own.last()?;
                if value.is_nan() {
                    return Some(Stop {
                        rung: Some(rung),
                        reason: format!("rung {rung} (epoch {epoch}): its {metric} is not a number"),
                    });
                }
                let theirs: Vec<f64> = ev.others.iter().map(|(_, x)| *x).collect();
                let q = if max { 100.0 * (1.0 - 1.0 / eta as f64) } else { 100.0 / eta as f64 };
                let cutoff = percentile(&theirs, q)?;
                let behind = if max { value < cutoff } else { value > cutoff };
                behind.then(|| Stop {
                    rung: Some(rung),
                    reason: format!(
                        "rung {rung} (epoch {epoch}): {metric} {value:.6} is {} {cutoff:.6}, the cutoff of the top \
                         1/{eta} of the {} other trials at that rung",
                        if max { "below" } else { "above" },
                        theirs.iter().filter(|x| !x.is_nan()).count()
                    ),
                })
            }
        }
    }
}

/// numpy's `nanpercentile(values, q)` (linear interpolation), `None` when no
/// value is a number. A rank within 1e-9 of a whole number is that number:
/// ASHA's `q = 100 × (1 − 1/3)` is not exact in binary, and its rank over 10
/// values (6.000000000000001) would otherwise put the cutoff a hair above the
/// 7th value, so that a trial equal to it ("at least as good") stopped.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = q.clamp(0.0, 100.0) / 100.0 * (v.len() - 1) as f64;
    let rank = if (rank - rank.round()).abs() < 1e-9 { rank.round() } else { rank };
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEDIAN: Prune = Prune::Median { startup_trials: 2, warmup_epochs: 1, interval: 2 };
    const ASHA: Prune = Prune::Asha { min_epochs: 1, eta: 3, brackets: 1 };

    fn done(values: &[f64]) -> Vec<(bool, f64)> {
        values.iter().map(|x| (true, *x)).collect()
    }

    #[test]
    fn percentile_is_numpys_linear_one() {
        // np.percentile([1, 2, 3, 4], 50) == 2.5; ([1, 2, 3, 4], 66.666…) == 3.0
        assert_eq!(percentile(&[4.0, 1.0, 3.0, 2.0], 50.0), Some(2.5));
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0], 200.0 / 3.0).unwrap() - 3.0).abs() < 1e-12);
        assert_eq!(percentile(&[1.0, f64::NAN, 3.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[7.0], 90.0), Some(7.0));
        // ASHA's cutoff for eta = 3 over 10 values is the 7th exactly.
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 100.0 * (1.0 - 1.0 / 3.0)), Some(7.0));
        assert_eq!(percentile(&[f64::NAN], 50.0), None);
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn median_decides_after_the_warmup_on_the_interval_never_at_the_last_epoch() {
        // warmup 1, interval 2: epochs 2, 4, 6 … (steps 1, 3, 5), not the last.
        let at: Vec<u64> = (1..=8).filter(|e| MEDIAN.decides_at(*e, 8)).collect();
        assert_eq!(at, [2, 4, 6]);
        let every = Prune::Median { startup_trials: 0, warmup_epochs: 0, interval: 1 };
        assert_eq!((1..=4).filter(|e| every.decides_at(*e, 4)).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn median_compares_the_best_so_far_with_the_done_trials_at_that_epoch() {
        let others = done(&[0.5, 0.7, 0.9]);
        let ev = |own: &'static [f64], done| Evidence { own, others: &others, done };
        // Best so far 0.6 < median 0.7: stopped, saying why.
        let stop = MEDIAN.decide(Objective::ValidAcc, 2, 8, &ev(&[0.6, 0.2], 3)).unwrap();
        assert_eq!(stop.rung, None);
        assert!(stop.reason.contains("0.600000 is below the median 0.700000 of 3 done trials at epoch 2"), "{stop:?}");
        // Equal to the median: goes on (strictly worse only).
        assert_eq!(MEDIAN.decide(Objective::ValidAcc, 2, 8, &ev(&[0.7, 0.1], 3)), None);
        // Too few done trials, in the warm-up, off the interval: no decision.
        assert_eq!(MEDIAN.decide(Objective::ValidAcc, 2, 8, &ev(&[0.1, 0.1], 1)), None);
        assert_eq!(MEDIAN.decide(Objective::ValidAcc, 1, 8, &ev(&[0.1], 3)), None);
        assert_eq!(MEDIAN.decide(Objective::ValidAcc, 3, 8, &ev(&[0.1, 0.1, 0.1], 3)), None);
        // Running or pruned trials are not compared: none done at the epoch, no decision.
        let running = [(false, 0.9), (false, 0.8)];
        let ev2 = Evidence { own: &[0.1, 0.1], others: &running, done: 5 };
        assert_eq!(MEDIAN.decide(Objective::ValidAcc, 2, 8, &ev2), None);
        // A loss: lower is better, the best is the minimum so far.
        let losses = done(&[1.0, 2.0, 3.0]);
        let ev3 = |own: &'static [f64]| Evidence { own, others: &losses, done: 3 };
        assert_eq!(MEDIAN.decide(Objective::ValidLoss, 2, 8, &ev3(&[1.5, 2.5])), None);
        assert!(MEDIAN.decide(Objective::ValidLoss, 2, 8, &ev3(&[2.5, 2.1])).is_some());
        // All NaN: stopped.
        let nan = MEDIAN.decide(Objective::ValidAcc, 2, 8, &ev(&[f64::NAN, f64::NAN], 3)).unwrap();
        assert!(nan.reason.contains("not a number"), "{nan:?}");
    }

    #[test]
    fn asha_rungs_are_min_epochs_times_powers_of_eta_below_the_last_epoch() {
        let at: Vec<u64> = (1..=30).filter(|e| ASHA.decides_at(*e, 27)).collect();
        assert_eq!(at, [1, 3, 9]);
        let two = Prune::Asha { min_epochs: 2, eta: 2, brackets: 3 };
        assert_eq!((1..=20).filter(|e| two.decides_at(*e, 20)).collect::<Vec<_>>(), [2, 4, 8, 16]);
        assert_eq!(two.rung_at(8), Some(2));
        // Hyperband's brackets: bracket s starts at min_epochs × eta^s.
        assert_eq!(two.brackets(), 3);
        assert_eq!((1..=20).filter(|e| two.in_bracket(1).decides_at(*e, 20)).collect::<Vec<_>>(), [4, 8, 16]);
        assert_eq!((1..=20).filter(|e| two.in_bracket(2).decides_at(*e, 20)).collect::<Vec<_>>(), [8, 16]);
        assert!((1..=20).all(|e| !two.in_bracket(70).decides_at(e, 20)));
        assert_eq!(MEDIAN.in_bracket(2), MEDIAN);
    }

    #[test]
    fn asha_keeps_the_top_third_of_a_rung_and_lets_early_arrivals_go_on() {
        let rung = |own: &'static [f64], others: &[f64]| {
            let others: Vec<(bool, f64)> = others.iter().map(|x| (false, *x)).collect();
            ASHA.decide(Objective::ValidAcc, own.len() as u64, 27, &Evidence { own, others: &others, done: 0 })
        };
        // The first to arrive goes on, whatever its value.
        assert_eq!(rung(&[0.01], &[]), None);
        // Against one other: at least as good as it.
        assert_eq!(rung(&[0.5], &[0.5]), None);
        assert!(rung(&[0.4], &[0.5]).is_some());
        // Against [0.1, 0.2, 0.3, 0.4]: the 66.7% quantile is 0.3.
        assert_eq!(rung(&[0.9, 0.9, 0.3], &[0.1, 0.2, 0.3, 0.4]), None);
        let stop = rung(&[0.9, 0.9, 0.29], &[0.1, 0.2, 0.3, 0.4]).unwrap();
        assert_eq!(stop.rung, Some(1));
        assert!(stop.reason.starts_with("rung 1 (epoch 3): valid_acc 0.290000 is below 0.300000"), "{stop:?}");
        // Its value at the rung counts, not its best so far.
        assert!(rung(&[0.9, 0.9, 0.1], &[0.1, 0.2, 0.3, 0.4]).is_some());
        // A loss: the 1/3 quantile, lower is better.
        let others: Vec<(bool, f64)> = [1.0, 2.0, 3.0, 4.0].iter().map(|x| (true, *x)).collect();
        let ev = |own: &'static [f64]| Evidence { own, others: &others, done: 4 };
        assert_eq!(ASHA.decide(Objective::ValidLoss, 1, 27, &ev(&[2.0])), None);
        assert!(ASHA.decide(Objective::ValidLoss, 1, 27, &ev(&[2.01])).is_some());
        // Off a rung: nothing.
        assert_eq!(ASHA.decide(Objective::ValidLoss, 2, 27, &ev(&[9.0, 9.0])), None);
    }
}
