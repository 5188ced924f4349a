//! The command line, as clap types, in one place. Each subcommand's module in
//! `commands/` reads its own arguments struct; nothing else parses arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Hyperparameter sweeps for transfer-learning image classifiers: a frozen
/// backbone's features are computed once, then every configuration trains
/// only its head.
#[derive(Debug, Parser)]
#[command(name = "sweep", bin_name = "sweep", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The database that records sweeps, jobs and epochs: an SQLite file
    /// (PATH or sqlite:PATH), or PostgreSQL (postgres://USER@HOST[:PORT]/DB;
    /// the password from the URL, PGPASSWORD or ~/.pgpass).
    #[arg(long, global = true, env = "SWEEP_DB", default_value = "sweep.db", value_name = "PATH|URL", value_parser = DbParser)]
    pub db: sweep_store::Location,

    /// More log detail on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr, no progress.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit a sweep file and run its unfinished jobs, then print the table.
    Run(RunArgs),
    /// Continue an interrupted sweep from each job's last recorded epoch.
    Resume(ResumeArgs),
    /// Register a sweep file's sweep and jobs without running them; print its id (for `sweep worker`).
    Submit(SubmitArgs),
    /// Claim and train jobs of submitted sweeps until none is left (one per node, or per Slurm task).
    Worker(WorkerArgs),
    /// Write (and with --submit, submit) a Slurm job array of `sweep worker`s for a sweep file.
    Slurm(SlurmArgs),
    /// Show the jobs a sweep file expands to, without running anything.
    Plan(PlanArgs),
    /// One row per job of a sweep: hyperparameters and best validation accuracy.
    Table(TableArgs),
    /// The best job's complete configuration, as a [train] section to paste into a sweep file.
    Best(BestArgs),
    /// Every recorded epoch of one job.
    Show(ShowArgs),
    /// Each sweep with its job counts by status.
    Status(StatusArgs),
    /// Write the train/valid split (or folds) a sweep used as a CSV file that `[data] split` reads.
    Split(SplitArgs),
    /// Learning curves of a sweep's jobs, or best accuracy by one hyperparameter, as a PNG.
    Plot(PlotArgs),
    /// Write a sweep's jobs, epochs, sweep file and best heads to a folder.
    Export(ExportArgs),
    /// Write generated labelled images as JPEG files in the Kaggle layout (for benchmarks).
    Synth(SynthArgs),
    /// Write seeded random features into the feature cache for a sweep file's data and model,
    /// as its backbone pass would cache them, without the pass: head training and memory
    /// measured at a million images (bench/scale.sh).
    #[command(hide = true)]
    SynthFeatures(SynthFeaturesArgs),
    /// Measure decode, backbone and head speed and the seed table end to end, as JSON.
    Bench(BenchArgs),
    /// Serve a live, read-only dashboard of the database on a local web page.
    Serve(ServeArgs),
    /// How much each hyperparameter explains of a sweep's best valid accuracy.
    Importance(ImportanceArgs),
    /// Print the JSON Schema of sweep files (committed as sweeps/sweep.schema.json), for editors.
    Schema,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Jobs to train at once [default: one per core on a CPU, one per GPU; one with [prune]].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: Option<u16>,

    /// Devices: cpu, cuda, cuda:N, or a comma-separated list (jobs share them; the backbone pass is split across them).
    #[arg(long, default_value = "cpu", value_delimiter = ',', value_name = "DEVICE")]
    pub device: Vec<String>,

    /// Where backbone features are cached [default: sweep-cache/ beside the database].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Make failed jobs runnable again.
    #[arg(long)]
    pub retry_failed: bool,

    /// Split a backbone pass over more images than this into shards that every runner of the sweep shares.
    #[arg(long, default_value_t = sweep_scheduler::DEFAULT_SHARD_IMAGES as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_images: u64,

    /// Refuse sweeps that expand past this many jobs.
    #[arg(long, default_value_t = sweep_scheduler::DEFAULT_MAX_JOBS, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=sweep_scheduler::MAX_JOBS_CEILING))]
    pub max_jobs: u64,

    /// Skip the sanity check before the backbone pass (that the weights'
    /// batch norms see, on 32 of the images, what they were trained on: a
    /// wrong normalisation stops the run).
    #[arg(long)]
    pub no_sanity_check: bool,

    /// Train the heads of jobs that see the same mini-batches (same fold, batch size, seed and loss) as
    /// one group: one product for up to 256 heads [default: on a GPU; on a CPU a head alone on a core is faster].
    #[arg(long, conflicts_with = "no_fuse")]
    pub fuse: bool,

    /// Train every job's head alone, even on a GPU.
    #[arg(long)]
    pub no_fuse: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The sweep file (.toml or .json).
    pub file: PathBuf,

    #[command(flatten)]
    pub exec: ExecArgs,

    /// Output format of the final table.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// A sweep's name or id [default: the latest sweep].
    pub sweep: Option<String>,

    /// Start this job (its id, or a unique prefix) again from epoch 0: its
    /// recorded epochs and checkpoints are deleted first. For a job whose
    /// last checkpoint is damaged. May be given more than once.
    #[arg(long, value_name = "JOB")]
    pub restart: Vec<String>,

    #[command(flatten)]
    pub exec: ExecArgs,

    /// Output format of the final table.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The sweep file (.toml or .json).
    pub file: PathBuf,

    /// Refuse sweeps that expand past this many jobs.
    #[arg(long, default_value_t = sweep_scheduler::DEFAULT_MAX_JOBS, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=sweep_scheduler::MAX_JOBS_CEILING))]
    pub max_jobs: u64,

    /// Skip the check that the weights' first batch norms see, on 32 of the images, what they were trained on.
    #[arg(long)]
    pub no_sanity_check: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Only this sweep (a name, an id or a unique prefix) [default: any sweep with work, the oldest first].
    #[arg(long, value_name = "SWEEP")]
    pub sweep: Option<String>,

    /// Claim at most this many jobs, then exit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_jobs: Option<u64>,

    /// Exit after this many seconds with nothing to claim [default: 0, at once]. With --sweep, a worker
    /// also exits when that sweep has no unfinished job.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub idle_exit: u64,

    /// Jobs to train at once [default: one per core on a CPU, one per GPU; one with [prune]].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: Option<u16>,

    /// Devices: cpu, cuda, cuda:N, or a comma-separated list (jobs share them; the backbone pass is split across them).
    #[arg(long, default_value = "cpu", value_delimiter = ',', value_name = "DEVICE")]
    pub device: Vec<String>,

    /// The feature cache, shared by every worker (a path every node sees) [default: sweep-cache/ beside the database].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Split a backbone pass over more images than this into shards that every runner of the sweep shares.
    #[arg(long, default_value_t = sweep_scheduler::DEFAULT_SHARD_IMAGES as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_images: u64,

    /// Skip the check that the weights' first batch norms see, on 32 of the images, what they were trained on.
    #[arg(long)]
    pub no_sanity_check: bool,

    /// Train the heads of jobs that see the same mini-batches (same fold, batch size, seed and loss) as
    /// one group: one product for up to 256 heads [default: on a GPU; on a CPU a head alone on a core is faster].
    #[arg(long, conflicts_with = "no_fuse")]
    pub fuse: bool,

    /// Train every job's head alone, even on a GPU.
    #[arg(long)]
    pub no_fuse: bool,
}

