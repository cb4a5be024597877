//! (in progress)
use crate::cli::GlobalOpts;
use super::{CmdResult, CliError};

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {}

pub async fn run(_args: MigrateArgs, _global: &GlobalOpts) -> CmdResult {
    Err(CliError::usage("in progress"))
}
