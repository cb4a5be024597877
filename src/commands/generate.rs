//! Hidden maintainer command: regenerate `man/` and `completions/` from the clap definition,
//! and `RULES.md` from the policy tables, so they can never drift from the real CLI and rules
//! (a test compares the checked-in files).

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, GlobalOpts};

use super::{CliError, CmdResult, exit};

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Directory that holds `man/` and `completions/`
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out_dir: PathBuf,
}

pub async fn run(args: GenerateArgs, _global: &GlobalOpts) -> CmdResult {
    let files = generated_files().map_err(|e| CliError::io(e.to_string()))?;
    for (rel, content) in files {
        let path = args.out_dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| CliError::io(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&path, content)
            .map_err(|e| CliError::io(format!("{}: {e}", path.display())))?;
        println!("wrote {}", path.display());
    }
    Ok(exit::OK)
}

/// Every generated file as (relative path, content).
pub fn generated_files() -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    let cmd = Cli::command();
    for shell in [
        Shell::Bash,
        Shell::Zsh,
        Shell::Fish,
        Shell::Elvish,
        Shell::PowerShell,
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "timproxy", &mut buf);
        let name = match shell {
            Shell::Bash => "timproxy.bash",
            Shell::Zsh => "_timproxy",
            Shell::Fish => "timproxy.fish",
            Shell::Elvish => "timproxy.elv",
            _ => "_timproxy.ps1",
        };
        files.push((Path::new("completions").join(name), buf));
    }
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    files.push((PathBuf::from("man/timproxy.1"), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("timproxy-{}", sub.get_name());
        let sub = sub.clone().name(&name);
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub).render(&mut buf)?;
        files.push((PathBuf::from(format!("man/{name}.1")), buf));
    }
    let rules = crate::policy::coverage::rules_markdown()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    files.push((PathBuf::from("RULES.md"), rules.into_bytes()));
    Ok(files)
}
