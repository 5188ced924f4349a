//! What a sweep file can get wrong: [`SpecError`]s, collected into one
//! [`SpecErrors`] per file, and [`TooManyJobs`] for a sweep too big to expand.

use std::fmt;
use std::path::PathBuf;

use super::MAX_JOBS_CEILING;

/// One problem in a sweep file.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    /// The sweep file.
    pub file: PathBuf,
    /// 1-based line, where known (TOML).
    pub line: Option<usize>,
    /// Dotted key path, such as `grid.lr[2]`; empty for the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in one sweep file.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// A sweep that would expand past the job limit.
#[derive(Debug, Clone, PartialEq)]
pub struct TooManyJobs {
    /// Jobs the sweep would make (before de-duplication), counted without
    /// expanding it; `u64::MAX` when the count does not fit in 64 bits.
    pub count: u64,
    /// The limit in force: the caller's, at most [`MAX_JOBS_CEILING`].
    pub limit: u64,
}

impl fmt::Display for TooManyJobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == u64::MAX {
            write!(f, "the sweep expands to at least {} jobs", u64::MAX)?;
        } else {
            write!(f, "the sweep expands to {} jobs", self.count)?;
        }
        write!(f, ", more than the limit of {}", self.limit)?;
        if self.count > MAX_JOBS_CEILING {
            write!(f, " (--max-jobs can raise it to {MAX_JOBS_CEILING} at most)")
        } else {
            write!(f, " (raise it with --max-jobs)")
        }
    }
}

impl std::error::Error for TooManyJobs {}
