//! One module per subcommand.

pub mod bench;
pub mod best;
pub mod export;
pub mod importance;
pub mod plan;
pub mod plot;
pub mod run;
pub mod serve;
pub mod slurm;
pub mod split;
pub mod synth;
pub mod table;
pub mod worker;
