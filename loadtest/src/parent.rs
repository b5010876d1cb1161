//! The parent of a run: prepares (chat users and convs), starts the worker
//! processes, prints a progress line every second, tells the workers to
//! go once all are connected, samples the target processes, and builds the
//! [`Report`].

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::body;
use crate::procstat::{self, Target};
use crate::report::{
    Buckets, ConnectSummary, Machine, MachineLoad, Report, RunSummary, TargetReport,
};
use crate::scenario::{Protocol, Scenario};
use crate::stats::LatencySummary;
use crate::wire::{ChatConn, FromWorker, ToWorker, WorkerTask};

/// Where a run's files go and where cached users live.
pub struct Paths<'a> {
    pub user_cache: &'a Path,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
}

/// Runs `s` against `targets` (processes to sample) and returns the report.
pub async fn run(s: &Scenario, targets: &[Target], paths: Paths<'_>) -> anyhow::Result<Report> {
    s.validate()?;
    let chat = match s.protocol {
        Protocol::Chat => crate::chat::prepare(s, paths.user_cache).await?,
        Protocol::Bench => Vec::new(),
    };
    let workers = s.worker_count();
    let mut reports: Vec<TargetReport> = targets.iter().map(TargetReport::from).collect();
    let mut load = MachineLoad::default();
    let mut machine_at_go = None;
    let mut hops_at_go = crate::hops::Scrapes::new();
    let sample_all = |reports: &[TargetReport]| -> Vec<Option<procstat::ProcSample>> {
        reports.iter().map(|t| procstat::sample(t.pid)).collect()
    };
    let before = sample_all(&reports);
    for (t, sample) in reports.iter_mut().zip(before) {
        t.before = sample;
    }

    let started_unix_s = body::now_ns() / 1_000_000_000;
    let t0_ns = body::now_ns();
    let t0 = Instant::now();
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    let mut procs = Vec::new();
    for index in 0..workers {
        let mine: Vec<ChatConn> = chat
            .iter()
            .enumerate()
            .filter(|(k, _)| *k as u32 % workers == index)
            .map(|(_, c)| c.clone())
            .collect();
        let task = WorkerTask {
            scenario: s.clone(),
            index,
            workers,
            t0_ns,
            chat: mine,
        };
        procs.push(spawn_worker(&task, lines_tx.clone()).await?);
    }
    drop(lines_tx);

    let mut buckets = Buckets::default();
    let mut ready = 0u32;
    let mut done = 0u32;
    let mut connect_s = 0.0;
    let mut settle_until: Option<Instant> = None;
    let mut go_at: Option<Instant> = None;
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    let connect_budget = 120.0
        + if s.connect_rate > 0.0 {
            f64::from(s.total_connections()) / s.connect_rate
        } else {
            0.0
        };
    let deadline =
        t0 + Duration::from_secs_f64(connect_budget + s.settle_s + s.duration_s + s.drain_s + 30.0);

    while done < workers {
        if Instant::now() > deadline {
            for p in &mut procs {
                let _ = p.child.start_kill();
            }
            anyhow::bail!("the run did not finish in time; workers killed");
        }
        tokio::select! {
            line = lines.recv() => {
                let Some((index, line)) = line else {
                    anyhow::bail!("every worker's output ended before it was done");
                };
                let message: FromWorker = serde_json::from_str(&line)
                    .with_context(|| format!("worker {index} wrote {line:?}"))?;
                match message {
                    FromWorker::Tick { second, tick } => {
                        buckets.add(second, &tick).map_err(anyhow::Error::msg)?;
                    }
                    FromWorker::Ready => {
                        ready += 1;
                        if ready == workers {
                            connect_s = t0.elapsed().as_secs_f64();
                            let samples = sample_all(&reports);
                            for (t, sample) in reports.iter_mut().zip(samples) {
                                t.connected = sample;
                            }
                            settle_until = Some(Instant::now() + Duration::from_secs_f64(s.settle_s));
                        }
                    }
                    FromWorker::Done => done += 1,
                }
            }
            _ = progress.tick() => {
                eprintln!("{}", progress_line(&buckets, t0, &reports, s));
                if let Some(until) = settle_until {
                    if go_at.is_none() && Instant::now() >= until {
                        hops_at_go = crate::hops::scrape(&s.metrics).await;
                        go_at = Some(send_go(&mut procs, &mut reports, &sample_all).await?);
                        load.loadavg_start = procstat::loadavg();
                        machine_at_go = procstat::machine_cpu_s().map(|(busy, _)| (busy, Instant::now()));
                    }
                }
            }
        }
    }
    for p in &mut procs {
        let status = tokio::time::timeout(Duration::from_secs(10), p.child.wait()).await;
        if !matches!(status, Ok(Ok(s)) if s.success()) {
            eprintln!("a worker did not exit cleanly: {status:?}");
        }
    }
    let samples = sample_all(&reports);
    for (t, sample) in reports.iter_mut().zip(samples) {
        t.end = sample;
    }
    let hops_at_end = crate::hops::scrape(&s.metrics).await;
    let hops = crate::hops::between(&s.metrics, &hops_at_go, &hops_at_end);
    load.loadavg_end = procstat::loadavg();
    if let (Some((busy0, at)), Some((busy1, _))) = (machine_at_go, procstat::machine_cpu_s()) {
        let wall = at.elapsed().as_secs_f64();
        if wall > 0.0 {
            load.busy_cores = (busy1 - busy0) / wall;
        }
    }
    let run_wall_s = go_at.map_or(0.0, |g| g.elapsed().as_secs_f64());

    let (all, running, latency, ack_latency) = buckets.totals();
    let seconds = s.duration_s;
    let run = RunSummary {
        seconds,
        sent: running.sent,
        acked: running.acked,
        delivered: running.delivered,
        expected: running.expected,
        duplicates: running.duplicates,
        dropped: all.dropped,
        errors: all.errors.clone(),
        sent_per_s: running.sent as f64 / seconds,
        acked_per_s: running.acked as f64 / seconds,
        delivered_per_s: running.delivered as f64 / seconds,
        latency: LatencySummary::of(&latency),
        ack_latency: LatencySummary::of(&ack_latency),
    };
    for t in &mut reports {
        t.derive(all.connected, run_wall_s, running.delivered, running.acked);
    }
    Ok(Report {
        scenario: s.clone(),
        started_unix_s,
        machine: Machine::this(),
        load,
        workers,
        connect: ConnectSummary {
            attempted: u64::from(s.total_connections()),
            connected: all.connected,
            failed: all.connect_failed,
            seconds: connect_s,
            rate_per_s: if connect_s > 0.0 {
                all.connected as f64 / connect_s
            } else {
                0.0
            },
        },
        run,
        targets: reports,
        timeline: buckets.timeline(),
        hops,
    })
}

