//! Celery's daemonization options for `celeriac worker`: `--pidfile`,
//! `-D/--detach`, `--uid/--gid`, `--umask`, and the `%n`/`%h`/`%i` node
//! formatting of `--pidfile` and `-f/--logfile`.
//!
//! They behave as `celery.platforms` does, so init scripts and `celery multi`
//! habits carry over: a pidfile holding a live pid refuses the start
//! ("Pidfile (…) already exists. Seems we're already running?"), a stale or
//! broken one is removed with Celery's message, and the file goes at exit;
//! `--detach` checks the pidfile and the log file first, then starts the
//! worker again in a new session with its standard streams on `/dev/null`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a daemonization option could not be honoured.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The pidfile names a process that is alive (Celery's `PIDLOCKED`).
    #[error("Pidfile ({path}) already exists.\nSeems we're already running? (pid: {pid})")]
    Locked {
        /// The pidfile.
        path: PathBuf,
        /// The live process it names.
        pid: i32,
    },
    /// A file could not be read, written or created.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `--uid` / `--gid` names nobody on this system.
    #[error("{kind} {name:?} does not exist (give a name from /etc/{file} or a number)")]
    UnknownId {
        /// "user" or "group".
        kind: &'static str,
        /// What was given.
        name: String,
        /// passwd or group.
        file: &'static str,
    },
    /// setuid / setgid failed.
    #[error("cannot drop privileges to {what}: {source} (only root can change to another user or group)")]
    Privileges {
        /// `uid 1000`, `gid 100`.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// `--umask` is not an octal number.
    #[error("--umask {0:?} is not an octal file mode such as 022 or 0o027")]
    Umask(String),
    /// The worker could not be started again in the background.
    #[error("cannot detach: {0}")]
    Detach(std::io::Error),
}

/// A pidfile this process holds; removed when dropped.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    pid: u32,
}

impl Pidfile {
    /// Take the pidfile at `path` for this process, as Celery's
    /// `create_pidlock`: refuse when it names a live process, remove it
    /// (saying so) when it is stale or broken, then write our pid.
    pub fn acquire(path: &Path) -> Result<Pidfile, DaemonError> {
        check_unlocked(path)?;
        let io = |source| DaemonError::Io { what: "cannot create pidfile", path: path.to_path_buf(), source };
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(path).map_err(io)?;
        let pid = std::process::id();
        f.write_all(format!("{pid}\n").as_bytes()).and_then(|()| f.sync_all()).map_err(io)?;
        Ok(Pidfile { path: path.to_path_buf(), pid })
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Only our own: never remove a file another process has since written.
        if read_pid(&self.path).ok().flatten() == Some(self.pid as i32) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The pid written in a pidfile: `None` when there is no file; an error text
/// when it holds no pid.
fn read_pid(path: &Path) -> Result<Option<i32>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<i32>().map(Some).map_err(|_| text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether process `pid` exists (a signal 0 reaches it, or it is someone else's).
fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Fail if `path` names a live process; remove it if it is stale or broken
/// (with Celery's messages on stderr).
pub fn check_unlocked(path: &Path) -> Result<(), DaemonError> {
    let stale = match read_pid(path) {
        Ok(None) => return Ok(()),
        Ok(Some(pid)) if alive(pid) && pid as u32 != std::process::id() => {
            return Err(DaemonError::Locked { path: path.to_path_buf(), pid });
        }
        Ok(Some(_)) => "Stale pidfile exists - Removing it.",
        Err(_) => "Broken pidfile found - Removing it.",
    };
    eprintln!("{stale}");
    std::fs::remove_file(path).map_err(|source| DaemonError::Io {
        what: "cannot remove stale pidfile",
        path: path.to_path_buf(),
        source,
    })
}

/// Celery's `node_format` for `--pidfile` and `--logfile`: `%n` the node's
/// name, `%h` its host, `%d` the host's domain, `%i`/`%I` the process index
/// (always the main process here: 0 and empty), `%%` a percent sign.
pub fn node_format(template: &str, nodename: &str) -> String {
    let (name, host) = nodename.split_once('@').unwrap_or(("celeriac", nodename));
    let domain = host.split_once('.').map(|(_, d)| d).unwrap_or("");
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push_str(name),
            Some('h') => out.push_str(host),
            Some('d') => out.push_str(domain),
            Some('i') => out.push('0'),
            Some('I') => {}
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Parse `--umask` as Celery does: an octal number (`022`, `0o022`).
pub fn parse_umask(s: &str) -> Result<u32, DaemonError> {
    let digits = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")).unwrap_or(s);
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777).ok_or_else(|| DaemonError::Umask(s.to_string()))
}

/// Set the process's umask.
pub fn set_umask(mask: u32) {
    // SAFETY: umask only changes this process's file creation mask.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}

/// A user or group id from a number or a name in `/etc/passwd` / `/etc/group`
/// (the third field of the name's line), and for a user, its primary group.
fn lookup_id(value: &str, file: &'static str) -> Result<(u32, Option<u32>), DaemonError> {
    let kind = if file == "passwd" { "user" } else { "group" };
    if let Ok(id) = value.parse::<u32>() {
        return Ok((id, None));
    }
    let unknown = || DaemonError::UnknownId { kind, name: value.to_string(), file };
    let text = std::fs::read_to_string(format!("/etc/{file}")).map_err(|_| unknown())?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&value))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3).and_then(|g| g.parse().ok()))))
        .ok_or_else(unknown)
}

