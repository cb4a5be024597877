//! (in progress)
use crate::cli::GlobalOpts;
use super::{CmdResult, CliError};

#[derive(Debug, clap::Args)]
pub struct CheckHealthArgs {}

pub async fn run(_args: CheckHealthArgs, _global: &GlobalOpts) -> CmdResult {
    Err(CliError::usage("in progress"))
}
