//! One module per subcommand.

pub mod plan;
pub mod run;
pub mod table;
