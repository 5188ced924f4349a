//! Progress on stderr: bars on a terminal (the sweep's jobs and epochs with an
//! ETA, the backbone pass, one bar per running job with its epoch and latest
//! accuracy), plain lines otherwise. Log lines pass above the bars.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sweep_scheduler::{JobEnd, Observer, TrainKey, TrainParams};
use sweep_worker::{CacheOutcome, EpochReport};

use crate::output::{printable, printable_lines};

/// The bars on screen, if any: log lines are printed above them.
static ACTIVE_BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

pub struct Progress {
    quiet: bool,
    bars: Option<MultiProgress>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sweep_id: Option<String>,
    /// Counts the epochs of this run (its ETA), with the jobs in its message.
    sweep: Option<ProgressBar>,
    jobs_total: usize,
    jobs_ended: usize,
    features: Option<ProgressBar>,
    /// Off a terminal: the backbone pass's progress, printed as a line every
    /// `interval`.
    features_lines: Option<Lines>,
    jobs: HashMap<String, JobBar>,
}

/// Progress lines for logs (Slurm, CI, `2> file`), where bars cannot draw.
struct Lines {
    total: usize,
    started: Instant,
    last: Instant,
}

/// How often a progress line is printed off a terminal:
/// `SWEEP_PROGRESS_SECONDS`, 10 s by default.
fn line_interval() -> Duration {
    std::env::var("SWEEP_PROGRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(10), Duration::from_secs_f64)
}

/// `1h 02m 03s`, `4m 05s`, `6s`.
fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m {sec:02}s"),
        (h, min, sec) => format!("{h}h {min:02}m {sec:02}s"),
    }
}

struct JobBar {
    bar: ProgressBar,
    params: String,
}

fn describe(params: &TrainParams) -> String {
    describe_keys(params, &[TrainKey::BatchSize, TrainKey::Lr, TrainKey::Momentum, TrainKey::Epochs])
}

