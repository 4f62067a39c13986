//! `tone shell`: interactive SQL with line editing, history and statements
//! that span lines up to a `;`.

use std::path::PathBuf;

use clap::Args;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use super::output::OutputFormat;
use super::sql::run_script;
use super::tables::TableArgs;
use super::CliError;

#[derive(Debug, Args)]
#[command(
    after_help = "Inside the shell: end a statement with ';'. \\q or quit leaves; \\d lists tables."
)]
pub struct ShellArgs {
    #[command(flatten)]
    pub tables: TableArgs,
    /// Output format of result rows.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

pub async fn run(args: ShellArgs) -> Result<(), CliError> {
    let engine = args.tables.engine().await?;
    let mut editor = DefaultEditor::new()
        .map_err(|error| CliError::Usage(format!("cannot start the line editor: {error}")))?;
    let history = history_path();
    if let Some(path) = &history {
        // A missing history file is normal on first use.
        let _ = editor.load_history(path);
    }
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() {
            "tone> "
        } else {
            "  ... "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(CliError::Usage(format!("reading input: {error}"))),
        };
        let trimmed = line.trim();
        if pending.is_empty() {
            match trimmed {
                "" => continue,
                "\\q" | "quit" | "exit" => break,
                "\\d" => {
                    report(run_script(&engine, "show tables", args.format).await);
                    continue;
                }
                _ => {}
            }
        }
        pending.push_str(&line);
        pending.push('\n');
        if trimmed.ends_with(';') {
            let _ = editor.add_history_entry(pending.trim_end());
            report(run_script(&engine, &pending, args.format).await);
            pending.clear();
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// Errors are shown and the shell goes on.
fn report(outcome: Result<(), CliError>) {
    if let Err(error) = outcome {
        eprintln!("tone: error: {error}");
    }
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".tone_history"))
}
