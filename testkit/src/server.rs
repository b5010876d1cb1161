//! One managed server process: its folder, its port, start with retries,
//! stop, restart on the same port, and cleanup on drop. Every public type
//! (the three stores, the backend, the gateway, the worker) is a thin
//! layer over this and dereferences to it, so they all share its methods
//! (`port`, `kill`, `stop`, `restart`, ...).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use crate::net::free_port;
use crate::process::{wait_until, ChildProcess, TestDir};

/// How many fresh ports a first start tries when the port turns out taken.
const START_ATTEMPTS: usize = 5;
/// How long a restart keeps retrying its fixed port while it is taken.
const RESTART_PORT_WAIT: Duration = Duration::from_secs(10);

/// Builds the command line for a given port, with the server's folder.
pub(crate) type CommandFn = Box<dyn Fn(u16, &Path) -> Command + Send + Sync>;

/// What differs between the servers testkit runs.
pub(crate) struct Spec {
    /// Short name used for the folder, the log file and messages.
    pub name: &'static str,
    pub command: CommandFn,
    /// Readiness probe: this run's output so far, and the port.
    pub ready: fn(&str, u16) -> bool,
    pub start_timeout: Duration,
    /// How long `stop` waits after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    /// Drop with SIGKILL instead of a graceful stop: for servers whose data
    /// is thrown away with the folder and whose graceful stop is slow.
    pub kill_on_drop: bool,
}

enum StartFailure {
    /// Another process holds the port; worth retrying.
    PortInUse,
    /// Anything else; the message says what and shows the log.
    Failed(String),
}

pub struct Server {
    spec: Spec,
    port: u16,
    child: Option<ChildProcess>,
    // Declared last so it is dropped after `Drop::drop` stopped the child.
    dir: TestDir,
}

impl Server {
    /// Starts on a free port; retries on a new port when the chosen one was
    /// taken in the meantime. Panics with the log's tail on failure.
    pub(crate) fn start(spec: Spec) -> Server {
        let dir = TestDir::new(spec.name);
        let mut server = Server {
            spec,
            port: 0,
            child: None,
            dir,
        };
        for _ in 0..START_ATTEMPTS {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(child) => {
                    eprintln!(
                        "testkit: {} ready on port {}, log {}",
                        server.spec.name,
                        server.port,
                        child.log_path().display()
                    );
                    server.child = Some(child);
                    return server;
                }
                Err(StartFailure::PortInUse) => continue,
                Err(StartFailure::Failed(msg)) => panic!("{msg}"),
            }
        }
        panic!(
            "testkit: {} could not find a free port in {START_ATTEMPTS} attempts",
            server.spec.name
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id; panics after [`Server::stop`].
    pub fn pid(&self) -> u32 {
        match &self.child {
            Some(child) => child.pid(),
            None => panic!("testkit: {} was stopped, it has no pid", self.spec.name),
        }
    }

    /// The file its stdout and stderr go to.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join(format!("{}.log", self.spec.name))
    }

    /// SIGKILL, and wait until it is gone (a crash); [`Server::restart`]
    /// starts it again on the same port and folder.
    pub fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            child.kill();
        }
    }

    /// SIGTERM without waiting (a graceful shutdown the test can watch);
    /// see [`Server::wait_exit`].
    pub fn terminate(&mut self) {
        if let Some(child) = &mut self.child {
            child.terminate();
        }
    }

    /// Waits up to `timeout` for the process to exit; `None` if it did not.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        match &mut self.child {
            Some(child) => child.wait_timeout(timeout),
            None => panic!("testkit: {} was stopped already", self.spec.name),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Graceful stop (SIGTERM, then SIGKILL after the server's grace
    /// period), waiting until it has exited. The folder and port stay
    /// reserved for [`Server::restart`]; stored data is kept. No-op when
    /// stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop(self.spec.stop_grace);
        }
    }

    /// Stops (if running) and starts again on the same port, folder and
    /// flags; returns once it is ready.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + RESTART_PORT_WAIT;
        loop {
            match self.spawn_and_wait() {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(StartFailure::PortInUse) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(250));
                }
                Err(StartFailure::PortInUse) => panic!(
                    "testkit: {} cannot restart: port {} stayed in use for {RESTART_PORT_WAIT:?}",
                    self.spec.name, self.port
                ),
                Err(StartFailure::Failed(msg)) => panic!("{msg}"),
            }
        }
    }

    fn spawn_and_wait(&self) -> Result<ChildProcess, StartFailure> {
        let name = self.spec.name;
        let log = self.dir.path().join(format!("{name}.log"));
        let cmd = (self.spec.command)(self.port, self.dir.path());
        let mut child = ChildProcess::spawn(name, cmd, &log)
            .unwrap_or_else(|e| panic!("testkit: cannot start {name}: {e}"));
        let ready = self.spec.ready;
        let port = self.port;
        let timeout = self.spec.start_timeout;
        let became_ready = wait_until(timeout, || {
            child.exited().is_some() || ready(&child.output(), port)
        });
        if let Some(status) = child.exited() {
            if child
                .output()
                .to_lowercase()
                .contains("address already in use")
            {
                return Err(StartFailure::PortInUse);
            }
            return Err(StartFailure::Failed(format!(
                "testkit: {name} exited during start ({status}) on port {port}\nlog {}:\n{}",
                log.display(),
                child.log_tail()
            )));
        }
        if !became_ready {
            child.kill();
            return Err(StartFailure::Failed(format!(
                "testkit: {name} not ready on port {port} after {timeout:?}\nlog {}:\n{}",
                log.display(),
                child.log_tail()
            )));
        }
        Ok(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if thread::panicking() {
            child.report_failure();
        }
        if self.spec.kill_on_drop {
            child.kill();
        } else {
            child.stop(self.spec.stop_grace);
        }
    }
}

/// `Deref` and `DerefMut` to the [`Server`] in field `server` of each type.
macro_rules! derefs_to_server {
    ($($ty:ty),+) => {$(
        impl std::ops::Deref for $ty {
            type Target = $crate::server::Server;
            fn deref(&self) -> &Self::Target {
                &self.server
            }
        }
        impl std::ops::DerefMut for $ty {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.server
            }
        }
    )+};
}
pub(crate) use derefs_to_server;
