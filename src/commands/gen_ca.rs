//! (in progress)
use crate::cli::GlobalOpts;
use super::{CmdResult, CliError};

#[derive(Debug, clap::Args)]
pub struct GenCaArgs {}

pub async fn run(_args: GenCaArgs, _global: &GlobalOpts) -> CmdResult {
    Err(CliError::usage("in progress"))
}
