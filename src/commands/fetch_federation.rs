//! (in progress)
use crate::cli::GlobalOpts;
use super::{CmdResult, CliError};

#[derive(Debug, clap::Args)]
pub struct FetchFederationArgs {}

pub async fn run(_args: FetchFederationArgs, _global: &GlobalOpts) -> CmdResult {
    Err(CliError::usage("in progress"))
}
