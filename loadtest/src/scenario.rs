//! A load scenario: read from a TOML file, then changed by command-line
//! flags. Every field has a default, so a file names only what differs.
//!
//! ```toml
//! name = "echo-1k"
//! protocol = "bench"        # or "chat"
//! targets = ["ws://127.0.0.1:9100/"]
//! connections = 1000
//! mode = "echo"             # bench: idle, echo or broadcast
//! senders = 1000
//! window = 1                # closed loop: messages in flight per sender
//! duration_s = 10
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Which protocol the run speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OceanChat's client protocol (PROTOCOL.md): HTTP login, `auth`, `send`,
    /// `msg` events.
    Chat,
    /// The comparison protocol of `oceanchat-gateway --mode bench`: a text
    /// message starting with `B` goes to every connection, anything else
    /// back to its sender.
    Bench,
}

/// What the senders of a bench run do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    /// Connect and hold the connections; send nothing.
    Idle,
    /// Each sender sends non-`B` messages and times their echo.
    Echo,
    /// Each sender sends `B` messages; every connection times their arrival.
    Broadcast,
}

/// One kind of group: `count` groups of `size` members each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub count: u32,
    pub size: u32,
}

/// A whole scenario. See the field comments for units and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Names the run in reports.
    pub name: String,
    pub protocol: Protocol,
    /// WebSocket URLs; connections are spread over them round robin.
    pub targets: Vec<String>,
    /// Chat: the backend's HTTP API base URL.
    pub api: String,
    /// `/metrics` URLs of the gateways and backends, read at the start
    /// and the end of the measured part for the hop-by-hop timings.
    #[serde(default)]
    pub metrics: Vec<String>,

    /// Bench: how many connections in all.
    pub connections: u32,
    /// What the senders do. Chat knows only `idle` (nobody sends) and
    /// anything else (the senders send).
    pub mode: BenchMode,

    /// Chat: how many users exist (registered and logged in, cached).
    pub users: u32,
    /// Chat: how many of them connect (the first ones); 0 means all.
    pub online_users: u32,
    /// Chat: connections per online user.
    pub connections_per_user: u32,
    /// Chat: the groups, built from consecutive users. Without groups,
    /// each sender writes to a direct conv with the next user.
    pub groups: Vec<GroupSpec>,

    /// How many connections (bench) or users (chat) send; 0 means all.
    pub senders: u32,
    /// Messages per second per sender (open loop, on a fixed schedule; the
    /// scheduled time is what travels in the message, so a stall shows as
    /// latency rather than as fewer samples). 0 means closed loop.
    pub rate_per_sender: f64,
    /// When above 0, the total messages per second, shared by the senders
    /// (overrides `rate_per_sender`).
    pub total_rate: f64,
    /// Closed loop (rate 0): messages a sender keeps in flight.
    pub window: u32,
    /// Closed loop: pause after each completed message, in milliseconds.
    pub think_time_ms: u64,
    /// Bytes of each message body (at least what the timestamp needs).
    pub message_size: usize,

    /// New connections per second in all; 0 means as fast as they go.
    pub connect_rate: f64,
    /// Connection attempts in flight at once, per worker.
    pub connect_concurrency: u32,
    /// How long the measured part runs, in seconds.
    pub duration_s: f64,
    /// After `duration_s`, how long to wait for messages still in flight.
    pub drain_s: f64,
    /// After everything is connected and before the measured part, how long
    /// to let the targets settle (for their idle memory figure).
    pub settle_s: f64,
    /// Worker processes; 0 picks enough for `max_sockets_per_worker`.
    pub workers: u32,
    /// The most sockets one worker process opens (the fd limit here is
    /// 20,000 per process).
    pub max_sockets_per_worker: u32,
    /// Source addresses 127.0.0.2, 127.0.0.3, ... used round robin (at most
    /// 253), so that no address runs out of ephemeral ports.
    pub source_addrs: u32,
}

impl Default for Scenario {
    fn default() -> Scenario {
        Scenario {
            name: "run".into(),
            protocol: Protocol::Bench,
            targets: vec!["ws://127.0.0.1:9000/ws".into()],
            api: "http://127.0.0.1:8080".into(),
            metrics: Vec::new(),
            connections: 100,
            mode: BenchMode::Echo,
            users: 100,
            online_users: 0,
            connections_per_user: 1,
            groups: Vec::new(),
            senders: 0,
            rate_per_sender: 0.0,
            total_rate: 0.0,
            window: 1,
            think_time_ms: 0,
            message_size: 100,
            connect_rate: 0.0,
            connect_concurrency: 256,
            duration_s: 10.0,
            drain_s: 2.0,
            settle_s: 0.0,
            workers: 0,
            max_sockets_per_worker: 15_000,
            source_addrs: 253,
        }
    }
}

