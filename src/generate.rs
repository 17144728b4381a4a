//! `auditsink completions SHELL` and `auditsink man`: shell completions and
//! man pages generated from the CLI definition itself, so they always match
//! the commands and options of this binary.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Write auditsink.1 and a page per subcommand (auditsink-serve.1, ...)
    /// into this directory (e.g. ~/.local/share/man/man1) instead of
    /// printing auditsink.1 to stdout.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Prints the completion script of `command` for the shell asked for.
pub fn completions(args: CompletionsArgs, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "auditsink", &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("writing the completions")?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the man page of `command`, or writes every page into a directory.
pub fn man(args: ManArgs, command: clap::Command) -> anyhow::Result<ExitCode> {
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("writing the man pages into {}", dir.display()))?;
            eprintln!("auditsink: man pages written to {}", dir.display());
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(command).render(&mut out)?;
            std::io::stdout()
                .write_all(&out)
                .context("writing the man page")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
