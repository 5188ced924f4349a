//! Issue 16, hostile inputs: settings past what the machine has, and
//! strings and ids from files and databases that would otherwise drive the
//! terminal or the file system.

use crate::run::TINY;
use crate::{stderr, Env};

/// `--parallel 64` on a two-job sweep: more slots than jobs (or cores) only
/// made the jobs fight for the cores (45 times as long). The slots are
/// capped, and the run says so in one line.
#[test]
fn parallel_past_the_jobs_and_cores_is_capped_with_one_line() {
    let env = Env::new();
    let file = env.write("tiny.toml", TINY);
    let out = env.sweep(&["run", file.to_str().unwrap(), "--parallel", "64"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let line = err.lines().find(|l| l.starts_with("--parallel 64: using ")).unwrap_or_else(|| panic!("{err}"));
    let used: usize = line["--parallel 64: using ".len()..].split(' ').next().unwrap().parse().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(used, cores.min(2), "{line}");
    assert!(line.ends_with(" cores, 2 jobs to run)") || line.ends_with(" core, 2 jobs to run)"), "{line}");
    // The default, one slot, says nothing.
    let again = env.sweep(&["--db", "again.db", "run", file.to_str().unwrap()]);
    assert!(again.status.success() && !stderr(&again).contains("--parallel"), "{}", stderr(&again));
}
