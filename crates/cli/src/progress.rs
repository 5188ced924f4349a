//! Progress on stderr: bars on a terminal (the sweep's jobs, the backbone
//! pass, one bar per running job with its epoch and latest accuracy), plain
//! lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sweep_scheduler::{JobEnd, Observer, TrainKey, TrainParams};
use sweep_worker::{CacheOutcome, EpochReport};

pub struct Progress {
    quiet: bool,
    bars: Option<MultiProgress>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sweep: Option<ProgressBar>,
    features: Option<ProgressBar>,
    jobs: HashMap<String, ProgressBar>,
}

fn describe(params: &TrainParams) -> String {
    [TrainKey::BatchSize, TrainKey::Lr, TrainKey::Momentum, TrainKey::Epochs]
        .iter()
        .map(|k| format!("{}={}", k.name(), params.get(*k)))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let bars = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        Progress { quiet, bars, state: Mutex::new(State::default()) }
    }

    /// A line for people, above the bars.
    pub fn message(&self, msg: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }

    fn line(&self, msg: String) {
        if !self.quiet {
            self.message(&msg);
        }
    }

    pub fn finish(&self) {
        let mut state = self.state.lock().expect("progress lock");
        if let Some(bar) = state.sweep.take() {
            bar.finish_and_clear();
        }
        for (_, bar) in state.jobs.drain() {
            bar.finish_and_clear();
        }
    }

    fn bar(&self, len: u64, template: &str) -> Option<ProgressBar> {
        let bars = self.bars.as_ref()?;
        let bar = bars.add(ProgressBar::new(len));
        bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
        bar.enable_steady_tick(Duration::from_millis(250));
        Some(bar)
    }
}

impl Observer for Progress {
    fn registered(&self, sweep_id: &str, jobs: usize, runnable: usize) {
        self.line(format!("sweep {sweep_id}: {jobs} jobs, {runnable} to run"));
        let bar = self.bar(runnable as u64, "jobs     [{bar:30}] {pos}/{len} elapsed {elapsed} eta {eta}");
        self.state.lock().expect("progress lock").sweep = bar;
    }

    fn features_started(&self, images: usize) {
        let bar = self.bar(images as u64, "features [{bar:30}] {pos}/{len} images {per_sec} eta {eta}");
        if bar.is_none() {
            self.line(format!("features: {images} images"));
        }
        self.state.lock().expect("progress lock").features = bar;
    }

    fn features_progress(&self, done: usize) {
        if let Some(bar) = &self.state.lock().expect("progress lock").features {
            bar.set_position(done as u64);
        }
    }

    fn features_done(&self, outcome: &CacheOutcome) {
        if let Some(bar) = self.state.lock().expect("progress lock").features.take() {
            bar.finish_and_clear();
        }
        self.line(match outcome {
            CacheOutcome::Hit => "features: reused from the cache (no backbone pass)".to_owned(),
            CacheOutcome::Built => "features: computed and cached".to_owned(),
            CacheOutcome::Rebuilt { reason } => format!("features: cache entry was bad ({reason}); recomputed"),
        });
    }

    fn job_started(&self, job_id: &str, params: &TrainParams, from_epoch: usize) {
        let epochs = params.train_config().epochs as u64;
        let from = if from_epoch > 0 { format!(" (resuming after epoch {from_epoch})") } else { String::new() };
        let template = format!("{job_id} [{{bar:20}}] epoch {{pos}}/{{len}} {{msg}}");
        match self.bar(epochs, &template) {
            Some(bar) => {
                bar.set_position(from_epoch as u64);
                bar.set_message(describe(params));
                self.state.lock().expect("progress lock").jobs.insert(job_id.to_owned(), bar);
            }
            None => self.line(format!("job {job_id} started: {}{from}", describe(params))),
        }
    }

    fn epoch(&self, job_id: &str, r: &EpochReport) {
        let state = self.state.lock().expect("progress lock");
        match state.jobs.get(job_id) {
            Some(bar) => {
                bar.set_position(r.epoch as u64);
                bar.set_message(format!(
                    "valid acc {:.4} (train {:.4}, loss {:.4})",
                    r.valid_acc, r.train_acc, r.train_loss
                ));
            }
            None => {
                drop(state);
                self.line(format!(
                    "job {job_id} epoch {}: train loss {:.4} acc {:.4}, valid loss {:.4} acc {:.4}, lr {}, {:.2}s",
                    r.epoch, r.train_loss, r.train_acc, r.valid_loss, r.valid_acc, r.lr, r.seconds
                ));
            }
        }
    }

    fn job_finished(&self, job_id: &str, end: &JobEnd) {
        let mut state = self.state.lock().expect("progress lock");
        if let Some(bar) = state.jobs.remove(job_id) {
            bar.finish_and_clear();
        }
        if let Some(sweep) = &state.sweep {
            sweep.inc(1);
        }
        drop(state);
        self.line(match end {
            JobEnd::Done { best_valid_acc, best_epoch } => {
                format!("job {job_id} done: best valid acc {best_valid_acc:.4} at epoch {best_epoch}")
            }
            JobEnd::Failed(e) => format!("job {job_id} failed: {e}"),
            JobEnd::Interrupted(epoch) => format!("job {job_id} interrupted after epoch {epoch}"),
        });
    }
}