/// Drop privileges as Celery's `maybe_drop_privileges`: the group first
/// (`--gid`, else the `--uid` user's primary group), then the user.
pub fn drop_privileges(uid: Option<&str>, gid: Option<&str>) -> Result<(), DaemonError> {
    let user = uid.map(|u| lookup_id(u, "passwd")).transpose()?;
    let group = match gid {
        Some(g) => Some(lookup_id(g, "group")?.0),
        None => user.and_then(|(_, primary)| primary),
    };
    if let Some(g) = group {
        // SAFETY: setgid changes only this process's credentials.
        if unsafe { libc::setgid(g) } != 0 {
            return Err(DaemonError::Privileges { what: format!("gid {g}"), source: std::io::Error::last_os_error() });
        }
    }
    if let Some((u, _)) = user {
        // SAFETY: setuid changes only this process's credentials.
        if unsafe { libc::setuid(u) } != 0 {
            return Err(DaemonError::Privileges { what: format!("uid {u}"), source: std::io::Error::last_os_error() });
        }
    }
    Ok(())
}

/// `-D/--detach`: check that the pidfile is free and the log file writable
/// (nothing could be reported after detaching), then start this program again
/// with `args` (the command line without `-D`) in a new session, its standard
/// streams on `/dev/null`, from directory `cwd`. The caller exits.
pub fn detach(args: &[String], cwd: &Path, logfile: Option<&Path>, pidfile: Option<&Path>) -> Result<u32, DaemonError> {
    if let Some(p) = pidfile {
        check_unlocked(p)?;
    }
    if let Some(l) = logfile {
        std::fs::OpenOptions::new().create(true).append(true).open(l).map_err(|source| DaemonError::Io {
            what: "cannot open log file",
            path: l.to_path_buf(),
            source,
        })?;
    }
    let exe = std::env::current_exe().map_err(DaemonError::Detach)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(DaemonError::Detach)?;
    Ok(child.id())
}

/// The command line of the detached worker: `argv` without its program name
/// and without `-D` / `--detach`.
pub fn without_detach(argv: &[String]) -> Vec<String> {
    argv.iter().skip(1).filter(|a| !matches!(a.as_str(), "-D" | "--detach")).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_format_expands_name_host_domain_and_index() {
        assert_eq!(node_format("/run/%n.pid", "w1@box.example.com"), "/run/w1.pid");
        assert_eq!(node_format("%h-%d-%i%I.log", "w1@box.example.com"), "box.example.com-example.com-0.log");
        assert_eq!(node_format("100%%", "w@h"), "100%");
    }

    #[test]
    fn umask_is_read_as_octal() {
        assert_eq!(parse_umask("022").ok(), Some(0o22));
        assert_eq!(parse_umask("0o027").ok(), Some(0o27));
        assert!(parse_umask("9").is_err());
        assert!(parse_umask("01000").is_err());
    }

    #[test]
    fn a_pidfile_with_a_live_pid_refuses_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("w.pid");
        // pid 1 is alive (init), whoever owns it.
        std::fs::write(&path, "1\n").unwrap_or_else(|e| panic!("{e}"));
        match Pidfile::acquire(&path) {
            Err(DaemonError::Locked { pid: 1, .. }) => {}
            other => panic!("expected Locked, got {other:?}"),
        }
        std::fs::write(&path, "not a pid").unwrap_or_else(|e| panic!("{e}"));
        let held = Pidfile::acquire(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_pid(&path), Ok(Some(std::process::id() as i32)));
        drop(held);
        assert!(!path.exists(), "the pidfile is removed at exit");
    }

    #[test]
    fn detach_drops_only_the_detach_flag() {
        let argv: Vec<String> =
            ["celeriac", "-A", "t", "worker", "-D", "--detach", "-l", "INFO"].map(String::from).into();
        assert_eq!(without_detach(&argv), ["-A", "t", "worker", "-l", "INFO"]);
    }
}
