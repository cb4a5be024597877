//! (in progress)
use crate::cli::GlobalOpts;
use super::{CmdResult, CliError};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

pub async fn run(_args: ServeArgs, _global: &GlobalOpts) -> CmdResult {
    Err(CliError::usage("in progress"))
}