/// A scenario that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid scenario: {source}")]
    Parse {
        path: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

impl Scenario {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&text).map_err(|source| ScenarioError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
        })
    }

    pub fn parse(text: &str) -> Result<Scenario, toml::de::Error> {
        toml::from_str(text)
    }

    /// Connections the run opens in all.
    pub fn total_connections(&self) -> u32 {
        match self.protocol {
            Protocol::Bench => self.connections,
            Protocol::Chat => self.online() * self.connections_per_user,
        }
    }

    /// Chat: how many users connect.
    pub fn online(&self) -> u32 {
        if self.online_users == 0 {
            self.users
        } else {
            self.online_users.min(self.users)
        }
    }

    /// How many connections (bench) or users (chat) send.
    pub fn sender_count(&self) -> u32 {
        if self.mode == BenchMode::Idle {
            return 0;
        }
        let candidates = match self.protocol {
            Protocol::Bench => self.connections,
            Protocol::Chat => self.online(),
        };
        if self.senders == 0 {
            candidates
        } else {
            self.senders.min(candidates)
        }
    }

    /// Messages per second each sender sends; 0 for closed loop.
    pub fn sender_rate(&self) -> f64 {
        let senders = self.sender_count();
        if self.total_rate > 0.0 && senders > 0 {
            self.total_rate / f64::from(senders)
        } else {
            self.rate_per_sender
        }
    }

    /// How many worker processes to start.
    pub fn worker_count(&self) -> u32 {
        if self.workers > 0 {
            return self.workers;
        }
        self.total_connections()
            .div_ceil(self.max_sockets_per_worker.max(1))
            .max(1)
    }

    /// Checks what parsing cannot.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: &str| Err(ScenarioError::Invalid(m.to_string()));
        if self.targets.is_empty() {
            return bad("no targets");
        }
        if self.total_connections() == 0 {
            return bad("no connections");
        }
        if self.duration_s <= 0.0 || self.duration_s > 3600.0 {
            return bad("duration_s must be in (0, 3600]");
        }
        if !(0.0..=60.0).contains(&self.drain_s) || !(0.0..=600.0).contains(&self.settle_s) {
            return bad("drain_s must be in [0, 60] and settle_s in [0, 600]");
        }
        if self.source_addrs == 0 || self.source_addrs > 253 {
            return bad("source_addrs must be 1 to 253");
        }
        if self.rate_per_sender < 0.0 || self.total_rate < 0.0 {
            return bad("rates cannot be negative");
        }
        if self.sender_rate() == 0.0 && self.window == 0 {
            return bad("closed loop (no rate) needs window >= 1");
        }
        if self.message_size < crate::body::MIN_SIZE || self.message_size > 1 << 20 {
            return bad("message_size must be between 32 bytes and 1 MiB");
        }
        let per_worker = self.total_connections().div_ceil(self.worker_count());
        if per_worker > 19_000 {
            return bad("more than 19,000 sockets in one worker: raise workers");
        }
        if self.protocol == Protocol::Chat {
            for group in &self.groups {
                if group.size < 2 || group.size > self.users {
                    return bad("a group needs 2 to `users` members");
                }
            }
        }
        Ok(())
    }
}

/// Command-line changes to a scenario; each `Some` replaces the field.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, value_parser = parse_protocol)]
    pub protocol: Option<Protocol>,
    /// WebSocket URL; repeat for several.
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// A `/metrics` URL to read hop timings from; repeat for several.
    #[arg(long = "metrics")]
    pub metrics: Vec<String>,
    #[arg(long)]
    pub api: Option<String>,
    #[arg(long)]
    pub connections: Option<u32>,
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<BenchMode>,
    #[arg(long)]
    pub users: Option<u32>,
    #[arg(long)]
    pub online_users: Option<u32>,
    #[arg(long)]
    pub connections_per_user: Option<u32>,
    /// A group kind as COUNTxSIZE (e.g. 10x50); repeat for several. Replaces
    /// the file's groups.
    #[arg(long = "groups", value_parser = parse_group)]
    pub groups: Vec<GroupSpec>,
    #[arg(long)]
    pub senders: Option<u32>,
    #[arg(long)]
    pub rate_per_sender: Option<f64>,
    #[arg(long)]
    pub total_rate: Option<f64>,
    #[arg(long)]
    pub window: Option<u32>,
    #[arg(long)]
    pub think_time_ms: Option<u64>,
    #[arg(long)]
    pub message_size: Option<usize>,
    #[arg(long)]
    pub connect_rate: Option<f64>,
    #[arg(long)]
    pub connect_concurrency: Option<u32>,
    #[arg(long)]
    pub duration_s: Option<f64>,
    #[arg(long)]
    pub drain_s: Option<f64>,
    #[arg(long)]
    pub settle_s: Option<f64>,
    #[arg(long)]
    pub workers: Option<u32>,
    #[arg(long)]
    pub source_addrs: Option<u32>,
}

