//! (in progress)
use crate::cli::GlobalOpts;
use super::{CmdResult, CliError};

#[derive(Debug, clap::Args)]
pub struct SpecCheckArgs {}

pub async fn run(_args: SpecCheckArgs, _global: &GlobalOpts) -> CmdResult {
    Err(CliError::usage("in progress"))
}
