//! `celeriac inspect`, `celeriac control`, `celeriac status` and `celeriac
//! events`: Celery's remote-control and monitoring commands for operators
//! without Python (the protocol side is [`crate::remote`]).

use std::process::ExitCode;

use clap::Args;

use super::{GlobalArgs, runtime};

/// Celery's exit status when no node replied (`EX_UNAVAILABLE`).
const EX_UNAVAILABLE: u8 = 69;

/// `celeriac inspect` / `celeriac control`.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The command (e.g. `ping`, `rate_limit`).
    command: String,
    /// The command's arguments (e.g. `tasks.add 10/m`).
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    #[command(flatten)]
    replies: Replies,
}

/// `celeriac status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    replies: Replies,
}

/// Which replies to wait for, and how to print them (`celery inspect`'s options).
#[derive(Debug, Args)]
struct Replies {
    /// Seconds to wait for replies.
    #[arg(short = 't', long, default_value_t = 1.0)]
    timeout: f64,
    /// Only these nodes (comma-separated names).
    #[arg(short = 'd', long, value_delimiter = ',')]
    destination: Vec<String>,
    /// Print the replies as one JSON object.
    #[arg(short = 'j', long)]
    json: bool,
}

/// `celeriac events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Dump events as text (the only view; accepted for Celery's habit).
    #[arg(short = 'd', long)]
    dump: bool,
    /// Stop after this many seconds (default: until Ctrl+C).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
}

/// `celeriac inspect` / `celeriac control`: broadcast, print the replies as `celery` does.
pub fn remote(g: &GlobalArgs, kind: crate::remote::Kind, a: RemoteArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init("ERROR").map_err(anyhow::Error::msg)?;
    let arguments = crate::remote::compile_arguments(kind, &a.command, &a.args)?;
    let r = &a.replies;
    let replies = broadcast(g, &a.command, arguments, &r.destination, r.timeout)?;
    Ok(print_replies(&replies, true, r.json))
}

/// `celeriac status`: who answers a ping.
pub fn status(g: &GlobalArgs, a: StatusArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init("ERROR").map_err(anyhow::Error::msg)?;
    let r = &a.replies;
    let replies = broadcast(g, "ping", serde_json::Map::new(), &r.destination, r.timeout)?;
    Ok(print_replies(&replies, false, r.json))
}

/// `celeriac events`: every event, one line each, as `celery events --dump` prints it.
pub fn events(g: &GlobalArgs, a: EventsArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    crate::logging::init("ERROR").map_err(anyhow::Error::msg)?;
    let _ = a.dump;
    let settings = g.settings()?;
    let broker_url = settings.effective_broker_url();
    runtime()?.block_on(async {
        let broker = crate::broker::Broker::connect_with_settings(&broker_url, &settings, "celeriac events").await?;
        let fanout = broker.fanout().ok_or(crate::remote::RemoteError::NoFanout(broker.name()))?;
        let mut mailbox = fanout.events().await?;
        println!("-> evdump: starting capture...");
        let mut names = std::collections::HashMap::new();
        let until = match a.duration {
            None => None,
            Some(d) => Some(tokio::time::Instant::now() + seconds("--duration", d)?),
        };
        loop {
            let next = mailbox.next();
            let raw = match until {
                Some(t) => match tokio::time::timeout_at(t, next).await {
                    Ok(r) => r,
                    Err(_) => break,
                },
                None => tokio::select! {
                    r = next => r,
                    _ = tokio::signal::ctrl_c() => break,
                },
            };
            for event in crate::remote::split_events(&raw?) {
                println!("{}", crate::remote::dump_line(event, &mut names));
            }
            let _ = std::io::stdout().flush();
        }
        broker.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Connect and broadcast one remote command.
fn broadcast(
    g: &GlobalArgs,
    method: &str,
    arguments: serde_json::Map<String, serde_json::Value>,
    destination: &[String],
    timeout: f64,
) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    let settings = g.settings()?;
    let broker_url = settings.effective_broker_url();
    let destination = (!destination.is_empty()).then_some(destination);
    let timeout = seconds("-t/--timeout", timeout.max(0.01))?;
    runtime()?.block_on(async {
        let broker = crate::broker::Broker::connect_with_settings(&broker_url, &settings, "celeriac control").await?;
        let replies = crate::remote::broadcast(&broker, method, arguments, destination, timeout).await;
        broker.close().await;
        Ok(replies?)
    })
}

/// A number of seconds given on the command line, as a duration.
fn seconds(option: &str, secs: f64) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(secs.max(0.0))
        .map_err(|_| anyhow::anyhow!("{option} {secs}: not a number of seconds this command can wait"))
}

/// Print replies as `celery inspect` does; exit 69 when there are none.
fn print_replies(replies: &[(String, serde_json::Value)], show_body: bool, json: bool) -> ExitCode {
    if replies.is_empty() {
        eprintln!("Error: No nodes replied within time constraint");
        return ExitCode::from(EX_UNAVAILABLE);
    }
    if json {
        let all: serde_json::Map<String, serde_json::Value> = replies.iter().cloned().collect();
        println!("{}", serde_json::Value::Object(all));
        return ExitCode::SUCCESS;
    }
    for (node, reply) in replies {
        println!("{}", crate::remote::format_reply(node, reply, show_body));
    }
    println!("\n{}", crate::remote::nodes_online(replies.len()));
    ExitCode::SUCCESS
}