async fn send_go(
    procs: &mut [Worker],
    reports: &mut [TargetReport],
    sample_all: &dyn Fn(&[TargetReport]) -> Vec<Option<procstat::ProcSample>>,
) -> anyhow::Result<Instant> {
    let samples = sample_all(reports);
    for (t, sample) in reports.iter_mut().zip(samples) {
        t.idle = sample;
    }
    // A little ahead, so every worker gets the line before the start.
    let lead = Duration::from_millis(100);
    let go = ToWorker::Go {
        start_ns: body::now_ns() + lead.as_nanos() as u64,
    };
    let line = serde_json::to_string(&go)? + "\n";
    for p in procs.iter_mut() {
        p.stdin.write_all(line.as_bytes()).await?;
        p.stdin.flush().await?;
    }
    Ok(Instant::now() + lead)
}

async fn spawn_worker(
    task: &WorkerTask,
    lines: mpsc::UnboundedSender<(u32, String)>,
) -> anyhow::Result<Worker> {
    let exe = std::env::current_exe().context("finding this program to start workers")?;
    let mut child = Command::new(exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting a worker")?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let line = serde_json::to_string(task)? + "\n";
    stdin.write_all(line.as_bytes()).await?;
    stdin.flush().await?;
    let index = task.index;
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if lines.send((index, line)).is_err() {
                break;
            }
        }
    });
    Ok(Worker { child, stdin })
}

fn progress_line(buckets: &Buckets, t0: Instant, targets: &[TargetReport], s: &Scenario) -> String {
    let timeline = buckets.timeline();
    let last = timeline.last();
    let mut line = format!(
        "[{:6.1}s] {} conns {}/{}",
        t0.elapsed().as_secs_f64(),
        s.name,
        last.map_or(0, |p| p.connected),
        s.total_connections()
    );
    if let Some(p) = last {
        line += &format!(
            " | sent {}/s acked {}/s delivered {}/s p50 {:.2}ms p99 {:.2}ms errors {}",
            p.sent,
            p.acked,
            p.delivered,
            p.p50_us as f64 / 1000.0,
            p.p99_us as f64 / 1000.0,
            p.errors
        );
    }
    for t in targets {
        if let Some(now) = procstat::sample(t.pid) {
            line += &format!(" | {} rss {:.0}MB", t.name, now.rss_kb as f64 / 1024.0);
        }
    }
    line
}