#[derive(Debug, Args)]
pub struct SlurmArgs {
    /// The sweep file (.toml or .json): it is submitted (registered) first.
    pub file: PathBuf,

    /// Array tasks, each one `sweep worker`.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub workers: u32,

    /// GPUs per task (`--gres=gpu:N`); 0 for CPU workers.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub gpus_per_worker: u32,

    /// CPUs per task.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub cpus_per_worker: u32,

    /// Each task's time limit (Slurm's `--time`).
    #[arg(long, default_value = "02:00:00", value_name = "TIME")]
    pub time: String,

    /// Slurm partition.
    #[arg(long, value_name = "P")]
    pub partition: Option<String>,

    /// Slurm account.
    #[arg(long, value_name = "A")]
    pub account: Option<String>,

    /// An extra line for the script's header (e.g. "#SBATCH --qos=high"); may be given more than once.
    #[arg(long, value_name = "LINE")]
    pub extra: Vec<String>,

    /// The feature cache every task uses: a folder on a file system every node sees [default: sweep-cache/ beside the database].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Each worker exits after this many seconds with nothing to claim.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub idle_exit: u64,

    /// Where to write the script [default: sweep-NAME.sbatch in the current folder].
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// Where each task writes its log (Slurm's `--output`) [default: slurm-%A_%a.out beside the script].
    #[arg(long, value_name = "PATTERN")]
    pub log: Option<String>,

    /// Submit the script with sbatch after writing it.
    #[arg(long)]
    pub submit: bool,

    /// Refuse sweeps that expand past this many jobs.
    #[arg(long, default_value_t = sweep_scheduler::DEFAULT_MAX_JOBS, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=sweep_scheduler::MAX_JOBS_CEILING))]
    pub max_jobs: u64,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The sweep file (.toml or .json).
    pub file: PathBuf,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Refuse sweeps that expand past this many jobs.
    #[arg(long, default_value_t = sweep_scheduler::DEFAULT_MAX_JOBS, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=sweep_scheduler::MAX_JOBS_CEILING))]
    pub max_jobs: u64,

    /// Where features would be cached, checked for room [default: sweep-cache/ beside the database].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Only expand the file: do not check the data, the weights, the split and the cache folder.
    #[arg(long)]
    pub no_check: bool,
}

#[derive(Debug, Args)]
pub struct SplitArgs {
    /// A sweep's name or id [default: the latest sweep].
    pub sweep: Option<String>,

