//! `timproxy serve`: the whole proxy stack in one process ([`crate::server`]).

use crate::cli::GlobalOpts;
use crate::server::{Server, StartError, StartOptions, Stopped};

use super::{CliError, CmdResult, exit, load_config};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Do not apply pending database migrations on start
    #[arg(long)]
    pub no_migrate: bool,
}

pub async fn run(args: ServeArgs, global: &GlobalOpts) -> CmdResult {
    let (config, path) = load_config(global)?;
    let options = StartOptions {
        config_path: path,
        skip_migrations: args.no_migrate,
        log: crate::logging::installed(),
    };
    let server = Server::start(config, options).await.map_err(|e| match e {
        StartError::Config(message) => CliError::usage(message),
        e @ StartError::NewerDatabase(_) => CliError::failed(e.to_string())
            .with_hint("upgrade timproxy, or point database.url at the right database"),
        StartError::Io(message) => CliError::io(message),
    })?;
    Ok(match server.run().await {
        Stopped::Clean => exit::OK,
        Stopped::ListenerFailed => exit::IO,
    })
}
