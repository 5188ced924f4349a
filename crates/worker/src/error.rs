use std::path::PathBuf;

/// Everything that can go wrong in the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data file is missing, unreadable or malformed.
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Data {
        /// The file at fault.
        path: PathBuf,
        /// 1-based line, for CSV files.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// An image could not be read or decoded.
    #[error("{path}: cannot decode image: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// Images failed the check before the backbone pass: every one is listed.
    #[error(transparent)]
    BadImages(#[from] crate::BadImages),
    /// A weights file does not fit the backbone.
    #[error("{path}: {message}")]
    Weights {
        /// The weights file (or hub repo).
        path: String,
        /// What does not fit.
        message: String,
    },
    /// The backbone gave an image NaN or infinite features.
    #[error("{image}: {message}")]
    Features {
        /// The image: its file, or `synthetic image N`.
        image: String,
        /// What is wrong.
        message: String,
    },
    /// A backbone pass would need more memory than there is.
    #[error("{what}: {message}")]
    Memory {
        /// The data set (its labels file or folder, or `synthetic data`).
        what: String,
        /// The sizes: needed, of what, and available.
        message: String,
    },
    /// The feature cache could not be read or written.
    #[error("feature cache {path}: {message}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Training diverged.
    #[error("epoch {epoch}: the {phase} loss is {value}: training diverged (try a smaller lr)")]
    NonFinite {
        /// 1-based epoch.
        epoch: usize,
        /// `train` or `valid`.
        phase: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A saved training state does not fit this job.
    #[error("checkpoint: {0}")]
    State(String),
    /// The device asked for is not available.
    #[error("{0}")]
    Device(String),
    /// The caller's sink failed.
    #[error("recording the epoch failed: {0}")]
    Sink(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A tensor operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}
