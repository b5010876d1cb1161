//! `oceanchat-loadtest`: see the crate documentation and `--help`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use oceanchat_loadtest::procstat::Target;
use oceanchat_loadtest::scenario::{Overrides, Scenario};
use oceanchat_loadtest::{faults, parent, report, tables, worker};

// A worker process receives every delivery of its connections on one
// thread, so what each frame costs adds up within a burst and shows in the
// latency it reports: glibc's malloc took a tenth of that thread.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "oceanchat-loadtest",
    about = "Load generator for OceanChat and the comparison protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Runs a scenario and writes report.json and report.svg.
    Run {
        /// A TOML scenario file; without one, the defaults and the flags.
        scenario: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
        /// A process to sample (CPU, RSS) as NAME=PID; repeat for several.
        #[arg(long = "pid")]
        pids: Vec<Target>,
        /// Where the report files go.
        #[arg(long, default_value = ".run/loadtest")]
        out: PathBuf,
        /// The chat users cache (registered users and tokens, by API URL).
        #[arg(long, default_value = ".cache/loadtest-users.json")]
        user_cache: PathBuf,
    },
    /// Prints the peer comparison table from the reports under DIR
    /// (DIR/<server>/<phase>.json, as bench/peers/run writes them).
    PeersTable { dir: PathBuf },
    /// Writes the capacity report (markdown) from the reports under DIR.
    CapacityReport {
        dir: PathBuf,
        #[arg(long, default_value = "docs/capacity.md")]
        out: PathBuf,
        /// The command that produced the reports, quoted in the document.
        #[arg(long, default_value = "loadtest/capacity")]
        command: String,
        /// The source revision measured (e.g. a commit), quoted likewise.
        #[arg(long, default_value = "")]
        revision: String,
    },
    /// Kills every component in turn (SIGKILL, then a restart) under a chat
    /// load through nginx, on a system of its own (2 gateways, 2 backends,
    /// a 3-node NATS cluster, Redis, SecantusDB, on free loopback ports),
    /// then checks that nothing acknowledged was lost or duplicated and
    /// every client caught up; prints a table per fault. Exits 1 if not.
    Faults {
        /// One round of each fault with a small load (what CI runs); the
        /// default is three rounds of each.
        #[arg(long)]
        quick: bool,
    },
    /// A worker process (started by `run` itself).
    #[command(hide = true)]
    Worker,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker => worker::main(),
        Command::Run {
            scenario,
            overrides,
            pids,
            out,
            user_cache,
        } => {
            let mut s = match scenario {
                Some(path) => Scenario::load(&path)?,
                None => Scenario::default(),
            };
            overrides.apply(&mut s);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let r = runtime.block_on(parent::run(
                &s,
                &pids,
                parent::Paths {
                    user_cache: &user_cache,
                },
            ))?;
            std::fs::create_dir_all(&out)?;
            std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&r)?)?;
            std::fs::write(out.join("report.svg"), report::svg(&r))?;
            println!("{}", r.summary_line());
            print!("{}", oceanchat_loadtest::hops::table(&r.hops));
            eprintln!("report: {}/report.json and report.svg", out.display());
            Ok(())
        }
        Command::Faults { quick } => {
            let plan = if quick {
                faults::Plan::quick()
            } else {
                faults::Plan::full()
            };
            let outcome = faults::run(plan)?;
            print!("{}", outcome.table());
            if outcome.passed() {
                Ok(())
            } else {
                anyhow::bail!("the fault run broke a promise (see the table)")
            }
        }
        Command::PeersTable { dir } => {
            print!("{}", tables::peers_table(&dir)?);
            Ok(())
        }
        Command::CapacityReport {
            dir,
            out,
            command,
            revision,
        } => {
            let text = tables::capacity_report(&dir, &command, &revision)?;
            std::fs::write(&out, text)?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
    }
}
