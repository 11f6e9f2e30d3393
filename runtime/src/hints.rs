//! Messages for the command line that say what happened and what to do
//! next, where the bare error would leave a user guessing: today, a
//! `celeriac call --wait` that times out names the broker the task went to
//! (with no broker configured, the SQLite file in the current directory,
//! which a worker started elsewhere never reads).

use std::time::Duration;

use crate::config::Settings;
use crate::connection::url::{is_sqlite_transport_url, mask_password, sqlite_path};

/// What `celeriac call --wait` says when no result came within `timeout`.
pub fn call_timed_out(settings: &Settings, task_id: &str, timeout: Duration) -> String {
    let url = settings.effective_broker_url();
    let mut msg = format!(
        "no result for task {task_id} within {}s: no worker has run it yet.\nIt was sent to {}",
        timeout.as_secs_f64(),
        mask_password(&url)
    );
    if is_sqlite_transport_url(&url) {
        let file = sqlite_path(&url).map(|p| p.display().to_string()).unwrap_or_else(|_| url.clone());
        if settings.broker_url.is_none() {
            msg.push_str(&format!(
                " — the default broker, because no --broker, broker_url or CELERIAC_BROKER_URL was given: the \
                 SQLite file {file}, in this directory.\nA worker serves it only if it was started in the same \
                 directory without a broker (`celeriac worker -A target/tasks`); a worker on Redis or RabbitMQ \
                 needs the same --broker here."
            ));
        } else {
            msg.push_str(&format!(" (the SQLite file {file}): is a worker running on that same file?"));
        }
    } else {
        msg.push_str(": is a worker consuming its queue there?");
    }
    msg.push_str(&format!(
        "\nThe task stays queued: `celeriac result {task_id} --wait` waits for it again (with the same broker \
         and result backend options)."
    ));
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_without_a_broker_names_the_sqlite_file_in_this_directory() {
        let msg = call_timed_out(&Settings::default(), "abc", Duration::from_secs(2));
        let here = std::env::current_dir().unwrap().join("celeriac.sqlite");
        assert!(msg.starts_with("no result for task abc within 2s"), "{msg}");
        assert!(msg.contains(&format!("the SQLite file {}, in this directory", here.display())), "{msg}");
        assert!(msg.contains("no --broker"), "{msg}");
    }

    #[test]
    fn a_timeout_with_a_broker_names_it_without_its_password() {
        let settings = Settings { broker_url: Some("redis://:secret@h:6379/0".into()), ..Settings::default() };
        let msg = call_timed_out(&settings, "abc", Duration::from_secs(1));
        assert!(msg.contains("It was sent to redis://:**@h:6379/0: is a worker consuming"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }
}
