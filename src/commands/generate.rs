//! (in progress)
use crate::cli::GlobalOpts;
use super::{CmdResult, CliError};

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {}

pub async fn run(_args: GenerateArgs, _global: &GlobalOpts) -> CmdResult {
    Err(CliError::usage("in progress"))
}
