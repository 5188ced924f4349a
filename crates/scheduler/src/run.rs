//! Running a sweep: register it, compute (or load) the features once, then
//! train its jobs `parallel` at a time, each claimed from the store under a
//! lease, every epoch recorded as it finishes. Ctrl-C (the cancellation token)
//! stops jobs at their last recorded epoch and marks them interrupted.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sweep_store::{EpochRecord, Finish, Location, NewJob, NewSweep, Store};
use sweep_worker::{
    CacheOutcome, DataManifest, EpochReport, EpochSink, FeatureCache, Features, SinkError, Split, TrainOutcome,
    TrainState,
};
use tokio_util::sync::CancellationToken;

use crate::spec::{Format, SpecErrors, SweepSpec, TooManyJobs, TrainParams};

/// Everything that can stop a sweep as a whole (a job's own failure only
/// fails that job).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sweep file is invalid.
    #[error("{0}")]
    Spec(#[from] SpecErrors),
    /// The sweep expands to too many jobs.
    #[error("{0}")]
    TooManyJobs(#[from] TooManyJobs),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] sweep_store::Error),
    /// The data, the weights or the backbone pass failed.
    #[error("{0}")]
    Worker(#[from] sweep_worker::Error),
    /// The disk holding the database is full: the sweep stopped, every
    /// recorded epoch is kept, and the jobs that were running are interrupted.
    #[error(
        "{}: the disk is full: every recorded epoch is kept and the running jobs are interrupted; free at least \
         {needed_mib} MiB ({epochs_left} epochs left to record) and continue with `sweep resume {sweep_id}`",
        path
    )]
    DiskFull {
        /// The database.
        path: Location,
        /// The sweep that stopped.
        sweep_id: String,
        /// Epochs its unfinished jobs have left.
        epochs_left: u64,
        /// A rough bound on the room they need, in MiB.
        needed_mib: u64,
    },
    /// A job asked to restart cannot be.
    #[error("cannot restart job {job}: {reason}")]
    Restart {
        /// The job as given.
        job: String,
        /// Why.
        reason: String,
    },
    /// A recorded split cannot be made again.
    #[error("{0}")]
    Split(String),
    /// `sweep resume` on data that changed since the sweep ran.
    #[error(
        "sweep {sweep_id}: the data changed since it ran ({changes}): its jobs cannot continue on other data; \
         `sweep run {file}` trains the changed data as a new sweep, and this one's results stay readable"
    )]
    DataChanged {
        /// The sweep being resumed.
        sweep_id: String,
        /// Its file.
        file: String,
        /// What changed.
        changes: String,
    },
    /// The sanity check found the images far from what the weights were
    /// trained on: nothing was registered.
    #[error(
        "{weights}: the sanity check failed: {cause}; {evidence}. Fix [model], or train anyway with \
         `--no-sanity-check` (or `sanity_check = false` in [model])"
    )]
    Sanity {
        /// The weights file.
        weights: String,
        /// The likely cause, and what to change.
        cause: String,
        /// What the verdict rests on: the images looked at, the divergences.
        evidence: String,
    },
    /// A sweep recorded without its file cannot be resumed.
    #[error("sweep {0} was recorded without its sweep file: run the file again with `sweep run FILE`")]
    NoSource(String),
    /// A background task died.
    #[error("internal: {0}")]
    Join(String),
}

/// How to run a sweep.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The database: an SQLite file or a PostgreSQL URL.
    pub db: Location,
    /// Where features are cached.
    pub cache_dir: PathBuf,
    /// Jobs trained at once; `None`: see [`default_slots`].
    pub parallel: Option<usize>,
    /// Devices (`cpu`, `cuda:N`), handed to job slots in turn.
    pub devices: Vec<String>,
    /// The most jobs a sweep may expand to.
    pub max_jobs: u64,
    /// Make failed jobs runnable again first.
    pub retry_failed: bool,
    /// Jobs (ids or unique prefixes) to start again from epoch 0, their
    /// recorded epochs and checkpoints deleted first.
    pub restart: Vec<String>,
    /// How long a claim lasts without renewal.
    pub lease: Duration,
    /// Images per backbone batch.
    pub backbone_batch: usize,
    /// Register the sweep and stop (`sweep submit`): nothing is computed or trained.
    pub register_only: bool,
    /// When nothing is claimable but other runners hold jobs of the sweep,
    /// wait for them (`sweep run`, `sweep resume`: a run ends when its sweep
    /// does), or return (`sweep worker`, which looks for other work).
    pub wait_for_others: bool,
    /// The jobs this process may still claim, shared by its slots (`sweep
    /// worker --max-jobs`); `None`: no limit.
    pub claims_left: Option<Arc<AtomicUsize>>,
    /// A backbone pass over more images than this is split into shards that
    /// every runner of the sweep claims (`pass.rs`).
    pub shard_images: usize,
    /// Run the sanity check before the backbone pass (unless the sweep file
    /// sets `sanity_check = false`).
    pub sanity_check: bool,
    /// Train the heads of jobs that see the same mini-batches as one group
    /// ([`sweep_worker::train_fused`]); `None`: on a GPU, not on a CPU (where
    /// a head alone on one core is faster).
    pub fuse: Option<bool>,
}

impl RunOptions {
    /// Defaults for a database: the cache beside its file (in the current
    /// folder for PostgreSQL), one job at a time, CPU.
    pub fn new(db: impl Into<Location>) -> RunOptions {
        let db = db.into();
        let cache_dir = db
            .as_path()
            .and_then(Path::parent)
            .map(|p| p.join("sweep-cache"))
            .unwrap_or_else(|| PathBuf::from("sweep-cache"));
        RunOptions {
            db,
            cache_dir,
            parallel: None,
            devices: vec!["cpu".to_owned()],
            max_jobs: crate::spec::DEFAULT_MAX_JOBS,
            retry_failed: false,
            restart: Vec::new(),
            lease: Duration::from_secs(60),
            backbone_batch: 32,
            register_only: false,
            wait_for_others: true,
            claims_left: None,
            shard_images: DEFAULT_SHARD_IMAGES,
            sanity_check: true,
            fuse: None,
        }
    }

    /// Takes one claim from [`RunOptions::claims_left`]; false when none is left.
    fn take_claim(&self) -> bool {
        self.claims_left
            .as_ref()
            .is_none_or(|left| left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok())
    }

