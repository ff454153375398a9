//! `patchd completions` and `patchd man`: shell completion scripts and man pages, generated
//! from the clap command the CLI itself parses, so they never list a flag patchd lacks.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionShell, CompletionsArgs, ManArgs};
use crate::failure::Failure;

/// The name the scripts complete, and the first word of every man page's name.
const BIN_NAME: &str = "patchd";

/// Prints the completion script of one shell on standard output.
pub fn completions(args: &CompletionsArgs) -> Result<(), Failure> {
    let shell = match args.shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    // Generated into memory first: clap_complete panics on a failed write, and a closed pipe
    // (`patchd completions bash | head`) is an ordinary error here.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN_NAME, &mut script);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&script).and_then(|()| stdout.flush()).context("cannot write the script")?;
    Ok(())
}

/// Writes patchd.1 and a page per subcommand, nested ones included, into an existing
/// directory, and prints each path written.
pub fn man(args: &ManArgs) -> Result<(), Failure> {
    let dir = &args.out;
    if !dir.is_dir() {
        let why = if dir.exists() { "is not a directory" } else { "does not exist" };
        return Err(anyhow!(
            "cannot write man pages into {}: it {why}; create it first (e.g. `mkdir -p {}`)",
            dir.display(),
            dir.display()
        )
        .into());
    }
    let mut command = Cli::command().bin_name(BIN_NAME).disable_help_subcommand(true);
    // Gives every subcommand its display name (patchd-db-status), which names its page.
    command.build();
    let mut written = Vec::new();
    write_pages(&command, dir, &mut written)?;
    let mut stdout = std::io::stdout().lock();
    for path in &written {
        writeln!(stdout, "{}", path.display()).context("cannot write to standard output")?;
    }
    writeln!(
        stdout,
        "{} man pages written; `man -l {}` reads one",
        written.len(),
        dir.join("patchd.1").display()
    )
    .context("cannot write to standard output")?;
    Ok(())
}

/// The page of `command`, then those of its subcommands, depth first.
fn write_pages(command: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    // The source is the program and its version on every page (clap_mangen's default names
    // the subcommand: "status 0.1.0").
    let page = clap_mangen::Man::new(command.clone())
        .source(format!("{BIN_NAME} {}", env!("CARGO_PKG_VERSION")))
        .manual("patchd manual");
    let path = dir.join(page.get_filename());
    let mut text = Vec::new();
    page.render(&mut text).context("cannot render a man page")?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