fn describe_keys(params: &TrainParams, keys: &[TrainKey]) -> String {
    keys.iter().map(|k| format!("{}={}", k.name(), params.get(*k))).collect::<Vec<_>>().join(" ")
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let bars = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        *ACTIVE_BARS.lock().unwrap_or_else(|e| e.into_inner()) = bars.clone();
        Progress { quiet, bars, state: Mutex::new(State::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sweep being run, once registered.
    pub fn sweep_id(&self) -> Option<String> {
        self.state().sweep_id.clone()
    }

    /// A line for people, above the bars; control characters of the names
    /// and errors in it escaped ([`printable_lines`]).
    pub fn message(&self, msg: &str) {
        let msg = printable_lines(msg);
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

    /// Clears every bar (the final table follows).
    pub fn finish(&self) {
        let mut state = self.state();
        for bar in [state.sweep.take(), state.features.take()].into_iter().flatten() {
            bar.finish_and_clear();
        }
        for (_, job) in state.jobs.drain() {
            job.bar.finish_and_clear();
        }
        *ACTIVE_BARS.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn bar(&self, len: u64, template: &str) -> Option<ProgressBar> {
        let bars = self.bars.as_ref()?;
        let bar = bars.add(ProgressBar::new(len));
        bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
        bar.enable_steady_tick(Duration::from_millis(250));
        Some(bar)
    }

    fn update_jobs(state: &State) {
        if let Some(sweep) = &state.sweep {
            sweep.set_message(format!("{}/{} jobs", state.jobs_ended, state.jobs_total));
        }
    }
}

impl Observer for Progress {
    fn registered(&self, sweep_id: &str, jobs: usize, runnable: usize, epochs_left: usize) {
        self.line(format!("sweep {sweep_id}: {jobs} jobs, {runnable} to run ({epochs_left} epochs)"));
        let mut state = self.state();
        state.sweep_id = Some(sweep_id.to_owned());
        state.jobs_total = runnable;
        if runnable > 0 {
            state.sweep = self.bar(
                epochs_left as u64,
                "sweep            [{bar:30}] {msg}, epoch {pos}/{len}, elapsed {elapsed}, eta {eta} ",
            );
            Progress::update_jobs(&state);
        }
    }

    fn data_changed(&self, old_id: &str, new_id: &str, changes: &str) {
        self.line(format!(
            "the data changed since sweep {old_id} ran: {}; training it as sweep {new_id} \
             (`sweep table {old_id}` still shows the old results)",
            crate::output::printable(changes)
        ));
    }

    fn parallel_capped(&self, requested: usize, used: usize, cores: usize, runnable: usize) {
        let cores = if cores == 1 { "1 core".to_owned() } else { format!("{cores} cores") };
        let jobs = if runnable == 1 { "1 job".to_owned() } else { format!("{runnable} jobs") };
        self.line(format!("--parallel {requested}: using {used} ({cores}, {jobs} to run)"));
    }

    fn setup(&self, line: &str) {
        self.line(line.to_owned());
    }

    fn features_started(&self, images: usize) {
        let bar =
            self.bar(images as u64, "features         [{bar:30}] {pos}/{len} images, elapsed {elapsed}, eta {eta}");
        let mut lines = None;
        if bar.is_none() {
            self.line(format!("features: {images} images"));
            let now = Instant::now();
            lines = Some(Lines { total: images, started: now, last: now });
        }
        let mut state = self.state();
        state.features = bar;
        state.features_lines = lines;
    }

    fn features_progress(&self, done: usize) {
        let mut state = self.state();
        if let Some(bar) = &state.features {
            bar.set_position(done as u64);
        }
        let Some(lines) = &mut state.features_lines else { return };
        let now = Instant::now();
        if self.quiet || now.duration_since(lines.last) < line_interval() || done == 0 {
            return;
        }
        lines.last = now;
        let elapsed = now.duration_since(lines.started).as_secs_f64();
        let rate = done as f64 / elapsed.max(1e-9);
        let left = lines.total.saturating_sub(done) as f64 / rate.max(1e-9);
        let msg = format!(
            "features: {done}/{} images, {rate:.1} images/s, elapsed {}, eta {}",
            lines.total,
            duration(Duration::from_secs_f64(elapsed)),
            duration(Duration::from_secs_f64(left.min(1e9)))
        );
        drop(state);
        self.message(&msg);
    }

    fn features_done(&self, outcome: &CacheOutcome) {
        let mut state = self.state();
        if let Some(bar) = state.features.take() {
            bar.finish_and_clear();
        }
        state.features_lines = None;
        // The sweep's ETA counts training only.
        if let Some(sweep) = &state.sweep {
            sweep.reset_eta();
        }
        drop(state);
        self.line(match outcome {
            CacheOutcome::Hit => "features: reused from the cache (no backbone pass)".to_owned(),
            CacheOutcome::Built => "features: computed and cached".to_owned(),
            CacheOutcome::Rebuilt { reason } => format!("features: cache entry was bad ({reason}); recomputed"),
        });
    }

    fn job_started(&self, job_id: &str, params: &TrainParams, from_epoch: usize) {
        let epochs = params.train_config().epochs as u64;
        let from = if from_epoch > 0 { format!(" (resuming after epoch {from_epoch})") } else { String::new() };
        // `wide_msg` is cut to the terminal's width: a wrapped line would break
        // the redraw. The id is the prefix, not part of the template: a brace
        // in it cannot break the template.
        let template = "{prefix} [{bar:30}] epoch {pos:>3}/{len} {wide_msg}";
        match self.bar(epochs, template) {
            Some(bar) => {
                bar.set_prefix(printable(job_id).into_owned());
                let params = describe_keys(params, &[TrainKey::BatchSize, TrainKey::Lr, TrainKey::Momentum]);
                bar.set_position(from_epoch as u64);
                bar.set_message(format!("{params}{from}"));
                self.state().jobs.insert(job_id.to_owned(), JobBar { bar, params });
            }
            None => self.line(format!("job {job_id} started: {}{from}", describe(params))),
        }
    }

    fn epoch(&self, job_id: &str, r: &EpochReport) {
        let state = self.state();
        if let Some(sweep) = &state.sweep {
            sweep.inc(1);
        }
        match state.jobs.get(job_id) {
            Some(job) => {
                job.bar.set_position(r.epoch as u64);
                job.bar.set_message(format!(
                    "{}: valid acc {:.4} (train acc {:.4}, loss {:.4})",
                    job.params, r.valid_acc, r.train_acc, r.train_loss
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
        let mut state = self.state();
        if let Some(job) = state.jobs.remove(job_id) {
            // A failed or pruned job's remaining epochs will not run: the ETA drops them.
            if let (Some(sweep), JobEnd::Failed(_) | JobEnd::Pruned { .. }) = (&state.sweep, end) {
                sweep.inc(job.bar.length().unwrap_or(0).saturating_sub(job.bar.position()));
            }
            job.bar.finish_and_clear();
        }
        if !matches!(end, JobEnd::Interrupted(_)) {
            state.jobs_ended += 1;
        }
        Progress::update_jobs(&state);
        drop(state);
        self.line(match end {
            JobEnd::Done { best_valid_acc, best_epoch } => {
                format!("job {job_id} done: best valid acc {best_valid_acc:.4} at epoch {best_epoch}")
            }
            JobEnd::Failed(e) => format!("job {job_id} failed: {e}"),
            JobEnd::Interrupted(epoch) => format!("job {job_id} interrupted after epoch {epoch}"),
            JobEnd::Pruned { epoch: 0, reason, .. } => format!("job {job_id} pruned: {reason}"),
            JobEnd::Pruned { epoch, reason, waiting: false } => {
                format!("job {job_id} pruned after epoch {epoch}: {reason}")
            }
            JobEnd::Pruned { epoch, reason, waiting: true } => {
                format!("job {job_id} waits at its rung after epoch {epoch} (promoted if later trials rank it higher): {reason}")
            }
            JobEnd::PrefixOf { longer, best_valid_acc, best_epoch } => format!(
                "job {job_id} done: best valid acc {best_valid_acc:.4} at epoch {best_epoch} (the first epochs of \
                 job {longer}, the same settings but more epochs, trained once)"
            ),
            JobEnd::SameAs(trained) => {
                format!("job {job_id} takes the result of job {trained}: the same settings but for speed, trained once")
            }
        });
    }
}

/// Where tracing writes: stderr, above the bars when they are shown.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bars = ACTIVE_BARS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bars {
            Some(bars) => bars.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}