impl Overrides {
    pub fn apply(&self, s: &mut Scenario) {
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = &self.$field {
                    s.$field = v.clone();
                }
            )*};
        }
        set!(
            name,
            protocol,
            api,
            connections,
            mode,
            users,
            online_users,
            connections_per_user,
            senders,
            rate_per_sender,
            total_rate,
            window,
            think_time_ms,
            message_size,
            connect_rate,
            connect_concurrency,
            duration_s,
            drain_s,
            settle_s,
            workers,
            source_addrs
        );
        if !self.targets.is_empty() {
            s.targets = self.targets.clone();
        }
        if !self.metrics.is_empty() {
            s.metrics = self.metrics.clone();
        }
        if !self.groups.is_empty() {
            s.groups = self.groups.clone();
        }
    }
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "chat" => Ok(Protocol::Chat),
        "bench" => Ok(Protocol::Bench),
        _ => Err(format!("unknown protocol {s:?} (chat or bench)")),
    }
}

fn parse_mode(s: &str) -> Result<BenchMode, String> {
    match s {
        "idle" => Ok(BenchMode::Idle),
        "echo" => Ok(BenchMode::Echo),
        "broadcast" => Ok(BenchMode::Broadcast),
        _ => Err(format!("unknown mode {s:?} (idle, echo or broadcast)")),
    }
}

fn parse_group(s: &str) -> Result<GroupSpec, String> {
    let (count, size) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?} is not COUNTxSIZE"))?;
    let number = |v: &str| v.parse::<u32>().map_err(|e| format!("{s:?}: {e}"));
    Ok(GroupSpec {
        count: number(count)?,
        size: number(size)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_names_only_what_differs() {
        let s = Scenario::parse(
            r#"
            name = "g"
            protocol = "chat"
            users = 1000
            senders = 10
            rate_per_sender = 1.0
            [[groups]]
            count = 1
            size = 1000
            "#,
        )
        .unwrap();
        assert_eq!(s.protocol, Protocol::Chat);
        assert_eq!(
            s.groups,
            vec![GroupSpec {
                count: 1,
                size: 1000
            }]
        );
        assert_eq!(s.message_size, Scenario::default().message_size);
        assert_eq!(s.total_connections(), 1000);
        assert_eq!(s.sender_count(), 10);
        assert_eq!(s.sender_rate(), 1.0);
        s.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(Scenario::parse("conections = 5").is_err());
        assert!(Scenario::parse("mode = \"shout\"").is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let mut s = Scenario::parse("connections = 10\ntotal_rate = 100.0").unwrap();
        let o = Overrides {
            connections: Some(40),
            senders: Some(4),
            groups: vec![parse_group("3x7").unwrap()],
            targets: vec!["ws://a/".into(), "ws://b/".into()],
            ..Overrides::default()
        };
        o.apply(&mut s);
        assert_eq!(s.connections, 40);
        assert_eq!(s.targets.len(), 2);
        assert_eq!(s.groups, vec![GroupSpec { count: 3, size: 7 }]);
        // The total rate is shared by the senders.
        assert_eq!(s.sender_rate(), 25.0);
    }

    #[test]
    fn workers_keep_under_the_socket_cap() {
        let s = Scenario {
            connections: 19_000,
            ..Scenario::default()
        };
        assert_eq!(s.worker_count(), 2);
        let s = Scenario {
            connections: 19_000,
            workers: 1,
            ..Scenario::default()
        };
        assert!(s.validate().is_ok());
        let s = Scenario {
            connections: 40_000,
            workers: 1,
            ..Scenario::default()
        };
        assert!(s.validate().is_err());
    }

    #[test]
    fn idle_bench_runs_have_no_senders() {
        let s = Scenario {
            mode: BenchMode::Idle,
            senders: 5,
            ..Scenario::default()
        };
        assert_eq!(s.sender_count(), 0);
    }

    #[test]
    fn bad_values_are_refused() {
        for text in [
            "duration_s = 0.0",
            "targets = []",
            "message_size = 4",
            "source_addrs = 300",
            "window = 0",
        ] {
            let s = Scenario::parse(text).unwrap();
            assert!(s.validate().is_err(), "{text} was accepted");
        }
        assert!(parse_group("10by5").is_err());
    }
}
