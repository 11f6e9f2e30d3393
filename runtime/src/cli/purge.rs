//! `celeriac purge`: Celery's `celery purge`, on any of Celeriac's brokers.
//!
//! Same options (`-f/--force`, `-Q`, `-X`), same confirmation prompt and the
//! same output ("Purged 3 messages from 1 known task queue."), so scripts
//! written around `celery purge` read it unchanged. The known task queues are
//! `task_default_queue`, or the `-Q` list; `-X` removes from them.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::Args;

use super::{GlobalArgs, runtime};

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Don't prompt for verification.
    #[arg(short = 'f', long, help_heading = "Purging Options")]
    force: bool,
    /// Comma separated list of queue names to purge.
    #[arg(short = 'Q', long, value_delimiter = ',', help_heading = "Purging Options")]
    queues: Vec<String>,
    /// Comma separated list of queue names not to purge.
    #[arg(short = 'X', long, value_delimiter = ',', help_heading = "Purging Options")]
    exclude_queues: Vec<String>,
}

/// Celery's `text.pluralize`: `queue` / `queues`.
pub fn pluralize(n: u64, word: &str) -> String {
    if n == 1 { word.to_string() } else { format!("{word}s") }
}

/// The line `celery purge` prints after purging `messages` from `queues` queues.
pub fn purged_line(messages: u64, queues: u64) -> String {
    let q = pluralize(queues, "queue");
    if messages > 0 {
        format!("Purged {messages} {} from {queues} known task {q}.", pluralize(messages, "message"))
    } else {
        format!("No messages purged from {queues} {q}.")
    }
}

/// Ask as `click.confirm(..., abort=True)` does; anything but y/yes is no.
fn confirm(names: &[String]) -> bool {
    let n = names.len() as u64;
    // Celery's own text (click prints the prompt on stdout).
    print!(
        "WARNING:This will remove all tasks from {}: {}.\n         There is no undo for this operation!\n\n\
         (to skip this prompt use the -f option)\nAre you sure you want to delete all tasks? [y/N]: ",
        pluralize(n, "queue"),
        names.join(", ")
    );
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

pub fn purge(g: &GlobalArgs, a: PurgeArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init("WARNING").map_err(anyhow::Error::msg)?;
    let settings = g.settings()?;
    let mut names = if a.queues.is_empty() { vec![settings.task_default_queue.clone()] } else { a.queues.clone() };
    names.retain(|q| !q.is_empty() && !a.exclude_queues.contains(q));
    names.sort();
    names.dedup();
    if names.is_empty() {
        // Celery prints nothing when every queue is excluded.
        return Ok(ExitCode::SUCCESS);
    }
    if !a.force && !confirm(&names) {
        eprintln!("Aborted!");
        return Ok(ExitCode::from(1));
    }
    let url = settings.effective_broker_url();
    let purged = runtime()?.block_on(async {
        let broker = crate::broker::Broker::connect_with_settings(&url, &settings, "celeriac purge").await?;
        let mut total = 0;
        for q in &names {
            total += broker.purge(q).await?;
        }
        broker.close().await;
        anyhow::Ok(total)
    })?;
    println!("{}", purged_line(purged, names.len() as u64));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_line_is_celerys() {
        assert_eq!(purged_line(3, 1), "Purged 3 messages from 1 known task queue.");
        assert_eq!(purged_line(1, 2), "Purged 1 message from 2 known task queues.");
        assert_eq!(purged_line(0, 1), "No messages purged from 1 queue.");
    }
}
