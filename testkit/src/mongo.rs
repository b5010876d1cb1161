//! A throwaway SecantusDB, the MongoDB wire-compatible server the tests use.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::net::port_accepts;
use crate::server::{derefs_to_server, Server, Spec};
use crate::workspace_root;

/// The executable's name, as installed by `pip install SecantusDB`.
const EXECUTABLE: &str = "secantusd-py";

/// A SecantusDB (`secantusd-py`) on a free port of 127.0.0.1 with its
/// storage in a temp dir.
///
/// SecantusDB opens its port in about a second, and exits about 3.5 s after
/// SIGTERM, keeping its storage folder locked until then. So
/// [`Mongo::stop`] and [`Mongo::restart`] wait for the process to exit
/// (SIGKILL after 10 s). Drop kills it outright: the data is thrown away
/// with the folder anyway, and that saves every test 3.5 s.
///
/// The executable is looked up in this order: the `OC_SECANTUSD` variable,
/// `<workspace>/.cache/venv/bin/secantusd-py` (where `scripts/test`
/// installs it), then `PATH`.
pub struct Mongo {
    server: Server,
}

impl Mongo {
    /// Starts it and waits until its port accepts connections (it opens its
    /// storage before it listens, so it is ready then).
    pub fn start() -> Mongo {
        let executable = find_executable();
        let server = Server::start(Spec {
            name: "mongo",
            command: Box::new(move |port, dir| {
                let mut cmd = Command::new(&executable);
                cmd.args(["--host", "127.0.0.1", "--port"])
                    .arg(port.to_string())
                    .arg("--storage-path")
                    .arg(dir.join("storage"))
                    .args(["--log-level", "WARNING"]);
                cmd
            }),
            ready: |_, port| port_accepts(port),
            start_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            kill_on_drop: true,
        });
        Mongo { server }
    }

    /// `mongodb://127.0.0.1:PORT/?directConnection=true&retryWrites=false`:
    /// SecantusDB presents itself as a one-node replica set, and
    /// `directConnection` keeps the driver from looking for the host it
    /// advertises. Without retryable writes because SecantusDB's registry
    /// of them costs it a scan per write (`scripts/up` says more).
    pub fn url(&self) -> String {
        format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&retryWrites=false",
            self.port()
        )
    }
}

fn find_executable() -> PathBuf {
    if let Some(path) = env::var_os("OC_SECANTUSD") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "testkit: OC_SECANTUSD is {}, which is not a file",
            path.display()
        );
        return path;
    }
    let venv = workspace_root().join(".cache/venv/bin").join(EXECUTABLE);
    if venv.is_file() {
        return venv;
    }
    if let Some(found) = find_in_path(EXECUTABLE) {
        return found;
    }
    panic!(
        "testkit: SecantusDB ({EXECUTABLE}) not found: OC_SECANTUSD is unset, {} does not \
         exist and it is not on PATH. Run scripts/test (it installs SecantusDB into \
         .cache/venv) or set OC_SECANTUSD to the executable.",
        venv.display()
    );
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

derefs_to_server!(Mongo);
