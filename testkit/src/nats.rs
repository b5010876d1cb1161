//! A throwaway `nats-server` with JetStream.

use std::process::Command;
use std::time::Duration;

use crate::net::{free_port, nats_info};
use crate::server::{derefs_to_server, Server, Spec};

/// A `nats-server -js` on a free port of 127.0.0.1, its JetStream store in
/// a temp dir; stopped and removed on drop. [`Nats::restart`] keeps the
/// store, so streams and durable consumers survive it.
pub struct Nats {
    server: Server,
}

/// What a cluster node adds to the command line.
struct ClusterNode {
    name: String,
    route_port: u16,
    /// Every node's route URL, comma separated (its own is skipped).
    routes: String,
}

impl Nats {
    /// Starts it and waits until it has logged "Server is ready" and greets
    /// clients with INFO.
    pub fn start() -> Nats {
        Nats::start_node("", None)
    }

    /// Like [`Nats::start`], with `config` (nats-server's configuration
    /// format, e.g. an `authorization` block) as its config file. The
    /// command-line address, port and store still apply.
    pub fn start_with_config(config: &str) -> Nats {
        Nats::start_node(config, None)
    }

    /// Starts `nodes` servers routed to each other as one cluster (JetStream
    /// on, each node named `oc-nats-<i>`); returns once every node is ready.
    /// The routes connect in the background within about a second. Nodes
    /// do not advertise each other to clients (`--no_advertise`): a client
    /// fails over only to the nodes its own URL list names, so a test
    /// decides which node each process can reach.
    pub fn cluster(nodes: usize) -> Vec<Nats> {
        let route_ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        route_ports
            .iter()
            .enumerate()
            .map(|(i, &route_port)| {
                Nats::start_node(
                    "",
                    Some(ClusterNode {
                        name: format!("oc-nats-{}", i + 1),
                        route_port,
                        routes: routes.clone(),
                    }),
                )
            })
            .collect()
    }

    fn start_node(config: &str, node: Option<ClusterNode>) -> Nats {
        let config = config.to_string();
        let server = Server::start(Spec {
            name: "nats",
            command: Box::new(move |port, dir| {
                let mut cmd = Command::new("nats-server");
                if !config.is_empty() {
                    let path = dir.join("nats.conf");
                    std::fs::write(&path, &config).expect("write nats.conf");
                    cmd.arg("-c").arg(path);
                }
                cmd.args(["-js", "-a", "127.0.0.1", "-p"])
                    .arg(port.to_string())
                    .arg("-sd")
                    .arg(dir.join("jetstream"));
                if let Some(node) = &node {
                    cmd.args(["-n", &node.name, "--cluster_name", "oc-test"])
                        .arg("--cluster")
                        .arg(format!("nats://127.0.0.1:{}", node.route_port))
                        .args(["--routes", &node.routes, "--no_advertise=true"]);
                }
                cmd
            }),
            ready: |output, port| output.contains("Server is ready") && nats_info(port),
            start_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(10),
            kill_on_drop: false,
        });
        Nats { server }
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }
}

derefs_to_server!(Nats);
