//! Hints for a Celery user's habits, added to clap's own errors.
//!
//! Celery users type `celery` commands from memory: `celeriac beat`,
//! `celeriac call tasks.add -Q q`, `celeriac -l INFO worker`. clap alone
//! answers with a bare "unexpected argument"; this module adds a `tip:` line
//! that names the option or command that does what they meant, and points the
//! Celery commands Celeriac does not have at the `celery` CLI, which works
//! against a Celeriac worker (same broker, same messages).

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// The Celery commands this binary leaves to the `celery` CLI, for `--help`.
pub const CELERY_COMMANDS_HELP: &str = "\
Celery's other commands (list bindings, shell, beat, multi, migrate, upgrade, amqp, graph, logtool):
use the celery CLI; it works against Celeriac (same broker, same messages), e.g.
  celery -b redis://localhost:6379/0 beat";

/// Celery commands with no Celeriac counterpart, and what to run instead.
const CELERY_ONLY: &[(&str, &str)] = &[
    ("list", "celery -b URL list bindings"),
    ("shell", "celery -A proj shell (a Python shell with your Celery app)"),
    ("beat", "celery -A proj -b URL beat (it sends periodic tasks that this worker serves)"),
    ("multi", "celery multi, with `celeriac worker --detach --pidfile` for each node, or a service manager"),
    ("migrate", "celery migrate SOURCE_URL DEST_URL"),
    ("upgrade", "celery upgrade settings FILE"),
    ("amqp", "celery -b URL amqp"),
    ("graph", "celery graph"),
    ("logtool", "celery logtool"),
];

/// A tip for a command or option a Celery user typed in the wrong place, or
/// one that Celeriac leaves to the `celery` CLI; `None` when clap's own
/// message says it all.
pub fn hint(kind: ErrorKind, argv: &[String], offending: Option<&str>) -> Option<String> {
    let sub = subcommand(argv);
    let bad = offending.unwrap_or_default();
    let flag = bad.split('=').next().unwrap_or(bad);
    if kind == ErrorKind::InvalidSubcommand
        && let Some((name, instead)) = CELERY_ONLY.iter().find(|(n, _)| *n == bad)
    {
        return Some(format!(
            "`{name}` is a celery command Celeriac leaves to the celery CLI; it works against Celeriac: {instead}"
        ));
    }
    if kind != ErrorKind::UnknownArgument {
        return None;
    }
    let sub = if before_subcommand(argv, flag) { None } else { sub };
    let tip = match (sub.as_deref(), flag) {
        (Some("call"), "-Q" | "--queues") => "celeriac call sends to one queue: --queue NAME (-Q is the worker's)",
        (Some("call"), "--wait-result" | "--get") => "wait for the result with --wait [--timeout SECS]",
        (Some("worker"), "--queue") => "the worker consumes -Q/--queues a,b",
        (Some("worker"), "--concurrency-auto") => "use -c auto",
        (Some("worker"), "-s" | "--schedule" | "--schedule-filename" | "--scheduler") => {
            "no embedded beat here: run `celery -A proj beat` next to the worker"
        }
        (Some("result"), "--wait-result") => "use --wait [--timeout SECS]",
        (Some("purge"), "--yes" | "-y") => "skip the prompt with -f/--force",
        (Some("call" | "result" | "purge" | "report"), "-l" | "--loglevel") => {
            "-l/--loglevel is a worker option (celeriac worker -l INFO)"
        }
        (None, "-l" | "--loglevel") => "-l/--loglevel goes after the subcommand: celeriac -A DIR worker -l INFO",
        (None, "-c" | "--concurrency" | "-Q" | "--queues" | "-n" | "--hostname" | "-P" | "--pool") => {
            "worker options go after `worker`: celeriac -A DIR worker -c 4 -Q a,b"
        }
        _ => return None,
    };
    Some(tip.to_string())
}

/// The subcommand named in `argv`, if any: the first word that is one of
/// celeriac's commands (an option's value never is one).
fn subcommand(argv: &[String]) -> Option<String> {
    subcommand_at(argv).map(|i| argv[i].clone())
}

/// Where in `argv` the subcommand is.
fn subcommand_at(argv: &[String]) -> Option<usize> {
    const COMMANDS: &[&str] = &["worker", "call", "result", "purge", "report", "check-config", "run", "tasks"];
    argv.iter().enumerate().skip(1).find(|(_, a)| COMMANDS.contains(&a.as_str())).map(|(i, _)| i)
}

/// Whether the option `flag` comes before the subcommand (or there is none).
fn before_subcommand(argv: &[String], flag: &str) -> bool {
    let at = argv.iter().skip(1).position(|a| a == flag || a.starts_with(&format!("{flag}="))).map(|i| i + 1);
    match (at, subcommand_at(argv)) {
        (Some(f), Some(s)) => f < s,
        (_, None) => true,
        (None, Some(_)) => false,
    }
}

/// clap's error with a Celery-habit tip added, when there is one.
pub fn with_hints(mut err: clap::Error, argv: &[String]) -> clap::Error {
    let offending = match err.get(ContextKind::InvalidArg).or_else(|| err.get(ContextKind::InvalidSubcommand)) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let Some(tip) = hint(err.kind(), argv, offending.as_deref()) else { return err };
    let mut tips = match err.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(v)) => v.clone(),
        _ => Vec::new(),
    };
    tips.push(tip.into());
    err.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn a_celery_only_command_is_pointed_at_the_celery_cli() {
        let tip = hint(ErrorKind::InvalidSubcommand, &argv("celeriac beat"), Some("beat")).unwrap_or_default();
        assert!(tip.contains("celery -A proj -b URL beat"), "{tip}");
        assert!(hint(ErrorKind::InvalidSubcommand, &argv("celeriac frobnicate"), Some("frobnicate")).is_none());
    }

    #[test]
    fn the_workers_queue_option_given_to_call_points_at_queue() {
        let tip = hint(ErrorKind::UnknownArgument, &argv("celeriac -b x call tasks.add -Q q"), Some("-Q"));
        assert!(tip.unwrap_or_default().contains("--queue NAME"));
    }

    #[test]
    fn loglevel_before_the_subcommand_is_pointed_after_it() {
        let tip = hint(ErrorKind::UnknownArgument, &argv("celeriac -l INFO worker"), Some("-l"));
        assert!(tip.unwrap_or_default().contains("worker -l INFO"));
    }

    #[test]
    fn the_subcommand_is_found_after_global_options_with_values() {
        assert_eq!(subcommand(&argv("celeriac -A dir -b url worker -l INFO")).as_deref(), Some("worker"));
        assert_eq!(subcommand(&argv("celeriac -l INFO worker")).as_deref(), Some("worker"));
        assert_eq!(subcommand(&argv("celeriac -q")), None);
    }
}
