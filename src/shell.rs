//! `seedwatch query` without a statement: an interactive SQL shell over the archive, as
//! the DataFusion and DuckDB CLIs have. Statements end with `;` and may span lines; `\d`
//! lists the tables and views, `\d NAME` a table's columns, `\q` quits. On a terminal
//! the line editor keeps a history in `~/.seedwatch_history`; from a pipe it reads
//! statements as a script (what the tests do).

use std::io::IsTerminal;
use std::path::PathBuf;

use datafusion::prelude::SessionContext;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use seedwatch_archive::query::{format_batches, run_user_query};
use seedwatch_archive::OutputFormat;

const HELP: &str = "statements end with `;` and may span lines\n  \\d          tables and views\n  \\d NAME     a table's columns and types\n  \\q          quit (or Ctrl-D)";

/// Why the shell stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The terminal could not be read.
    #[error("reading the terminal: {0}")]
    Terminal(#[from] ReadlineError),
}

/// Read and run statements until `\q` or the end of input; a statement that fails prints
/// its error and the shell goes on.
pub async fn run(ctx: &SessionContext, format: OutputFormat) -> Result<(), ShellError> {
    let interactive = std::io::stdin().is_terminal();
    let mut editor = DefaultEditor::new()?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".seedwatch_history"));
    if interactive {
        if let Some(path) = &history {
            // A missing history file is the first run.
            let _ = editor.load_history(path);
        }
        println!("seedwatch SQL over the archive; \\? for help, \\q to quit");
    }
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() { "seedwatch> " } else { "        -> " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                // Ctrl-C drops the statement being typed, as psql does.
                statement.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if statement.is_empty() && trimmed.starts_with('\\') {
            if interactive {
                let _ = editor.add_history_entry(trimmed);
            }
            match command(ctx, trimmed, format).await {
                Command::Quit => break,
                Command::Printed => continue,
            }
        }
        if trimmed.is_empty() && statement.is_empty() {
            continue;
        }
        statement.push_str(&line);
        statement.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut statement);
        if interactive {
            let _ = editor.add_history_entry(sql.trim());
        }
        print_query(ctx, sql.trim().trim_end_matches(';'), format).await;
    }
    if !statement.trim().is_empty() {
        // Input ended in the middle of a statement: run what there is.
        print_query(ctx, statement.trim().trim_end_matches(';'), format).await;
    }
    if interactive {
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
    }
    Ok(())
}

enum Command {
    Quit,
    Printed,
}

/// A backslash command.
async fn command(ctx: &SessionContext, line: &str, format: OutputFormat) -> Command {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("\\q"), _) => return Command::Quit,
        (Some("\\d"), None) => {
            print_query(ctx, "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_type, table_name", format).await;
        }
        (Some("\\d"), Some(table)) => {
            let table = table.trim_end_matches(';').replace('\'', "''");
            let sql = format!("SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '{table}' ORDER BY ordinal_position");
            match run_user_query(ctx, &sql).await {
                Ok(batches) if batches.iter().all(|b| b.num_rows() == 0) => eprintln!("error: no table or view `{table}` (\\d lists them)"),
                Ok(batches) => print_batches(&batches, format),
                Err(e) => eprintln!("error: {e}"),
            }
        }
        _ => eprintln!("{HELP}"),
    }
    Command::Printed
}

async fn print_query(ctx: &SessionContext, sql: &str, format: OutputFormat) {
    match run_user_query(ctx, sql).await {
        Ok(batches) => print_batches(&batches, format),
        Err(e) => eprintln!("error: {e}"),
    }
}

fn print_batches(batches: &[datafusion::arrow::record_batch::RecordBatch], format: OutputFormat) {
    match format_batches(batches, format) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: {e}"),
    }
}
