//! Child processes with a log file, and the temporary folders they live in.
//!
//! Every process testkit starts writes stdout and stderr to one log file in
//! its own temporary folder. When a test fails (the thread is panicking while
//! things are dropped) the folder is kept and its path printed, together with
//! the last lines of each log, so a failing test points at what went wrong.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many log lines a panic message or a failure report shows.
pub(crate) const TAIL_LINES: usize = 30;

/// A name that no other testkit object in any process on this machine uses:
/// pid, a per-process counter and the clock.
pub(crate) fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{nanos:08x}", std::process::id())
}

/// A folder under `$TMPDIR/oceanchat-testkit/`, removed on drop unless the
/// thread is panicking (then it is kept for inspection and its path printed).
#[derive(Debug)]
pub(crate) struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub(crate) fn new(kind: &str) -> TestDir {
        let root = std::env::temp_dir().join("oceanchat-testkit");
        fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("testkit: cannot create {}: {e}", root.display()));
        let path = root.join(unique_name(kind));
        // `create_dir`, not `create_dir_all`: a name clash must fail loudly.
        fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("testkit: cannot create {}: {e}", path.display()));
        TestDir { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("testkit: test failed, kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A running child whose stdout and stderr go to a log file.
///
/// Signals are only sent while the child has not been reaped, so its pid
/// cannot have been reused by another process.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
    /// Where this run's output starts in the (appended) log file.
    log_start: u64,
}

impl ChildProcess {
    /// Spawns `cmd` with stdin closed and its output appended to `log`,
    /// after a header line naming the command.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> io::Result<ChildProcess> {
        let mut file = OpenOptions::new().create(true).append(true).open(log)?;
        writeln!(file, "=== testkit: starting {name}: {cmd:?}")?;
        let log_start = file.metadata()?.len();
        // Plain log files, without terminal colour codes.
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot run {:?}: {e}", cmd.get_program()))
        })?;
        Ok(ChildProcess {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            log_start,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` once the child has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM unless the child has already exited; does not wait.
    pub(crate) fn terminate(&mut self) {
        if self.exited().is_none() {
            send_signal(self.pid(), libc::SIGTERM);
        }
    }

    /// SIGKILL, then reap: returns once the process is gone.
    pub(crate) fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child
            .wait()
            .unwrap_or_else(|e| panic!("testkit: waiting for {}: {e}", self.name))
    }

    /// Waits up to `timeout` for the child to exit.
    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, up to `grace` for the child to exit by itself, then SIGKILL.
    pub(crate) fn stop(&mut self, grace: Duration) -> ExitStatus {
        self.terminate();
        match self.wait_timeout(grace) {
            Some(status) => status,
            None => {
                eprintln!(
                    "testkit: {} ignored SIGTERM for {grace:?}, killing it",
                    self.name
                );
                self.kill()
            }
        }
    }

    /// This run's output so far (lossy UTF-8).
    pub(crate) fn output(&self) -> String {
        read_from(&self.log, self.log_start).unwrap_or_default()
    }

    /// The last lines of the whole log file, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.log, TAIL_LINES)
    }

    /// Prints where the log is and how it ends; used when a test fails.
    pub(crate) fn report_failure(&self) {
        eprintln!(
            "testkit: {} (pid {}) log {}, last lines:\n{}",
            self.name,
            self.pid(),
            self.log.display(),
            self.log_tail()
        );
    }
}

fn send_signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    // The pid belongs to our own unreaped child (callers check), so it
    // cannot name an unrelated process.
    unsafe {
        libc::kill(pid, signal);
    }
}

fn read_from(path: &Path, offset: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The last `lines` lines of a file, or a note saying it cannot be read.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match read_from(path, 0) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Polls `ready` every 20 ms until it returns true (then true) or `timeout`
/// passes (then false).
pub(crate) fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_logged_and_terminate_stops_the_child() {
        let dir = TestDir::new("process-test");
        let log = dir.path().join("sh.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello; exec sleep 30"]);
        let mut child = ChildProcess::spawn("sh", cmd, &log).unwrap();
        assert!(wait_until(Duration::from_secs(5), || child
            .output()
            .contains("hello")));
        assert!(child.exited().is_none());
        let status = child.stop(Duration::from_secs(5));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(child.log_tail().contains("=== testkit: starting sh"));
    }

    #[test]
    fn a_second_run_sees_only_its_own_output() {
        let dir = TestDir::new("process-test");
        let log = dir.path().join("echo.log");
        for word in ["first", "second"] {
            let mut cmd = Command::new("echo");
            cmd.arg(word);
            let mut child = ChildProcess::spawn("echo", cmd, &log).unwrap();
            assert!(child.wait_timeout(Duration::from_secs(5)).is_some());
            assert_eq!(child.output().trim(), word);
        }
        let tail = log_tail(&log, 10);
        assert!(tail.contains("first") && tail.contains("second"));
    }

    #[test]
    fn test_dir_is_removed_on_drop() {
        let dir = TestDir::new("process-test");
        let path = dir.path().to_owned();
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("x"), unique_name("x"));
    }
}