    /// The CSV file to write (`id,set` or `id,set,fold`) [default: stdout].
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TableArgs {
    /// A sweep's name or id [default: the latest sweep].
    pub sweep: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Sort by this column or setting (accuracies best first, the rest ascending) [default: the sweep's objective, best first].
    #[arg(long, value_name = "COLUMN")]
    pub sort: Option<String>,
}

#[derive(Debug, Args)]
pub struct BestArgs {
    /// A sweep's name or id [default: the latest sweep].
    pub sweep: Option<String>,

    /// Output format: a `[train]` section (TOML) or JSON.
    #[arg(long, value_enum, default_value_t = BestFormat::Toml)]
    pub format: BestFormat,
}

/// The formats of `sweep best`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BestFormat {
    /// A `[train]` section, its score in a comment.
    Toml,
    /// `{"sweep", "job_id", "objective", "score", "train"}`.
    Json,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A job's id (or a unique prefix of it).
    pub job: String,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// The train keys of a sweep file (`sweep_scheduler::TrainKey::ALL`; a
/// unit test keeps them equal).
pub const TRAIN_KEYS: [&str; 11] = [
    "batch_size",
    "workers",
    "lr",
    "momentum",
    "epochs",
    "optimizer",
    "weight_decay",
    "step_size",
    "gamma",
    "seed",
    "loss",
];

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// A sweep's name or id [default: the latest sweep].
    pub sweep: Option<String>,

    /// The PNG to write.
    #[arg(long, value_name = "FILE.png")]
    pub out: PathBuf,

    /// Plot best valid accuracy against this hyperparameter (any train key)
    /// instead of learning curves; a log axis for keys sampled log_uniform.
    #[arg(long, value_name = "KEY", value_parser = TRAIN_KEYS)]
    pub by: Option<String>,

    /// With --by: one line per value of this hyperparameter [default: the first other one that varies].
    #[arg(long, value_name = "KEY", requires = "by", value_parser = TRAIN_KEYS)]
    pub series: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on; another than loopback makes the page reachable from other machines.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub bind: std::net::SocketAddr,

    /// Open the page in a browser (xdg-open) once listening.
    #[arg(long)]
    pub open: bool,
}

#[derive(Debug, Args)]
pub struct ImportanceArgs {
    /// A sweep's name or id [default: the latest sweep].
    pub sweep: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A sweep's name or id [default: the latest sweep].
    pub sweep: Option<String>,

    /// The folder to write (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct SynthFeaturesArgs {
    /// The sweep file whose data and model the features stand for.
    pub file: PathBuf,

    /// The feature cache to write the entry into.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: PathBuf,

    /// Seed of the generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// The folder to write `labels.csv` and `train/` into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Number of classes.
    #[arg(long, default_value_t = 120)]
    pub classes: usize,

    /// Number of images (the paper's data set has 10,222).
    #[arg(long, default_value_t = 10_222)]
    pub images: usize,

    /// Image width.
    #[arg(long, default_value_t = 500)]
    pub width: u32,

    /// Image height.
    #[arg(long, default_value_t = 375)]
    pub height: u32,

    /// Seed of the generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// JPEG quality.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,

    /// A Kaggle-layout data set to use [default: generated in the work folder].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,

    /// Where the generated data, database and cache go [default: a new temporary folder].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,

    /// Images to generate (the paper's data set has 10,222).
    #[arg(long, default_value_t = 10_222)]
    pub images: usize,

    /// Classes to generate.
    #[arg(long, default_value_t = 120)]
    pub classes: usize,

    /// Width of generated images.
    #[arg(long, default_value_t = 500)]
    pub width: u32,

    /// Height of generated images.
    #[arg(long, default_value_t = 375)]
    pub height: u32,

    /// Images timed for decode + preprocess.
    #[arg(long, default_value_t = 400)]
    pub decode_images: usize,

    /// Backbone precisions to time; the first is used end to end.
    #[arg(long, default_value = "f32", value_delimiter = ',')]
    pub dtypes: Vec<String>,

    /// Images per backbone batch.
    #[arg(long, default_value_t = 32)]
    pub backbone_batch: usize,

    /// Backbone batches timed (after one warm-up batch).
    #[arg(long, default_value_t = 4)]
    pub backbone_batches: usize,

    /// Skip the seed table end to end.
    #[arg(long)]
    pub skip_end_to_end: bool,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// Comma-separated values with a header.
    Csv,
    /// A JSON array of objects with snake_case keys.
    Json,
    /// A Markdown table.
    Markdown,
}

/// Parses `--db` into a location. Not clap's `FromStr` parser: its error
/// quotes the value as given, and a PostgreSQL URL's password must never be
/// printed; this one names the URL without it.
#[derive(Debug, Clone, Copy)]
struct DbParser;

impl clap::builder::TypedValueParser for DbParser {
    type Value = sweep_store::Location;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<sweep_store::Location, clap::Error> {
        let invalid =
            |message: String| clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).with_cmd(cmd);
        let text = value.to_str().ok_or_else(|| invalid("invalid --db: not UTF-8\n".to_owned()))?;
        sweep_store::Location::parse(text).map_err(|e| invalid(format!("invalid --db: {e}\n")))
    }
}