    /// Gives back a claim taken for a job that was not there.
    fn give_back_claim(&self) {
        if let Some(left) = &self.claims_left {
            left.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Images a feature shard holds by default: about a minute and a half of
/// ResNet-50 on two CPU cores, a few seconds on a GPU.
pub const DEFAULT_SHARD_IMAGES: usize = 1024;

/// How one job's run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEnd {
    /// Every epoch done.
    Done {
        /// Best validation accuracy.
        best_valid_acc: f64,
        /// Its epoch.
        best_epoch: usize,
    },
    /// Failed with this error.
    Failed(String),
    /// Stopped by the user after this many epochs.
    Interrupted(usize),
    /// Not trained: it differs from this job only in speed-only keys, and
    /// takes its result (status, best, epochs).
    SameAs(String),
    /// Not trained: its settings equal this job's but for fewer epochs, and
    /// it takes that job's first epochs, its best among them and its head.
    PrefixOf {
        /// The longer job.
        longer: String,
        /// Best validation accuracy.
        best_valid_acc: f64,
        /// Its epoch.
        best_epoch: usize,
    },
    /// Stopped by the sweep's pruner after this epoch (recorded with it).
    Pruned {
        /// The last epoch it ran (0: not known here).
        epoch: usize,
        /// Why.
        reason: String,
        /// Stopped at an ASHA rung, where it waits to be promoted (or
        /// pruned once the sweep has nothing left to run).
        waiting: bool,
    },
}

/// Progress reports for the CLI; every method defaults to doing nothing.
pub trait Observer: Send + Sync {
    /// The sweep is registered: `jobs` in all, `runnable` of them not finished,
    /// with `epochs_left` epochs to train between them.
    fn registered(&self, _sweep_id: &str, _jobs: usize, _runnable: usize, _epochs_left: usize) {}
    /// The data changed since sweep `old_id` last ran: its jobs stay as they
    /// were, and this run is the new sweep `new_id`, with new jobs.
    fn data_changed(&self, _old_id: &str, _new_id: &str, _changes: &str) {}
    /// The backbone pass starts over `images` images (or the cache is checked).
    fn features_started(&self, _images: usize) {}
    /// Images done in the backbone pass.
    fn features_progress(&self, _done: usize) {}
    /// Features are ready.
    fn features_done(&self, _outcome: &CacheOutcome) {}
    /// A job was claimed; `from_epoch` epochs were already recorded.
    fn job_started(&self, _job_id: &str, _params: &TrainParams, _from_epoch: usize) {}
    /// A job finished an epoch.
    fn epoch(&self, _job_id: &str, _report: &EpochReport) {}
    /// A job stopped.
    fn job_finished(&self, _job_id: &str, _end: &JobEnd) {}
    /// `--parallel` asked for more job slots than there are jobs to run or
    /// cores to run them on: `used` slots run instead of `requested`.
    fn parallel_capped(&self, _requested: usize, _used: usize, _cores: usize, _runnable: usize) {}
    /// A line on what the run uses, before it uses it: the backbone and the
    /// normalisation in force (and which came from the weights file), the split.
    fn setup(&self, _line: &str) {}
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The sweep's id.
    pub sweep_id: String,
    /// Whether the backbone pass was skipped thanks to the cache (None: no job needed features).
    pub features_reused: Option<bool>,
    /// Jobs this run finished.
    pub done: usize,
    /// Jobs this run failed.
    pub failed: usize,
    /// Jobs this run interrupted.
    pub interrupted: usize,
    /// Jobs this run's pruner stopped.
    pub pruned: usize,
    /// Whether the run was cancelled.
    pub cancelled: bool,
}

/// This process's lease owner name: `host:pid:nonce`, the same for every run
/// in the process (a pid alone could be an earlier process's).
pub fn lease_owner() -> String {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER.get_or_init(new_lease_owner).clone()
}

fn new_lease_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    let nonce =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{host}:{}:{nonce:08x}", std::process::id())
}

/// The sanity check ([`sweep_worker::sanity_check`]) of the model in force
/// on the data set: the backbone loaded on the device for it, handed back for
/// the pass (`None` for random weights, which are untrained by construction
/// and not checked). A failure is [`Error::Sanity`].
fn sanity_check(
    dataset: &sweep_worker::Dataset,
    model: &sweep_worker::ModelConfig,
    device_name: &str,
    observer: &dyn Observer,
) -> Result<Option<(sweep_worker::Device, sweep_worker::Backbone)>, Error> {
    if matches!(model.weights, sweep_worker::Weights::Random { .. }) {
        tracing::info!("sanity check skipped: random weights are untrained");
        return Ok(None);
    }
    let device = sweep_worker::device(device_name)?;
    let backbone = sweep_worker::Backbone::load(model, &device)?;
    let weights = match &model.weights {
        sweep_worker::Weights::Safetensors(path) | sweep_worker::Weights::Pth(path) => path.display().to_string(),
        sweep_worker::Weights::Hub { repo } => format!("hub:{repo}"),
        sweep_worker::Weights::Random { seed } => format!("random:{seed}"),
    };
    match sweep_worker::sanity_check(dataset, model, &backbone, &device)? {
        sweep_worker::Sanity::Skipped(why) => observer.setup(&format!("sanity check skipped: {why}")),
        sweep_worker::Sanity::Passed(report) => {
            tracing::info!(
                images = report.images,
                divergence = report.worst.1,
                layer = %report.worst.0,
                stem = report.stem,
                swapped_stem = report.swapped_stem,
                variant_share = report.layer2.map(|v| v.share),
                variant_set = report.layer2.map(|v| v.set),
                variant_other = report.layer2.map(|v| v.other),
                "sanity check passed"
            );
        }
        sweep_worker::Sanity::Failed(report) => {
            return Err(Error::Sanity { weights, cause: report.cause(model), evidence: report.evidence(model) })
        }
    }
    Ok(Some((device, backbone)))
}

/// Whether a lease owner is a process on this host that no longer exists:
/// its pid is gone, or is this process's own under another name (an earlier
/// run that had the same pid, as after a container restart).
pub(crate) fn owner_is_dead(owner: &str, me: &str) -> bool {
    let mut mine = me.split(':');
    let mut theirs = owner.split(':');
    let (Some(my_host), Some(my_pid), Some(host), Some(pid)) = (mine.next(), mine.next(), theirs.next(), theirs.next())
    else {
        return false;
    };
    if host != my_host || owner == me || !Path::new("/proc/self").exists() {
        return false;
    }
    pid == my_pid || !Path::new(&format!("/proc/{pid}")).exists()
}

/// Submits a sweep file and runs its unfinished jobs.
pub async fn run(
    spec: SweepSpec,
    source: Option<(String, PathBuf)>,
    opts: RunOptions,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
) -> Result<RunSummary, Error> {
    run_sweep(spec, source, opts, observer, cancel, None).await
}

/// [`run`], or with `resuming`, [`resume`] of that recorded sweep.
async fn run_sweep(
    spec: SweepSpec,
    source: Option<(String, PathBuf)>,
    opts: RunOptions,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
    resuming: Option<(&str, &Path)>,
) -> Result<RunSummary, Error> {
    let mut jobs = spec.jobs(opts.max_jobs)?;
    // A device name this binary cannot run on, or a bad forced device
    // memory (tests and benchmarks of the out-of-memory path).
    for name in &opts.devices {
        sweep_worker::check_device(name)?;
    }
    sweep_worker::forced_device_memory()?;
    // What fails at once is found before anything is registered, so a
    // missing data folder, a bad labels file, a broken image or a weights
    // file that does not fit leaves no sweep with pending jobs behind.
    let workers = jobs.iter().map(|j| j.params.workers()).max().unwrap_or(1);
    // The data set; the weights file's declared backbone and normalisation
    // applied (checked against the sweep file's) and its names and shapes;
    // a split file checked whole (`preflight.rs`).
    let crate::preflight::Checked { mut dataset, mut model, splits } = crate::preflight::check(&spec)?;
    // What the backbone computes in on the device that runs it (bf16 on a
    // CPU without AMX tiles: f32), before the cache key and the data key depend on it.
    let backbone_device = opts.devices.first().cloned().unwrap_or_else(|| "cpu".to_owned());
    let (dtype, note) = model.model.dtype.on_device(&backbone_device);
    model.model.dtype = dtype;
    if let Some(note) = note {
        tracing::info!("{note}");
        observer.setup(&note);
    }
    tracing::info!("{}", model.describe());
    // Said where a weights file may declare them (its metadata).
    if matches!(model.model.weights, sweep_worker::Weights::Safetensors(_)) {
        observer.setup(&model.describe());
    }
    // `skip_bad_images`: the bad files are left out before anything depends
    // on the images (the data key, the cache key, the split), and recorded.
    let skipped = match spec.data.skip_bad_images {
        true => sweep_worker::skip_bad_images(&mut dataset, sweep_worker::decode_threads(workers))
            .map_err(sweep_worker::Error::from)?,
        false => {
            sweep_worker::check_images(&dataset, sweep_worker::decode_threads(workers))
                .map_err(sweep_worker::Error::from)?;
            None
        }
    };
    if let Some(bad) = &skipped {
        tracing::warn!("{}", bad.skipped_line());
    }
    // One split, or one per fold: the same for every job, recorded so a
    // resumed sweep can be checked against it.
    // Made again only when `skip_bad_images` left images out (a split file
    // may then name ids the data set no longer has).
    let splits = match &skipped {
        Some(_) => sweep_worker::make_splits(&dataset, &spec.data, spec.folds, true)?,
        None => splits,
    };
    // The data the jobs train on, bound to them: every file is hashed once
    // here (the feature-cache key comes from the same hashes).
    let manifest = DataManifest::new(&spec.data, &dataset, &model.model, &splits)?;
    // The sanity check, before anything is registered, when the backbone is
    // to run: the backbone it loads is the one the pass then uses.
    let cache = FeatureCache::new(&opts.cache_dir);
    let check = opts.sanity_check && !spec.model_given.no_sanity_check;
    let loaded = if check && !cache.has(&manifest.features_key) {
        sanity_check(&dataset, &model.model, &backbone_device, observer.as_ref())?
    } else {
        None
    };
    let mut store = Store::open(&opts.db)?;
    let sweep_id = bind_to_data(&store, &spec, &mut jobs, &manifest, resuming, observer.as_ref())?;
    let new_jobs: Vec<(NewJob<'_>, String)> = jobs
        .iter()
        .map(|job| {
            let p = &job.params;
            let cfg = p.train_config();
            (
                NewJob {
                    id: &job.id,
                    config_json: "",
                    batch_size: cfg.batch_size as i64,
                    workers: p.workers() as i64,
                    lr: cfg.lr,
                    momentum: cfg.momentum,
                    epochs: cfg.epochs as i64,
                },
                p.canonical_json(),
            )
        })
        .collect();
    let new_jobs: Vec<NewJob<'_>> = new_jobs.iter().map(|(j, cfg)| NewJob { config_json: cfg, ..j.clone() }).collect();
    let spec_json = spec.canonical_json();
    let source_path = source.as_ref().map(|(_, p)| p.display().to_string());
    let full = |e: sweep_store::Error| disk_full(e, &opts, &sweep_id, 0);
    let registered = store
        .register_sweep(
            &NewSweep {
                id: &sweep_id,
                name: &spec.name,
                spec_json: &spec_json,
                source: source.as_ref().map(|(s, _)| s.as_str()),
                source_path: source_path.as_deref(),
            },
            &new_jobs,
        )
        .map_err(full)?;
    let job_ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    store.bind_data(&sweep_id, &job_ids, &manifest.data_key(), &Recorded(&manifest)).map_err(full)?;
    tracing::info!(sweep = %sweep_id, name = %spec.name, jobs = jobs.len(), new_jobs = registered.new_jobs, "sweep registered");
    if opts.retry_failed {
        let n = store.retry_failed(&sweep_id).map_err(full)?;
        tracing::info!(jobs = n, "failed jobs made runnable again");
    }
    restart(&store, &sweep_id, &opts.restart).map_err(|e| match e {
        Error::Store(e) => full(e),
        e => e,
    })?;
    let me = lease_owner();
    let twins = twins(&jobs);
    let prefixes = if spec.prune().is_some() { HashMap::new() } else { prefixes(&jobs) };
    let after = after(&twins, &prefixes);
    let unfinished: Vec<_> = store.jobs(&sweep_id)?.into_iter().filter(needs_work).collect();
    let runnable = unfinished.len();
    let epochs_left = unfinished
        .iter()
        .filter(|j| !twins.contains_key(&j.id))
        .map(|j| (j.epochs - j.epochs_done).max(0) as usize)
        .sum();
    observer.registered(&sweep_id, jobs.len(), runnable, epochs_left);
    let mut summary = RunSummary {
        sweep_id: sweep_id.clone(),
        features_reused: None,
        done: 0,
        failed: 0,
        interrupted: 0,
        pruned: 0,
        cancelled: false,
    };
    if opts.register_only {
        return Ok(summary);
    }
    if runnable == 0 {
        tracing::info!("every job is finished or held by another runner: nothing to train");
        return Ok(summary);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_only = opts.devices.iter().all(|d| d == "cpu");
    let parallel = match opts.parallel {
        Some(requested) => {
            let parallel = slot_count(requested, runnable, cores, cpu_only);
            if parallel < requested {
                tracing::info!(requested, parallel, cores, runnable, "fewer job slots than asked for");
                observer.parallel_capped(requested, parallel, cores, runnable);
            }
            parallel
        }
        None => {
            let kernels = sweep_worker::heads_train_on_one_thread();
            let wanted = default_slots(cores, &opts.devices, spec.prune().is_some(), kernels);
            slot_count(wanted, runnable, cores, cpu_only)
        }
    };

    // The backbone pass, once for the whole sweep.
    let model_cfg = model.model.clone();
    let obs = observer.clone();
    let backbone_batch = opts.backbone_batch;
    let features_key = manifest.features_key.clone();
    let (db, owner, lease, shard_images) = (opts.db.clone(), lease_owner(), opts.lease, opts.shard_images);
    let pass_cancel = cancel.clone();
    let pass_devices = opts.devices.clone();
    let pass = tokio::task::spawn_blocking(move || -> Result<_, Error> {
        obs.features_started(dataset.items.len());
        // A backbone on each device listed: the pass is split across them.
        let (first, backbone) = match loaded {
            Some((device, backbone)) => (device, Some(backbone)),
            None => (sweep_worker::device(&backbone_device)?, None),
        };
        let mut devices = vec![first];
        for name in pass_devices.iter().skip(1) {
            devices.push(sweep_worker::device(name)?);
        }
        let progress = |done: usize| obs.features_progress(done);
        let started = std::time::Instant::now();
        let sharing =
            crate::pass::Sharing { db: &db, owner: &owner, lease, per_shard: shard_images, cancel: &pass_cancel };
        let features = crate::pass::features(
            &dataset,
            &model_cfg,
            &features_key,
            &cache,
            workers,
            backbone_batch,
            &devices,
            &progress,
            backbone,
            &sharing,
        )?;
        obs.features_done(&features.outcome);
        Ok((dataset, features, started.elapsed().as_secs_f64()))
    });
    // The backbone pass cannot stop half way; at Ctrl-C it is abandoned (its
    // thread ends with the process) and no job is claimed. The cache is
    // written by rename, so nothing half-written is ever read.
    let (dataset, features, feature_seconds) = tokio::select! {
        biased;
        () = cancel.cancelled() => {
            tracing::info!("stopped during the backbone pass: no job was started");
            summary.cancelled = true;
            return Ok(summary);
        }
        pass = pass => pass.map_err(|e| Error::Join(e.to_string()))??,
    };
    let line = crate::preflight::split_line(&splits, &spec);
    tracing::info!("{line}");
    observer.setup(&line);
    // Classes too small for the folds or the valid split: logged, not fatal.
    sweep_worker::small_class_warnings(&dataset, &splits);
    let mut split_json = serde_json::json!({
        "seed": spec.data.split_seed,
        "folds": spec.folds,
        "train": splits[0].train.len(),
        "valid": splits[0].valid.len(),
        "hash": sweep_worker::split_hash(&splits),
    });
    // How it was made, when not by the seeded shuffle.
    match &spec.data.split_method {
        sweep_worker::SplitMethod::Shuffle => {}
        sweep_worker::SplitMethod::Pandas => split_json["method"] = "pandas".into(),
        sweep_worker::SplitMethod::File(path) => split_json["file"] = path.display().to_string().into(),
    }
    // The images `skip_bad_images` left out, each with its problem.
    if let Some(bad) = &skipped {
        let list: Vec<serde_json::Value> = bad
            .images
            .iter()
            .map(|b| serde_json::json!({ "path": b.path.display().to_string(), "problem": b.problem }))
            .collect();
        split_json["skipped"] = list.into();
    }
    let reused = features.outcome == CacheOutcome::Hit;
    store.set_features(&sweep_id, &features.key, reused, &split_json.to_string()).map_err(full)?;
    store
        .record_feature_run(&sweep_id, &features.key, reused, dataset.items.len() as u64, Some(feature_seconds))
        .map_err(full)?;
    summary.features_reused = Some(reused);
    drop(store);

    let shared = Arc::new(Shared {
        features,
        labels: dataset.items.iter().map(|i| i.label).collect(),
        classes: dataset.classes.len(),
        splits,
        params: jobs.iter().map(|j| (j.id.clone(), j.params.clone())).collect(),
        sweep_id: sweep_id.clone(),
        twins,
        after,
        // Not with pruning: the shorter job made no decision at its last
        // epoch, which the longer one would have made there.
        prefixes,
        longer: if spec.prune().is_some() { HashMap::new() } else { longer_jobs(&jobs) },
        brackets: match spec.prune().map_or(1, |p| p.brackets()) {
            1 => HashMap::new(),
            b => jobs.iter().enumerate().map(|(i, j)| (j.id.clone(), i as u64 % b)).collect(),
        },
        prune: spec.prune(),
        objective: spec.objective(),
        opts: opts.clone(),
        owner: me,
        observer,
        // Ctrl-C, a full disk, or a slot's store failure: each stops every
        // slot at its last recorded epoch.
        cancel: cancel.child_token(),
        full: std::sync::OnceLock::new(),
    });
    // Every slot's connections (its own and its writer's) are open before
    // any slot claims a job: the slots start together, and a database that
    // refuses another connection fails the run before anything is claimed.
    let mut connections = Vec::with_capacity(parallel);
    for _ in 0..parallel {
        let opened = Store::open(&opts.db).map_err(Error::from).and_then(|store| Ok((store, Writer::open(&opts.db)?)));
        match opened {
            Ok(pair) => connections.push(pair),
            Err(Error::Store(e @ sweep_store::Error::Full { .. })) => return Err(disk_full(e, &opts, &sweep_id, 0)),
            Err(e) => return Err(e),
        }
    }
    let mut slots = tokio::task::JoinSet::new();
    for (slot, (store, writer)) in connections.into_iter().enumerate() {
        let shared = shared.clone();
        let device = opts.devices[slot % opts.devices.len()].clone();
        slots.spawn_blocking(move || run_slot(&shared, store, &writer, &device));
    }
    let mut first_error = None;
    while let Some(result) = slots.join_next().await {
        match result.map_err(|e| Error::Join(e.to_string())).and_then(|r| r) {
            Ok(counts) => {
                summary.done += counts.done;
                summary.failed += counts.failed;
                summary.interrupted += counts.interrupted;
                summary.pruned += counts.pruned;
            }
            Err(e) => {
                // Let the other slots close their jobs before reporting it.
                tracing::error!(error = %e, "a job slot failed: stopping the others");
                shared.cancel.cancel();
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(&checkpoint) = shared.full.get() {
        return Err(disk_full(sweep_store::Error::Full { path: opts.db.clone() }, &opts, &sweep_id, checkpoint));
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    summary.cancelled = cancel.is_cancelled();
    Ok(summary)
}

/// A data manifest as the store records it: a part at a time.
struct Recorded<'a>(&'a DataManifest);

impl sweep_store::ManifestJson for Recorded<'_> {
    fn header(&self) -> String {
        self.0.header_json()
    }

    fn images(&self) -> usize {
        self.0.len()
    }

    fn items(&self, range: std::ops::Range<usize>) -> String {
        self.0.items_json(range)
    }
}

/// The id, under the data in `manifest`, of a sweep or job whose settings
/// give `id`: `id` itself unless the store has it bound to other data, then
/// an id derived from `id` and the data key. So the same settings on changed
/// data are new rows, and the old ones keep their results untouched.
fn id_under_data(id: &str, bound: Option<&str>, data_key: &str) -> String {
    match bound {
        Some(key) if key != data_key => {
            let mut h = blake3::Hasher::new();
            h.update(b"sweep-data-binding-v1\0");
            h.update(id.as_bytes());
            h.update(b"\0");
            h.update(data_key.as_bytes());
            h.finalize().to_hex()[..id.len().clamp(16, 64)].to_owned()
        }
        _ => id.to_owned(),
    }
}

/// Finds the sweep and job ids for the data in `manifest` (rewriting
/// `jobs`' ids) and returns the sweep's. When the sweep file's own sweep ran
/// on other data, says what changed ([`Observer::data_changed`]); when
/// `resuming` a sweep whose data changed, refuses ([`Error::DataChanged`]).
fn bind_to_data(
    store: &Store,
    spec: &SweepSpec,
    jobs: &mut [crate::spec::Job],
    manifest: &DataManifest,
    resuming: Option<(&str, &Path)>,
    observer: &dyn Observer,
) -> Result<String, Error> {
    let data_key = manifest.data_key();
    let spec_id = spec.id();
    let sweep_id = id_under_data(&spec_id, store.sweep_data_key(&spec_id)?.as_deref(), &data_key);
    // What the data was: the resumed sweep's, or the sweep file's own sweep's.
    let before = store.sweep_data_key(resuming.map_or(spec_id.as_str(), |(id, _)| id))?;
    let changes = |old_key: &str| -> Result<String, Error> {
        let Some(json) = store.data_manifest(old_key)? else {
            return Ok("what changed was not recorded".to_owned());
        };
        let mut old = match DataManifest::reader(&json) {
            Ok(reader) => reader,
            Err(e) => return Ok(e),
        };
        for part in 0.. {
            let Some(items) = store.data_manifest_part(old_key, part)? else { break };
            if let Err(e) = old.part(&items) {
                return Ok(e);
            }
        }
        Ok(manifest.changes_from(&old.finish()).to_string())
    };
    if let Some((resumed, file)) = resuming {
        if resumed != sweep_id {
            let changes = match &before {
                Some(old) => changes(old)?,
                None => "it was not bound to its data".to_owned(),
            };
            return Err(Error::DataChanged { sweep_id: resumed.to_owned(), file: file.display().to_string(), changes });
        }
    } else if sweep_id != spec_id && !store.has_sweep(&sweep_id)? {
        if let Some(old) = &before {
            let changes = changes(old)?;
            tracing::warn!(old = %spec_id, new = %sweep_id, changes, "the data changed: a new sweep");
            observer.data_changed(&spec_id, &sweep_id, &changes);
        }
    }
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    let bound = store.job_data_keys(&ids)?;
    for job in jobs.iter_mut() {
        job.id = id_under_data(&job.id, bound.get(&job.id).map(String::as_str), &data_key);
    }
    Ok(sweep_id)
}

/// A full disk as the run reports it: with the epochs the sweep has left and
/// a rough bound on the room they need (each epoch writes its `last`
/// checkpoint, and its `best` when it is the best, plus a few pages; once in
/// the WAL and again in the database); any other error as it is.
/// `checkpoint` is the size of a job's state, 0 when none was written yet.
fn disk_full(e: sweep_store::Error, opts: &RunOptions, sweep_id: &str, checkpoint: usize) -> Error {
    let sweep_store::Error::Full { path } = e else { return e.into() };
    // Reading needs no room.
    let epochs_left: u64 = Store::open_read_only(&opts.db)
        .and_then(|store| store.jobs(sweep_id))
        .map(|jobs| jobs.iter().filter(|j| needs_work(j)).map(|j| (j.epochs - j.epochs_done).max(0) as u64).sum())
        .unwrap_or(0);
    let per_epoch = 2 * (2 * checkpoint as u64 + 8192);
    let needed_mib = (epochs_left * per_epoch).div_ceil(1 << 20).max(1);
    Error::DiskFull { path, sweep_id: sweep_id.to_owned(), epochs_left, needed_mib }
}

/// Starts each of `jobs` (ids or unique prefixes, of this sweep) again from
/// epoch 0, logging how many recorded epochs each loses.
fn restart(store: &Store, sweep_id: &str, jobs: &[String]) -> Result<(), Error> {
    if jobs.is_empty() {
        return Ok(());
    }
    let ours = store.jobs(sweep_id)?;
    for given in jobs {
        let refuse = |reason: String| Error::Restart { job: given.clone(), reason };
        let id = store.resolve_job(given).map_err(|e| refuse(e.to_string()))?;
        if !ours.iter().any(|j| j.id == id) {
            return Err(refuse(format!("it is not a job of sweep {sweep_id}")));
        }
        match store.restart(&id)? {
            Some(epochs) => {
                tracing::warn!(job = %id, discarded_epochs = epochs, "job restarted from epoch 0");
            }
            None => return Err(refuse("a runner holds it: stop that run first".to_owned())),
        }
    }
    Ok(())
}

/// Resumes a recorded sweep from its stored file.
pub async fn resume(
    which: Option<&str>,
    opts: RunOptions,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
) -> Result<RunSummary, Error> {
    let row = Store::open(&opts.db)?.find_sweep(which)?;
    let (Some(source), Some(path)) = (row.source, row.source_path) else {
        return Err(Error::NoSource(row.id));
    };
    let path = PathBuf::from(path);
    let format = if path.extension().is_some_and(|e| e == "json") { Format::Json } else { Format::Toml };
    let base = path.parent().unwrap_or(Path::new("."));
    let spec = SweepSpec::parse(&source, format, &path, base)?;
    let file = path.clone();
    run_sweep(spec, Some((source, path)), opts, observer, cancel, Some((&row.id, &file))).await
}

/// How many job slots to run when `--parallel` is not given: on a CPU whose
/// head kernels train a job on one thread, one per core; with GPUs, one per
/// device. One on a CPU without the kernels (each job spreads over Candle's
/// threads already), and one for a sweep with pruning: a pruner compares a
/// trial with those that reported before it, so one slot makes its
/// decisions the same on every run. `kernels`: this CPU has the head
/// kernels (`sweep_worker::heads_train_on_one_thread`).
fn default_slots(cores: usize, devices: &[String], pruned: bool, kernels: bool) -> usize {
    if pruned {
        1
    } else if devices.iter().all(|d| d == "cpu") {
        if kernels {
            cores
        } else {
            1
        }
    } else {
        devices.len()
    }
}

/// How many job slots to run: what was asked for, but no more than the jobs
/// to run, nor (on CPU) than the cores. Each CPU job already spreads its
/// matrix products over candle's threads: more slots than cores only make
/// them fight for the cores (64 slots on 2 cores took 45 times as long), and
/// a slot without a job to claim does nothing. At least one.
fn slot_count(requested: usize, runnable: usize, cores: usize, cpu_only: bool) -> usize {
    let mut n = requested.min(runnable);
    if cpu_only {
        n = n.min(cores);
    }
    n.max(1)
}

/// Each job whose settings differ from an earlier job's of the sweep only in
/// speed-only keys (`workers`), with that earlier job: it is trained once,
/// and the others take its result.
fn twins(jobs: &[crate::spec::Job]) -> HashMap<String, String> {
    let mut first: HashMap<String, &str> = HashMap::new();
    let mut twins = HashMap::new();
    for job in jobs {
        let trained = *first.entry(job.params.results_key()).or_insert(&job.id);
        if trained != job.id {
            twins.insert(job.id.clone(), trained.to_owned());
        }
    }
    twins
}

/// Each job with the other jobs of the sweep whose settings are its own but
/// for fewer epochs (speed-only keys aside), the longest first: an epoch
/// depends on the seed, the epoch and the state before it, never on the
/// total (StepLR steps by epoch), so such a job is that job's first epochs,
/// and this one starts where it ended. Whatever their order in the sweep,
/// the shorter jobs are claimed first ([`Store::claim_after`]), so a longer
/// one never trains the epochs a shorter one is training.
fn prefixes(jobs: &[crate::spec::Job]) -> HashMap<String, Vec<String>> {
    let mut out = HashMap::new();
    for group in epoch_groups(jobs) {
        for &(epochs, id) in &group {
            let shorter: Vec<String> =
                group.iter().rev().filter(|(e, _)| *e < epochs).map(|(_, id)| (*id).to_owned()).collect();
            if !shorter.is_empty() {
                out.insert(id.to_owned(), shorter);
            }
        }
    }
    out
}

/// Each job with the other jobs of the sweep whose settings are its own but
/// for more epochs, the shortest first: when one of those has recorded this
/// job's epochs already (a job of an earlier sweep), this one takes them
/// rather than train ([`Store::take_prefix`]).
fn longer_jobs(jobs: &[crate::spec::Job]) -> HashMap<String, Vec<String>> {
    let mut out = HashMap::new();
    for group in epoch_groups(jobs) {
        for &(epochs, id) in &group {
            let longer: Vec<String> =
                group.iter().filter(|(e, _)| *e > epochs).map(|(_, id)| (*id).to_owned()).collect();
            if !longer.is_empty() {
                out.insert(id.to_owned(), longer);
            }
        }
    }
    out
}

/// The sweep's jobs grouped by their settings but `epochs` (speed-only keys
/// aside), each group as `(epochs, id)` by epochs, then id.
fn epoch_groups(jobs: &[crate::spec::Job]) -> Vec<Vec<(usize, &str)>> {
    let mut groups: HashMap<String, Vec<(usize, &str)>> = HashMap::new();
    for job in jobs {
        let epochs = job.params.train_config().epochs;
        groups.entry(job.params.results_key_without_epochs()).or_default().push((epochs, &job.id));
    }
    groups
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect()
}

/// Each job with the jobs it is claimed after: a job not trained with the
/// job trained for it ([`twins`]: it links once that one has ended, so no
/// slot waits on it), a longer job with its shorter ones ([`prefixes`]).
fn after(twins: &HashMap<String, String>, prefixes: &HashMap<String, Vec<String>>) -> HashMap<String, Vec<String>> {
    let mut after = prefixes.clone();
    for (job, trained) in twins {
        after.entry(job.clone()).or_default().push(trained.clone());
    }
    after
}

pub(crate) fn needs_work(job: &sweep_store::JobRow) -> bool {
    use sweep_store::Status;
    matches!(job.status, Status::Pending | Status::Interrupted | Status::Running)
}

struct Shared {
    features: Features,
    labels: Vec<u32>,
    classes: usize,
    /// The train/valid split, or one per fold (indexed by the job's fold).
    splits: Vec<Split>,
    params: HashMap<String, TrainParams>,
    sweep_id: String,
    /// Jobs not trained, each with the earlier job of the sweep whose
    /// settings differ from its own only in speed-only keys ([`twins`]).
    twins: HashMap<String, String>,
    /// Each job with the earlier jobs of the sweep whose settings are its
    /// own but for fewer epochs, the longest first ([`prefixes`]).
    prefixes: HashMap<String, Vec<String>>,
    /// Each job with the jobs it is claimed after ([`after`]).
    after: HashMap<String, Vec<String>>,
    /// Each job with the jobs of the sweep whose settings are its own but
    /// for more epochs, the shortest first ([`longer_jobs`]).
    longer: HashMap<String, Vec<String>>,
    /// `[prune]`, and the objective whose metric it compares.
    prune: Option<crate::spec::Prune>,
    /// Each job's Hyperband bracket (its place in the sweep's order modulo
    /// the brackets); empty with one bracket.
    brackets: HashMap<String, u64>,
    objective: crate::spec::Objective,
    opts: RunOptions,
    owner: String,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
    /// Set when the disk filled up, to the size of the state the write that
    /// failed carried (0 if none): the run stops, and says how much room it needs.
    full: std::sync::OnceLock<usize>,
}

impl Shared {
    /// Stops the run because the disk is full. A full disk is nobody's
    /// fault: the job that met it is interrupted like every other.
    fn disk_full(&self, checkpoint: usize) {
        if self.full.set(checkpoint).is_ok() {
            tracing::info!(db = %self.opts.db, "the disk is full: stopping every job at its last recorded epoch");
            // Room for marking the running jobs interrupted.
            sweep_store::release_reserve(&self.opts.db);
        }
        self.cancel.cancel();
    }
}

/// How often a slot with nothing to claim looks again while other runners
/// hold jobs of the sweep.
const POLL: Duration = Duration::from_millis(500);

/// What one job slot did.
#[derive(Debug, Default)]
struct Counts {
    done: usize,
    failed: usize,
    interrupted: usize,
    pruned: usize,
}

/// One job slot: claims and trains jobs until none is left or the run is
/// cancelled.
///
/// When nothing is claimable but other runners hold jobs of the sweep, the
/// slot waits: for them to finish, or for a job to come free (its runner
/// interrupted, or its lease expired because the runner died elsewhere), so
/// that a run ends only when the sweep does.
fn run_slot(shared: &Shared, mut store: Store, writer: &Writer, device_name: &str) -> Result<Counts, Error> {
    let mut counts = Counts::default();
    match slot_loop(shared, &mut store, writer, device_name, &mut counts) {
        Err(Error::Store(sweep_store::Error::Full { .. })) => {
            shared.disk_full(0);
            Ok(counts)
        }
        other => other.map(|()| counts),
    }
}

/// [`run_slot`]'s loop, counting into `counts`.
fn slot_loop(
    shared: &Shared,
    store: &mut Store,
    writer: &Writer,
    device_name: &str,
    counts: &mut Counts,
) -> Result<(), Error> {
    let device = sweep_worker::device(device_name)?;
    let mut waiting = false;
    loop {
        if shared.cancel.is_cancelled() {
            return Ok(());
        }
        let held_by_others = free_dead_leases(store, &shared.sweep_id, &shared.owner)?;
        if !shared.opts.take_claim() {
            return Ok(());
        }
        let Some(claimed) = next_job(shared, store)? else {
            shared.opts.give_back_claim();
            // The trials still waiting at a rung when nothing is left to run
            // are pruned; the jobs that take their result can then link.
            if held_by_others == 0 && prune_waiting(shared, store, counts)? {
                continue;
            }
            if held_by_others == 0 || !shared.opts.wait_for_others {
                return Ok(());
            }
            if !waiting {
                tracing::info!(jobs = held_by_others, "waiting for jobs that other runners hold");
                waiting = true;
            }
            let until = Instant::now() + POLL;
            while Instant::now() < until && !shared.cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        };
        waiting = false;
        if shared.cancel.is_cancelled() {
            // Ctrl-C came between the check above and the claim: give the job
            // back untouched rather than start it.
            release(store, &claimed.id, &shared.owner)?;
            return Ok(());
        }
        // Jobs that see the same mini-batches train as one group of heads.
        if fuses(shared, &device) && groupable(shared, &claimed.id) {
            let group = claim_group(shared, store, &claimed.id)?;
            if group.len() > 1 {
                for (id, end) in run_group(shared, store, writer, &group, &device) {
                    close(shared, store, &id, end, counts)?;
                }
                continue;
            }
        }
        let end = match shared.twins.get(&claimed.id) {
            // Never trained on its own (a job recorded before it was linked keeps training).
            Some(trained) if store.checkpoint(&claimed.id, "last")?.is_none() => {
                share_result(shared, store, &claimed.id, trained)?
            }
            _ => run_job(shared, store, writer, &claimed.id, &device),
        };
        close(shared, store, &claimed.id, end, counts)?;
    }
}

/// Counts how a claimed job ended and closes its claim in the store (the
/// ends that were closed with their last write excepted).
fn close(shared: &Shared, store: &mut Store, id: &str, end: JobEnd, counts: &mut Counts) -> Result<(), Error> {
    shared.observer.job_finished(id, &end);
    let finish = match &end {
        JobEnd::Done { .. } => {
            counts.done += 1;
            Finish::Done
        }
        // Closed with its last epoch, in the same transaction; a trial
        // waiting at its rung is counted when it ends.
        JobEnd::Pruned { waiting, .. } => {
            if !waiting {
                counts.pruned += 1;
            }
            return Ok(());
        }
        // Closed when linked, or given its epochs.
        JobEnd::SameAs(_) | JobEnd::PrefixOf { .. } => {
            counts.done += 1;
            return Ok(());
        }
        JobEnd::Failed(msg) => {
            counts.failed += 1;
            // The observer shows it; the log keeps it for -v.
            tracing::info!(job = %id, error = %msg, "job failed");
            Finish::Failed(msg)
        }
        JobEnd::Interrupted(_) => {
            counts.interrupted += 1;
            Finish::Interrupted
        }
    };
    let closed = match store.finish(id, &shared.owner, finish.clone()) {
        // The disk filled just now: once more, with the room the store
        // kept for this freed.
        Err(sweep_store::Error::Full { .. }) => {
            shared.disk_full(0);
            store.finish(id, &shared.owner, finish)
        }
        other => other,
    };
    match closed {
        Ok(()) => Ok(()),
        Err(sweep_store::Error::LeaseLost { job_id }) => {
            tracing::warn!(job = %job_id, "lease lost before the job could be closed; another runner holds it");
            Ok(())
        }
        // Not even its status fits: it stays `running` under this
        // runner's lease, which the next run on this host expires at once
        // (elsewhere, when it runs out).
        Err(sweep_store::Error::Full { .. }) => {
            tracing::warn!(job = %id, "the disk is full: the job could not be closed");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The next job for a slot: with ASHA, a stopped job to resume first (as an
/// uninterrupted run would have run it on), then a waiting trial that later
/// trials have put in its rung's top 1/eta (promoted: the highest rung
/// first, as ASHA does, then the sweep's order); then the next runnable job
/// that waits for no other ([`Shared::after`]).
fn next_job(shared: &Shared, store: &mut Store) -> Result<Option<sweep_store::Claimed>, Error> {
    let (sweep, owner, lease) = (&shared.sweep_id, &shared.owner, shared.opts.lease);
    if matches!(shared.prune, Some(crate::spec::Prune::Asha { .. })) {
        if let Some(claimed) = store.claim_resumable_after(sweep, owner, lease, &shared.after)? {
            return Ok(Some(claimed));
        }
        let mut promotable: Vec<(i64, String)> = waiting_verdicts(shared, store)?
            .into_iter()
            .filter(|(_, _, stop)| stop.is_none())
            .map(|(id, epoch, _)| (epoch, id))
            .collect();
        promotable.sort_by_key(|(epoch, _)| std::cmp::Reverse(*epoch));
        for (epoch, id) in promotable {
            if let Some(claimed) = store.promote(&id, owner, lease)? {
                tracing::info!(job = %id, epoch, "promoted: later trials put it in the top of its rung");
                return Ok(Some(claimed));
            }
        }
    }
    Ok(store.claim_after(sweep, owner, lease, &shared.after)?)
}

/// Each trial of the sweep waiting at an ASHA rung, in the sweep's order,
/// with the epoch it stopped at and the rule's verdict there now, against
/// every trial that has reached that epoch: `None` to promote it.
fn waiting_verdicts(shared: &Shared, store: &Store) -> Result<Vec<(String, i64, Option<crate::pruner::Stop>)>, Error> {
    let Some(prune) = &shared.prune else { return Ok(Vec::new()) };
    let waiting = store.waiting_jobs(&shared.sweep_id)?;
    let mut at: HashMap<i64, Vec<(String, sweep_store::Status, f64)>> = HashMap::new();
    let mut out = Vec::with_capacity(waiting.len());
    for (id, epoch) in waiting {
        let Some(params) = shared.params.get(&id) else { continue };
        if let std::collections::hash_map::Entry::Vacant(e) = at.entry(epoch) {
            e.insert(store.values_at_epoch(&shared.sweep_id, "", epoch, metric(shared.objective))?);
        }
        let values = &at[&epoch];
        let Some(own) = values.iter().find(|(j, _, _)| *j == id).map(|(_, _, x)| *x) else { continue };
        let bracket = shared.brackets.get(&id).copied();
        let others: Vec<(bool, f64)> = values
            .iter()
            .filter(|(j, _, _)| *j != id && (bracket.is_none() || shared.brackets.get(j) == bracket.as_ref()))
            .map(|(_, status, x)| (*status == sweep_store::Status::Done, *x))
            .collect();
        let evidence = crate::pruner::Evidence { own: &[own], others: &others, done: 0 };
        let epochs = params.train_config().epochs as u64;
        let stop = prune.in_bracket(bracket.unwrap_or(0)).decide(shared.objective, epoch as u64, epochs, &evidence);
        out.push((id, epoch, stop));
    }
    Ok(out)
}

/// Prunes the trials still waiting at their rungs once nothing of the sweep
/// is left to run (the store checks it: no job pending, interrupted or
/// running), each with the rule's verdict against every trial of its rung.
/// Returns whether the slot should look for work again: a trial was pruned
/// (the jobs that take its result can link now), or one can be promoted.
fn prune_waiting(shared: &Shared, store: &Store, counts: &mut Counts) -> Result<bool, Error> {
    let mut again = false;
    for (id, _, stop) in waiting_verdicts(shared, store)? {
        let Some(stop) = stop else {
            again = true;
            continue;
        };
        let reason = format!("{}; the sweep had nothing left to run", stop.reason);
        if !store.prune_waiting(&shared.sweep_id, &id, &reason)? {
            break;
        }
        tracing::info!(job = %id, reason, "pruned where it waited");
        shared.observer.job_finished(&id, &JobEnd::Pruned { epoch: 0, reason, waiting: false });
        counts.pruned += 1;
        again = true;
    }
    Ok(again)
}

/// The store's column for the objective's metric.
fn metric(objective: crate::spec::Objective) -> sweep_store::Metric {
    match objective {
        crate::spec::Objective::ValidAcc => sweep_store::Metric::ValidAcc,
        crate::spec::Objective::ValidLoss => sweep_store::Metric::ValidLoss,
        crate::spec::Objective::TrainLoss => sweep_store::Metric::TrainLoss,
    }
}

/// A claimed job that differs from `trained` only in speed-only keys: not
/// trained, but linked to `trained` once it ends (waiting, its lease renewed,
/// while another slot or runner trains it). Whichever runner claims it, it
/// never trains: a resumed or second process links it the same way.
fn share_result(shared: &Shared, store: &Store, job_id: &str, trained: &str) -> Result<JobEnd, Error> {
    use sweep_store::Status;
    let mut last_renew = Instant::now();
    loop {
        if store.link_same_as(job_id, &shared.owner, trained)? {
            tracing::info!(job = %job_id, trained, "not trained: the same settings as a trained job but for speed");
            return Ok(JobEnd::SameAs(trained.to_owned()));
        }
        match store.job(trained)?.map(|j| j.status) {
            Some(Status::Failed) => {
                return Ok(JobEnd::Failed(format!(
                    "it is trained as job {trained} (the same settings but for speed-only keys), which failed"
                )))
            }
            // Trained by a live runner: wait. A runner that is gone (its
            // lease lapsed, or its process is dead on this host) leaves it
            // to whoever claims it next: this slot, once the copy is given back.
            Some(Status::Running) if !shared.cancel.is_cancelled() && !runner_gone(shared, store, trained)? => {}
            // Not being trained (or a stop asked for): given back, to be
            // claimed again once it has been.
            _ => return Ok(JobEnd::Interrupted(0)),
        }
        let until = Instant::now() + POLL;
        while Instant::now() < until && !shared.cancel.is_cancelled() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if last_renew.elapsed() > shared.opts.lease / 3 {
            if let Err(e) = store.renew(job_id, &shared.owner, shared.opts.lease) {
                tracing::warn!(error = %e, job = %job_id, "stopped waiting for the job it shares a result with");
                return Ok(JobEnd::Interrupted(0));
            }
            last_renew = Instant::now();
        }
    }
}

/// Whether the runner of the running job `job_id` is gone: its lease has
/// lapsed, or it is a dead process of this host.
fn runner_gone(shared: &Shared, store: &Store, job_id: &str) -> Result<bool, Error> {
    if store.lease_lapsed(job_id)? {
        return Ok(true);
    }
    let leases = store.leases(&shared.sweep_id)?;
    Ok(leases.iter().any(|(id, owner)| id == job_id && owner_is_dead(owner, &shared.owner)))
}

/// Ends the leases of the sweep's jobs whose runner is a dead process of this
/// host, so they can be claimed now; returns how many jobs other runners hold.
pub(crate) fn free_dead_leases(store: &Store, sweep_id: &str, me: &str) -> Result<usize, Error> {
    let mut held_by_others = 0;
    for (job_id, owner) in store.leases(sweep_id)? {
        if owner_is_dead(&owner, me) && store.expire_lease(&job_id, &owner)? {
            tracing::info!(job = %job_id, owner, "its runner is gone: the job can be resumed now");
        } else if owner != me {
            held_by_others += 1;
        }
    }
    Ok(held_by_others)
}

/// Ends a claim that never trained, leaving the job resumable.
fn release(store: &Store, job_id: &str, owner: &str) -> Result<(), Error> {
    match store.finish(job_id, owner, Finish::Interrupted) {
        Ok(()) | Err(sweep_store::Error::LeaseLost { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[tracing::instrument(skip_all, fields(job_id = %job_id))]
fn run_job(shared: &Shared, store: &mut Store, writer: &Writer, job_id: &str, device: &sweep_worker::Device) -> JobEnd {
    let Some(params) = shared.params.get(job_id) else {
        return JobEnd::Failed(format!("job {job_id} is not part of this sweep's file"));
    };
    // A job whose epochs a longer one has recorded takes them.
    let epochs = params.train_config().epochs as i64;
    for longer in shared.longer.get(job_id).into_iter().flatten() {
        match store.take_prefix(job_id, &shared.owner, longer, epochs) {
            Ok(Some((best_valid_acc, best_epoch))) => {
                tracing::info!(longer = %longer, epochs, "takes the first epochs of a job with more epochs");
                return JobEnd::PrefixOf { longer: longer.clone(), best_valid_acc, best_epoch: best_epoch as usize };
            }
            Ok(None) => {}
            Err(e) => return JobEnd::Failed(e.to_string()),
        }
    }
    // A job that only adds epochs to a done job of the sweep starts where it ended.
    for shorter in shared.prefixes.get(job_id).into_iter().flatten() {
        match store.extend_from(job_id, &shared.owner, shorter) {
            Ok(Some(epochs)) => {
                tracing::info!(shorter = %shorter, epochs, "continues a done job with fewer epochs");
                break;
            }
            Ok(None) => {}
            Err(e) => return JobEnd::Failed(e.to_string()),
        }
    }
    let resume = match resume_state(shared, store, job_id, device) {
        Ok(resume) => resume,
        Err(end) => return end,
    };
    let from_epoch = resume.as_ref().map_or(0, |s| s.epoch);
    shared.observer.job_started(job_id, params, from_epoch);
    tracing::info!(from_epoch, "job started");
    let cfg = params.train_config();
    let mut sink = StoreSink::new(shared, store, writer, job_id, from_epoch, cfg.epochs, false);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let job = sweep_worker::TrainJob {
            features: &shared.features.data,
            labels: &shared.labels,
            classes: shared.classes,
            split: &shared.splits[params.fold().unwrap_or(0)],
            config: &cfg,
            resume,
            device,
        };
        sweep_worker::train(job, &mut sink)
    }))
    .map_err(panic_message);
    job_end(result, &sink)
}

/// The state job `job_id` resumes from (`None`: it starts at epoch 0), or
/// how it ends when its last checkpoint cannot be read.
fn resume_state(
    shared: &Shared,
    store: &Store,
    job_id: &str,
    device: &sweep_worker::Device,
) -> Result<Option<TrainState>, JobEnd> {
    match store.checkpoint(job_id, "last") {
        Ok(Some((_, bytes))) => match TrainState::from_bytes(&bytes, device) {
            Ok(state) => Ok(Some(state)),
            Err(e) => Err(JobEnd::Failed(format!(
                "cannot resume: its last checkpoint is damaged ({e}): start it again with `sweep resume {} \
                 --restart {job_id}`",
                shared.sweep_id
            ))),
        },
        Ok(None) => Ok(None),
        Err(e) => Err(JobEnd::Failed(e.to_string())),
    }
}

/// What a panic in the worker said.
fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    let msg = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
    format!("the worker panicked: {}", msg.unwrap_or_default())
}

/// How a job ends, from its training's result (`Err`: the worker panicked)
/// and its sink; the last epoch's write, still committing, ends with it.
fn job_end(result: Result<Result<TrainOutcome, sweep_worker::Error>, String>, sink: &StoreSink<'_>) -> JobEnd {
    let result = match (result, sink.settle()) {
        (Ok(Ok(_)), Err(e)) => Ok(Err(sweep_worker::Error::Sink(e))),
        (result, _) => result,
    };
    match result {
        Ok(Ok(TrainOutcome::Finished { best_valid_acc, best_epoch })) => JobEnd::Done { best_valid_acc, best_epoch },
        // The pruner stopped it: its last epoch and the decision are recorded.
        Ok(Ok(TrainOutcome::Stopped { epoch })) if sink.pruned.borrow().is_some() => {
            let (reason, waiting) = sink.pruned.borrow_mut().take().unwrap_or_default();
            JobEnd::Pruned { epoch, reason, waiting }
        }
        Ok(Ok(TrainOutcome::Stopped { epoch })) => JobEnd::Interrupted(epoch),
        // Waiting out another writer's lock is not the job's fault: it stops
        // at its last recorded epoch and any runner resumes it.
        Ok(Err(e)) if sink.busy.get() => {
            tracing::warn!(error = %e, "the database stayed locked; the job stops at its last recorded epoch");
            JobEnd::Interrupted(sink.recorded.get())
        }
        // Nor is a full disk: the whole run stops (`Shared::disk_full`).
        Ok(Err(_)) if sink.full.get() => JobEnd::Interrupted(sink.recorded.get()),
        Ok(Err(e)) => JobEnd::Failed(e.to_string()),
        Err(panic) => JobEnd::Failed(panic),
    }
}

/// The most heads trained as one group.
const MAX_FUSED: usize = 256;

/// Whether a slot on `device` fuses heads: as `--fuse`/`--no-fuse` say, else
/// on a GPU only.
fn fuses(shared: &Shared, device: &sweep_worker::Device) -> bool {
    shared.opts.fuse.unwrap_or(!device.is_cpu())
}

/// Whether job `id` may train in a group: it is trained (no twin gives it
/// its result), takes no epochs from a longer job nor continues a shorter
/// one, and waits for no other.
fn groupable(shared: &Shared, id: &str) -> bool {
    shared.params.contains_key(id)
        && !shared.twins.contains_key(id)
        && shared.longer.get(id).is_none_or(Vec::is_empty)
        && shared.prefixes.get(id).is_none_or(Vec::is_empty)
        && shared.after.get(id).is_none_or(Vec::is_empty)
}

/// The jobs that train with the claimed job `leader` as one group: the
/// runnable jobs of the sweep, in its order, that are at the same epoch and
/// see the same mini-batches (fold, batch size, seed, loss), each claimed
/// here; `leader` first. Up to [`MAX_FUSED`].
fn claim_group(shared: &Shared, store: &mut Store, leader: &str) -> Result<Vec<String>, Error> {
    let mut group = vec![leader.to_owned()];
    let Some(lead) = shared.params.get(leader) else { return Ok(group) };
    let key = |p: &TrainParams| {
        let c = p.train_config();
        (p.fold(), c.batch_size, c.seed, c.loss)
    };
    let rows = store.jobs(&shared.sweep_id)?;
    let Some(at) = rows.iter().find(|r| r.id == leader).map(|r| r.epochs_done) else { return Ok(group) };
    for row in &rows {
        if group.len() >= MAX_FUSED || shared.cancel.is_cancelled() {
            break;
        }
        use sweep_store::Status;
        let fits = row.id != leader
            && matches!(row.status, Status::Pending | Status::Interrupted)
            && row.epochs_done == at
            && groupable(shared, &row.id)
            && shared.params.get(&row.id).is_some_and(|p| key(p) == key(lead));
        if !fits || !shared.opts.take_claim() {
            continue;
        }
        match store.claim_job(&row.id, &shared.owner, shared.opts.lease)? {
            Some(claimed) => group.push(claimed.id),
            None => shared.opts.give_back_claim(),
        }
    }
    Ok(group)
}

/// Trains the claimed jobs `ids` as one group of fused heads
/// ([`sweep_worker::train_fused`]), each with its own sink; a job that
/// resumes from another epoch than the first trains alone after. Returns how
/// each ended, in order.
fn run_group(
    shared: &Shared,
    store: &mut Store,
    writer: &Writer,
    ids: &[String],
    device: &sweep_worker::Device,
) -> Vec<(String, JobEnd)> {
    let mut ends = Vec::with_capacity(ids.len());
    let (mut members, mut alone) = (Vec::new(), Vec::new());
    for id in ids {
        let Some(params) = shared.params.get(id) else {
            ends.push((id.clone(), JobEnd::Failed(format!("job {id} is not part of this sweep's file"))));
            continue;
        };
        match resume_state(shared, store, id, device) {
            Err(end) => ends.push((id.clone(), end)),
            Ok(resume) => members.push((id.as_str(), params, params.train_config(), resume)),
        }
    }
    let start = members.first().map_or(0, |m| m.3.as_ref().map_or(0, |s| s.epoch));
    members.retain(|m| {
        let same = m.3.as_ref().map_or(0, |s| s.epoch) == start;
        if !same {
            alone.push(m.0.to_owned());
        }
        same
    });
    tracing::info!(heads = members.len(), from_epoch = start, "fused heads started");
    for (id, params, _, _) in &members {
        shared.observer.job_started(id, params, start);
    }
    let mut sinks: Vec<StoreSink> = members
        .iter()
        .map(|(id, _, cfg, _)| StoreSink::new(shared, store, writer, id, start, cfg.epochs, shared.prune.is_some()))
        .collect();
    let jobs: Vec<sweep_worker::TrainJob> = members
        .iter_mut()
        .map(|(_, params, cfg, resume)| sweep_worker::TrainJob {
            features: &shared.features.data,
            labels: &shared.labels,
            classes: shared.classes,
            split: &shared.splits[params.fold().unwrap_or(0)],
            config: cfg,
            resume: resume.take(),
            device,
        })
        .collect();
    let outcomes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut dyn_sinks: Vec<&mut dyn EpochSink> = sinks.iter_mut().map(|s| s as &mut dyn EpochSink).collect();
        sweep_worker::train_fused(jobs, &mut dyn_sinks)
    }));
    match outcomes {
        Ok(outcomes) => {
            for (sink, outcome) in sinks.iter().zip(outcomes) {
                ends.push((sink.job_id.to_owned(), job_end(Ok(outcome), sink)));
            }
        }
        Err(panic) => {
            let msg = panic_message(panic);
            for sink in &sinks {
                ends.push((sink.job_id.to_owned(), job_end(Err(msg.clone()), sink)));
            }
        }
    }
    drop(sinks);
    for id in alone {
        let end = run_job(shared, store, writer, &id, device);
        ends.push((id, end));
    }
    ends
}

/// A job slot's second connection to the store, on a thread of its own: it
/// commits an epoch (its row, its state and the pruner's decision, one
/// transaction, `synchronous = FULL`) while the next epoch trains, so that
/// the wait for the disk overlaps the work. The epochs that wait while one
/// commits (a group of fused heads sends one per head) go in the next
/// transaction together: one wait for the disk for all of them.
struct Writer {
    records: Option<std::sync::mpsc::Sender<EpochRecord>>,
    /// Each record's result, with its job.
    results: std::sync::mpsc::Receiver<(String, Result<(), sweep_store::Error>)>,
    /// Results received while waiting for another job's.
    early: std::cell::RefCell<HashMap<String, Result<(), sweep_store::Error>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The most epochs committed in one transaction.
const MAX_GROUP_COMMIT: usize = 512;

impl Writer {
    fn open(db: &Location) -> Result<Writer, Error> {
        let (records, requests) = std::sync::mpsc::channel::<EpochRecord>();
        let (answer, results) = std::sync::mpsc::channel();
        let db = db.clone();
        let thread = std::thread::Builder::new()
            .name("sweep-writer".to_owned())
            .spawn(move || {
                let mut store = match Store::open(&db) {
                    Ok(store) => {
                        let _ = answer.send((String::new(), Ok(())));
                        store
                    }
                    Err(e) => {
                        let _ = answer.send((String::new(), Err(e)));
                        return;
                    }
                };
                while let Ok(first) = requests.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_GROUP_COMMIT {
                        match requests.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    let written: Vec<Result<(), sweep_store::Error>> = match store.record_epochs(&batch) {
                        Ok(held) => held
                            .iter()
                            .zip(&batch)
                            .map(|(&held, r)| match held {
                                true => Ok(()),
                                false => Err(sweep_store::Error::LeaseLost { job_id: r.job_id.clone() }),
                            })
                            .collect(),
                        Err(e) if batch.len() == 1 => vec![Err(e)],
                        // Nothing was written: one at a time, each with its own result.
                        Err(_) => batch.iter().map(|r| store.record(r)).collect(),
                    };
                    for (r, written) in batch.into_iter().zip(written) {
                        if answer.send((r.job_id, written)).is_err() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| Error::Join(format!("cannot start the store's writer thread: {e}")))?;
        let writer = Writer { records: Some(records), results, early: Default::default(), thread: Some(thread) };
        match writer.results.recv() {
            Ok((_, Ok(()))) => Ok(writer),
            Ok((_, Err(e))) => Err(e.into()),
            Err(_) => Err(Error::Join("the store's writer thread stopped".to_owned())),
        }
    }

    fn send(&self, record: EpochRecord) -> Result<(), SinkError> {
        match &self.records {
            Some(records) if records.send(record).is_ok() => Ok(()),
            _ => Err(WRITER_GONE.into()),
        }
    }

    /// The result of the write sent last for job `job_id` (one at a time
    /// per job); `None` if the thread is gone.
    fn wait(&self, job_id: &str) -> Option<Result<(), sweep_store::Error>> {
        if let Some(result) = self.early.borrow_mut().remove(job_id) {
            return Some(result);
        }
        loop {
            let (id, result) = self.results.recv().ok()?;
            if id == job_id {
                return Some(result);
            }
            self.early.borrow_mut().insert(id, result);
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.records.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const WRITER_GONE: &str = "the store's writer thread stopped";

/// An epoch sent to the [`Writer`], not yet known to be recorded.
struct Pending {
    report: EpochReport,
    /// The size of its state, for a full disk's message.
    bytes: usize,
    /// The pruner's stop sent with it: why, and whether it waits at its rung.
    stop: Option<(String, bool)>,
}

/// Records each epoch and its state in one transaction, renews the lease
/// while training, and stops at Ctrl-C. An epoch is recorded while the next
/// one trains ([`Writer`]): it is reported (the observer, `recorded`) once
/// its transaction has committed, when the next epoch ends or the job does
/// ([`StoreSink::settle`]); a process killed in between resumes from the
/// epoch before, as from any epoch not yet recorded.
struct StoreSink<'a> {
    store: &'a Store,
    writer: &'a Writer,
    /// The epoch being written.
    pending: std::cell::RefCell<Option<Pending>>,
    /// The pruner stopped the job at the epoch being written: train no more.
    stopping: Cell<bool>,
    job_id: &'a str,
    shared: &'a Shared,
    last_renew: Cell<Instant>,
    lost: Cell<bool>,
    /// Recording an epoch failed because the database stayed locked.
    busy: Cell<bool>,
    /// Recording an epoch failed because the disk is full.
    full: Cell<bool>,
    /// Epochs recorded, resumed ones included.
    recorded: Cell<usize>,
    /// The job's epochs.
    epochs: u64,
    /// Set when the pruner stopped the job, to why and whether it waits at
    /// an ASHA rung: it was recorded with its last epoch, and training stops.
    pruned: std::cell::RefCell<Option<(String, bool)>>,
    /// Wait for each epoch's write before returning: fused heads under a
    /// pruner, so that the next head's decision sees this one's epoch, as
    /// it would trained after it. Without a pruner their epochs are written
    /// while the group trains on, each group's in one transaction.
    settle_now: bool,
}

impl<'a> StoreSink<'a> {
    fn new(
        shared: &'a Shared,
        store: &'a Store,
        writer: &'a Writer,
        job_id: &'a str,
        from_epoch: usize,
        epochs: usize,
        settle_now: bool,
    ) -> StoreSink<'a> {
        StoreSink {
            store,
            writer,
            pending: std::cell::RefCell::new(None),
            stopping: Cell::new(false),
            job_id,
            shared,
            last_renew: Cell::new(Instant::now()),
            lost: Cell::new(false),
            busy: Cell::new(false),
            full: Cell::new(false),
            recorded: Cell::new(from_epoch),
            epochs: epochs as u64,
            pruned: std::cell::RefCell::new(None),
            settle_now,
        }
    }

    /// Waits for the epoch being written: once it is recorded, reports it;
    /// when its write failed, says why, as `epoch` would have.
    fn settle(&self) -> Result<(), SinkError> {
        let Some(pending) = self.pending.borrow_mut().take() else { return Ok(()) };
        match self.writer.wait(self.job_id) {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(self.write_failed(e, pending.bytes)),
            None => return Err(WRITER_GONE.into()),
        }
        if let Some((reason, waiting)) = pending.stop {
            tracing::info!(epoch = pending.report.epoch, reason = %reason, waiting, "pruned");
            *self.pruned.borrow_mut() = Some((reason, waiting));
        }
        self.recorded.set(pending.report.epoch);
        self.last_renew.set(Instant::now());
        self.shared.observer.epoch(self.job_id, &pending.report);
        Ok(())
    }

    /// Notes why recording an epoch (of `bytes` of state) failed.
    fn write_failed(&self, e: sweep_store::Error, bytes: usize) -> SinkError {
        self.busy.set(matches!(e, sweep_store::Error::Busy { .. }));
        if matches!(e, sweep_store::Error::Full { .. }) {
            self.full.set(true);
            self.shared.disk_full(bytes);
        }
        e.into()
    }

    /// The pruner's decision after `report`'s epoch, from what the store
    /// holds for the sweep's other trials at that epoch; `None`: go on.
    fn prune_decision(&self, report: &EpochReport) -> Result<Option<crate::pruner::Stop>, sweep_store::Error> {
        let Some(prune) = &self.shared.prune else { return Ok(None) };
        // Hyperband: this job's bracket's rule, against its bracket's trials only.
        let bracket = self.shared.brackets.get(self.job_id).copied();
        let prune = &prune.in_bracket(bracket.unwrap_or(0));
        let epoch = report.epoch as u64;
        if !prune.decides_at(epoch, self.epochs) {
            return Ok(None);
        }
        let objective = self.shared.objective;
        let metric = metric(objective);
        let value = match objective {
            crate::spec::Objective::ValidAcc => report.valid_acc,
            crate::spec::Objective::ValidLoss => report.valid_loss,
            crate::spec::Objective::TrainLoss => report.train_loss,
        };
        let mut own: Vec<f64> = self
            .store
            .epochs(self.job_id)?
            .iter()
            .filter(|e| e.epoch < report.epoch as i64)
            .map(|e| match metric {
                sweep_store::Metric::ValidAcc => e.valid_acc,
                sweep_store::Metric::ValidLoss => e.valid_loss,
                sweep_store::Metric::TrainLoss => e.train_loss,
            })
            .collect();
        own.push(value);
        let others: Vec<(bool, f64)> = self
            .store
            .values_at_epoch(&self.shared.sweep_id, self.job_id, report.epoch as i64, metric)?
            .into_iter()
            .filter(|(id, _, _)| bracket.is_none() || self.shared.brackets.get(id) == bracket.as_ref())
            .map(|(_, status, x)| (status == sweep_store::Status::Done, x))
            .collect();
        let done = self.store.done_jobs(&self.shared.sweep_id)?;
        Ok(prune.decide(objective, epoch, self.epochs, &crate::pruner::Evidence { own: &own, others: &others, done }))
    }
}

impl EpochSink for StoreSink<'_> {
    fn epoch(&mut self, report: &EpochReport, state: &TrainState) -> Result<(), SinkError> {
        // The epoch before is recorded first: the decision below reads it.
        self.settle()?;
        let row = sweep_store::EpochRow {
            epoch: report.epoch as i64,
            train_loss: report.train_loss,
            train_acc: report.train_acc,
            valid_loss: report.valid_loss,
            valid_acc: report.valid_acc,
            lr: report.lr,
            seconds: report.seconds,
        };
        let bytes = state.to_bytes()?;
        // Decided before the epoch is written, and written with it: a
        // decision is never lost between the two, nor made twice.
        let stop = self.prune_decision(report).map_err(|e| self.write_failed(e, 0))?;
        let size = bytes.len();
        let record = EpochRecord {
            job_id: self.job_id.to_owned(),
            owner: self.shared.owner.clone(),
            row,
            state: bytes,
            is_best: report.is_best,
            lease: self.shared.opts.lease,
            stop: stop.as_ref().map(|s| (s.rung.map(|r| r as i64), s.reason.clone(), s.rung.is_some())),
        };
        self.writer.send(record)?;
        // ASHA's stops wait at their rung for a promotion.
        self.stopping.set(stop.is_some());
        *self.pending.borrow_mut() =
            Some(Pending { report: report.clone(), bytes: size, stop: stop.map(|s| (s.reason, s.rung.is_some())) });
        if self.settle_now {
            self.settle()?;
        }
        Ok(())
    }

    fn should_stop(&self) -> bool {
        if self.shared.cancel.is_cancelled() || self.lost.get() || self.stopping.get() || self.pruned.borrow().is_some()
        {
            return true;
        }
        if self.last_renew.get().elapsed() > self.shared.opts.lease / 3 {
            match self.store.renew(self.job_id, &self.shared.owner, self.shared.opts.lease) {
                Ok(()) => self.last_renew.set(Instant::now()),
                Err(sweep_store::Error::Full { .. }) => {
                    self.shared.disk_full(0);
                    return true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stopping the job");
                    self.lost.set(true);
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::{default_slots, owner_is_dead, slot_count};

    /// Issue 17: without `--parallel`, one job per core where the kernels
    /// train a job on one thread, one per GPU, one with pruning.
    #[test]
    fn the_default_slots_are_a_core_each_with_the_kernels_a_device_each_on_gpus_one_with_pruning() {
        let cpu = ["cpu".to_owned()];
        let gpus = ["cuda:0".to_owned(), "cuda:1".to_owned()];
        assert_eq!(default_slots(16, &cpu, false, true), 16);
        assert_eq!(default_slots(16, &cpu, false, false), 1);
        assert_eq!(default_slots(16, &gpus, false, true), 2);
        assert_eq!(default_slots(16, &gpus, false, false), 2);
        for (devices, kernels) in [(&cpu[..], true), (&cpu[..], false), (&gpus[..], true)] {
            assert_eq!(default_slots(16, devices, true, kernels), 1);
        }
    }

    /// Issue 16: `--parallel` past the jobs or the cores.
    #[test]
    fn job_slots_are_capped_by_the_jobs_and_on_cpu_by_the_cores() {
        assert_eq!(slot_count(64, 6, 2, true), 2);
        assert_eq!(slot_count(64, 2, 16, true), 2);
        assert_eq!(slot_count(4, 10, 16, true), 4);
        assert_eq!(slot_count(1, 10, 1, true), 1);
        // On GPUs the cores do not bound the slots; the jobs still do.
        assert_eq!(slot_count(8, 6, 2, false), 6);
        // Never zero, even with nothing to run.
        assert_eq!(slot_count(3, 0, 2, true), 1);
    }

    #[test]
    fn a_lease_owner_is_dead_when_its_process_is_gone_from_this_host() {
        let me = format!("box:{}:0000abcd", std::process::id());
        // Ourselves, and a live process (pid 1), are alive.
        assert!(!owner_is_dead(&me, &me));
        assert!(!owner_is_dead("box:1:00000001", &me));
        // An earlier run with our pid (a restarted container) is not.
        assert!(owner_is_dead(&format!("box:{}:00000002", std::process::id()), &me));
        // A pid that cannot exist.
        assert!(owner_is_dead("box:4294967295:00000001", &me));
        // Another host's runner is never judged from here.
        assert!(!owner_is_dead("elsewhere:4294967295:00000001", &me));
        assert!(!owner_is_dead("garbage", &me));
    }
}
