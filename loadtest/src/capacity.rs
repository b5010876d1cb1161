//! The capacity report (`docs/capacity.md`): costs measured on the full
//! chat stack by `loadtest/capacity`, and what one core and one 64 GiB
//! machine should carry, with the formulas.
//!
//! Inputs (in one folder): `idle.json` (idle authenticated connections),
//! `dm-1.json` to `dm-3.json` (three load levels of direct messages),
//! `group-1000.json` (the seed's group scenario), and for each run
//! `<run>.disk.json` (the stores' data folder sizes before and after).
//!
//! The per-message costs come from a least-squares fit over the four
//! loaded runs, per process and for the whole stack, of
//!     cores_used - idle_cost x connections = a x stored/s + b x delivered/s
//! (a: CPU-seconds per stored message, b: per delivered message). Direct
//! messages deliver about 2 per stored message and the group run about
//! 1,000, which is what separates the two.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::report::Report;

/// Bytes in 64 GiB, and the share of it we let connections use (the rest
/// for the OS, the stores, bursts).
const MACHINE_BYTES: f64 = 64.0 * 1024.0 * 1024.0 * 1024.0;
const USABLE: f64 = 0.8;
/// Cores assumed for "one 64 GiB machine" (4 GiB per core, a common shape).
const MACHINE_CORES: f64 = 16.0;

/// The runs the cost fit is made over, in the order the report uses
/// them; `group-1000-fast`, when present, comes after them.
const FITTED_RUNS: [&str; 4] = ["dm-1", "dm-2", "dm-3", "group-1000"];

fn load(dir: &Path, name: &str) -> anyhow::Result<Report> {
    let path = dir.join(format!("{name}.json"));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Whether the stack kept up with a run: at most 1% of the sends failed
/// and at least 99% of the expected deliveries arrived. Runs that did not
/// measure an overloaded stack, so they stay out of the cost fit.
pub fn sustained(r: &Report) -> bool {
    let errors: u64 = r.run.errors.values().sum();
    errors * 100 <= r.run.sent && r.run.delivered * 100 >= r.run.expected * 99
}

/// Cores the watched processes used during the measured part of a run.
fn cores_used(r: &Report) -> f64 {
    r.targets.iter().map(|t| t.run_cpu_util).sum()
}

/// The fit: (a, b) minimising the squared error of y = a x1 + b x2.
pub fn fit(points: &[(f64, f64, f64)]) -> Option<(f64, f64)> {
    let (mut s11, mut s12, mut s22, mut s1y, mut s2y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(x1, x2, y) in points {
        s11 += x1 * x1;
        s12 += x1 * x2;
        s22 += x2 * x2;
        s1y += x1 * y;
        s2y += x2 * y;
    }
    let det = s11 * s22 - s12 * s12;
    if det.abs() < 1e-12 * (s11 * s22).max(1e-300) {
        return None;
    }
    Some(((s1y * s22 - s2y * s12) / det, (s2y * s11 - s1y * s12) / det))
}

/// Bytes in each store's data folder before and after a run, as
/// `loadtest/capacity` writes them (`<run>.disk.json`).
#[derive(Debug, Default, serde::Deserialize)]
pub struct DiskUse {
    pub before: BTreeMap<String, u64>,
    pub after: BTreeMap<String, u64>,
}

fn load_disk(dir: &Path, name: &str) -> Option<DiskUse> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.disk.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

/// What each hop histogram times, in the words of the capacity report.
fn hop_name(series: &str) -> &'static str {
    match series.split('{').next().unwrap_or("") {
        "oc_gateway_rpc_seconds" => "gateway: a request to the backend and back",
        "oc_backend_rpc_transit_seconds" => "NATS: gateway to backend (request)",
        "oc_backend_request_seconds" if series.contains("\"send\"") => {
            "backend: `send` decoded to answered"
        }
        "oc_backend_request_seconds" => "backend: other requests",
        "oc_backend_send_queue_seconds" => "backend: a send waiting for its batch",
        "oc_backend_store_write_seconds" => "store: one batch written (SecantusDB)",
        "oc_backend_delivery_seconds" => "backend: one batch delivered (routes, publish)",
        "oc_gateway_delivery_transit_seconds" => "NATS: backend to gateway (delivery)",
        "oc_gateway_delivery_handoff_seconds" => "gateway: bridge thread to core",
        "oc_gateway_event_loop_lag_seconds" => "gateway: event-loop lag (10 ms probe)",
        _ => "other",
    }
}

/// The hop timings of one run, with its end-to-end figures beside them.
fn hop_table(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "**{}** ({:.0} messages/s stored): send→delivery p50 {:.2} ms, p99 {:.2} ms; \
         send→ok p50 {:.2} ms, p99 {:.2} ms.\n",
        r.scenario.name,
        r.run.acked_per_s,
        ms(r.run.latency.p50_us),
        ms(r.run.latency.p99_us),
        ms(r.run.ack_latency.p50_us),
        ms(r.run.ack_latency.p99_us)
    );
    if r.hops.is_empty() {
        let _ = writeln!(o, "(no hop timings: the run read no `/metrics`)\n");
        return o;
    }
    let _ = writeln!(o, "| hop | from | series | count | p50 ms | p99 ms |");
    let _ = writeln!(o, "| --- | --- | --- | ---: | ---: | ---: |");
    for h in &r.hops {
        let from = h
            .source
            .trim_start_matches("http://")
            .trim_end_matches("/metrics");
        let _ = writeln!(
            o,
            "| {} | {} | `{}` | {} | {:.3} | {:.3} |",
            hop_name(&h.series),
            from,
            h.series,
            h.count,
            h.p50_ms,
            h.p99_ms
        );
    }
    let _ = writeln!(o);
    o
}

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

/// `load 1.2 → 3.4, busy 1.8 cores`: what the machine did around a run.
fn load_note(r: &Report) -> String {
    let first = |s: &str| s.split_whitespace().next().unwrap_or("?").to_string();
    format!(
        "{} → {} ({:.2} cores busy)",
        first(&r.load.loadavg_start),
        first(&r.load.loadavg_end),
        r.load.busy_cores
    )
}

pub fn report(dir: &Path, command: &str, revision: &str) -> anyhow::Result<String> {
    let idle = load(dir, "idle")?;
    let mut loaded: Vec<Report> = FITTED_RUNS
        .iter()
        .map(|n| load(dir, n))
        .collect::<anyhow::Result<_>>()?;
    // The seed's group at ten times its rate; report folders of older
    // runs do not have it.
    if let Ok(fast) = load(dir, "group-1000-fast") {
        loaded.push(fast);
    }
    let date = chrono_like(idle.started_unix_s);
    let m = &idle.machine;
    let mut o = String::new();
    let _ = writeln!(o, "# Capacity\n");
    let _ = writeln!(
        o,
        "Generated by `{command}` on {date}{}, on this project's development machine: {} cores ({}), \
         {} GiB, Linux {}, **shared with other builds and benchmarks** (the load average and the \
         machine's busy cores are given next to every run; the stack and the load generator \
         themselves account for part of them).\n\n\
         The stack: two `oceanchat-gateway`, one `oceanchat-backend`, Redis, NATS (JetStream) and \
         **SecantusDB in place of MongoDB** (a MongoDB wire-compatible server written in Python, \
         much slower than `mongod`: about 500-700 single inserts/s and 7-12k documents/s batched on \
         this machine), all release builds started by `scripts/up` on non-default ports with a \
         fresh data folder. The load generator (`oceanchat-loadtest`) ran pinned to core 1; the \
         stack ran on both cores. All figures are as measured; CPU figures are CPU time actually \
         used, so they carry over to other machines better than throughput does.\n",
        if revision.is_empty() {
            String::new()
        } else {
            format!(" (source: {revision})")
        },
        m.cpus,
        m.cpu_model,
        m.memory_gib,
        m.kernel
    );

    // --- idle connections ------------------------------------------------
    let conns = idle.connect.connected.max(1) as f64;
    let _ = writeln!(o, "## Cost of an idle connection\n");
    let _ = writeln!(
        o,
        "{} idle authenticated connections ({} users × {}), spread over both gateways; RSS before \
         connecting and after {} s of settling, CPU over the {} s after that. Load: {}.\n",
        idle.connect.connected,
        idle.scenario.users,
        idle.scenario.connections_per_user,
        idle.scenario.settle_s,
        idle.scenario.duration_s,
        load_note(&idle)
    );
    // The load generator spreads connections evenly over its targets, so
    // each gateway holds its share of them; the other processes serve
    // every connection.
    let gateways = idle
        .targets
        .iter()
        .filter(|t| t.name.starts_with("gateway"))
        .count()
        .max(1);
    let _ = writeln!(
        o,
        "| process | RSS bytes per connection of the stack | RSS bytes per connection it holds | CPU µs per connection per second |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|");
    let mut mem_total = 0.0;
    let mut cpu_total = 0.0;
    let mut mem_gateways = 0.0;
    let mut idle_cpu_by_name: BTreeMap<String, f64> = BTreeMap::new();
    for t in &idle.targets {
        let bytes = t.idle_bytes_per_conn.unwrap_or(0.0);
        let cpu_us = t.run_cpu_util * 1e6 / conns;
        // A process whose RSS fell over the phase freed memory of its own
        // (noise, not a saving per connection): it adds nothing.
        mem_total += bytes.max(0.0);
        cpu_total += cpu_us;
        idle_cpu_by_name.insert(t.name.clone(), cpu_us);
        let held = if t.name.starts_with("gateway") {
            mem_gateways += bytes.max(0.0);
            bytes * gateways as f64
        } else {
            bytes
        };
        let _ = writeln!(
            o,
            "| {} | {:.0} | {:.0} | {:.3} |",
            t.name, bytes, held, cpu_us
        );
    }
    let _ = writeln!(
        o,
        "| **all** | **{:.0}** | | **{:.3}** |\n",
        mem_total, cpu_total
    );
    let _ = writeln!(
        o,
        "Connect rate through the whole stack (tokens issued over HTTP beforehand, WebSocket \
         upgrade, `auth` with its route written to Redis), with the load generator on one core: \
         {:.0} connections/s ({} failed). Each of the {gateways} gateways holds 1/{gateways} of the \
         connections (the load generator spreads them evenly over its targets): what one gateway \
         needs per connection it serves is the second column, what the stack needs per \
         connection the first. RSS differences are taken from the kernel's `VmRSS`; a \
         process that frees memory keeps part of it, so small figures are noisy, and a negative one \
         (the process freed more than the connections took) counts as 0 in the sum.\n",
        idle.connect.rate_per_s, idle.connect.failed
    );

    // --- loaded runs -------------------------------------------------------
    let _ = writeln!(o, "## Runs under load\n");
    let _ = writeln!(
        o,
        "dm-1 to dm-3: every online user sends direct messages to the next user (2 deliveries per \
         message: the peer's connection and the sender's own), at three total rates. group-1000: \
         the seed scenario below; group-1000-fast: the same group at ten times its rate (100 \
         messages/s, 100,000 deliveries/s). `delivered / expected` compares the distinct `(conv, seq)` \
         deliveries counted on the connections with what the acknowledged sends should cause.\n"
    );
    let _ = writeln!(
        o,
        "| run | connections | stored msg/s | delivered msg/s | delivered / expected (dupes) | \
         cores used by the stack | delivery p50 / p99 / p99.9 ms | send→ok p50 / p99 ms | errors | \
         load avg (machine busy) |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---|---:|---|---|---|---|");
    for r in &loaded {
        let errors: Vec<String> = r
            .run
            .errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let l = &r.run.latency;
        let a = &r.run.ack_latency;
        let _ = writeln!(
            o,
            "| {} | {} | {:.1} | {:.1} | {} / {} ({}) | {:.3} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} | {} | {} |",
            r.scenario.name,
            r.connect.connected,
            r.run.acked_per_s,
            r.run.delivered_per_s,
            r.run.delivered,
            r.run.expected,
            r.run.duplicates,
            cores_used(r),
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(a.p50_us),
            ms(a.p99_us),
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(", ")
            },
            load_note(r)
        );
    }

    // --- per process -----------------------------------------------------------
    let names: Vec<String> = loaded[0].targets.iter().map(|t| t.name.clone()).collect();
    let _ = writeln!(
        o,
        "\n### CPU-seconds by process\n\nCPU-seconds each process used in the measured part \
         (sending plus drain), and in brackets per stored message (µs):\n"
    );
    let _ = writeln!(o, "| run | stored | delivered | {} |", names.join(" | "));
    let _ = writeln!(o, "|---|---:|---:|{}", "---:|".repeat(names.len()));
    for r in &loaded {
        let cells: Vec<String> = r
            .targets
            .iter()
            .map(|t| {
                format!(
                    "{:.2} ({:.0})",
                    t.run_cpu_s,
                    t.run_cpu_s * 1e6 / r.run.acked.max(1) as f64
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            r.scenario.name,
            r.run.acked,
            r.run.delivered,
            cells.join(" | ")
        );
    }

    // Per process: cores_p - idle_p × conns = a_p × stored/s + b_p × delivered/s.
    let _ = writeln!(
        o,
        "\n### Cost per stored and per delivered message\n\n\
         For each process, a least-squares fit over the loaded runs of\n\n\
         `cores_used − idle_cpu_per_conn × connections = a × stored/s + b × delivered/s`\n\n\
         gives a (CPU per stored message: the send, its seq, the write, the reply) and b (CPU per \
         delivered message: fan-out, framing, the socket write). Direct messages deliver 2 per \
         stored message and the group run 1,000, which is what separates the two. A negative or \
         missing figure means the runs did not separate it from noise.\n"
    );
    let _ = writeln!(
        o,
        "| process | a: µs per stored message | b: µs per delivered message |"
    );
    let _ = writeln!(o, "|---|---:|---:|");
    // The fast group run loads the machine to its limit, where costs per
    // message are not those of the other runs (fewer wake-ups per message,
    // more frames per write, all cores contended): it is shown, not fitted.
    let fit_runs = &loaded[..FITTED_RUNS.len()];
    let fitted: Vec<&Report> = fit_runs.iter().filter(|r| sustained(r)).collect();
    let left_out: Vec<&str> = fit_runs
        .iter()
        .filter(|r| !sustained(r))
        .map(|r| r.scenario.name.as_str())
        .collect();
    if !left_out.is_empty() {
        let _ = writeln!(
            o,
            "Left out of the fit, because the stack did not keep up (over 1% of sends failed or \
             under 99% of the deliveries arrived): {}.\n",
            left_out.join(", ")
        );
    }
    let mut points = Vec::new();
    for r in &fitted {
        let baseline = cpu_total / 1e6 * r.connect.connected as f64;
        points.push((
            r.run.acked_per_s,
            r.run.delivered_per_s,
            cores_used(r) - baseline,
        ));
    }
    let mut costs: Vec<ProcessCost> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let idle_us = idle_cpu_by_name.get(name).copied().unwrap_or(0.0);
        let pts: Vec<(f64, f64, f64)> = fitted
            .iter()
            .filter_map(|r| {
                let t = r.targets.get(i)?;
                Some((
                    r.run.acked_per_s,
                    r.run.delivered_per_s,
                    t.run_cpu_util - idle_us / 1e6 * r.connect.connected as f64,
                ))
            })
            .collect();
        let ab = fit(&pts);
        costs.push(ProcessCost {
            name: name.clone(),
            idle_s_per_conn: idle_us / 1e6,
            per_stored_and_delivered: ab,
        });
        match ab {
            Some((a, b)) => {
                let _ = writeln!(o, "| {name} | {:.1} | {:.3} |", a * 1e6, b * 1e6);
            }
            None => {
                let _ = writeln!(o, "| {name} | – | – |");
            }
        }
    }
    let whole = fit(&points);
    if let Some((a, b)) = whole {
        let _ = writeln!(o, "| **all** | **{:.1}** | **{:.3}** |", a * 1e6, b * 1e6);
        let _ = writeln!(
            o,
            "\nThe model has one cost per stored message whatever the conv, so whatever a group \
             message costs more than a direct one to store shows up as b in the processes that do \
             no work per delivery (SecantusDB, the backend, Redis). The processes that do work per \
             delivery are the gateways (framing and the socket write) and NATS (one topic message \
             per gateway, not per member)."
        );
    }
    if let Some(fast) = loaded.get(FITTED_RUNS.len()) {
        // CPU per delivered message as measured, idle work included, in
        // the seed run and in the same group at ten times its rate.
        let per_delivery = |r: &Report| -> String {
            r.targets
                .iter()
                .map(|t| {
                    let us = t.run_cpu_s * 1e6 / r.run.delivered.max(1) as f64;
                    format!("{} {us:.2}", t.name)
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            o,
            "
{} is not in the fit: it loads the machine to its limit (the stack and the load \
             generator use both cores), where a message costs what it does not cost in the other \
             runs (fewer wake-ups per message, more frames per socket write, every core \
             contended). Its CPU-seconds per delivered message, in µs, each process's idle work \
             included: {}; in {} (10 messages/s): {}.",
            fast.scenario.name,
            per_delivery(fast),
            loaded[3].scenario.name,
            per_delivery(&loaded[3]),
        );
    }

    if let Ok(checked) = load(dir, "predict") {
        o.push_str(&prediction_section(&costs, m.cpus, &checked));
    }

    // Bytes: memory growth and disk growth per stored message.
    let _ = writeln!(
        o,
        "\n### Bytes per stored message\n\nRSS growth of each process over the measured part \
         divided by the messages stored in it (memory a process keeps per message, or buffers \
         it grew; negative when it returned memory), and the growth of each store's data folder \
         per stored message (`du` of SecantusDB's storage, Redis's append-only file, NATS's \
         JetStream folder):\n"
    );
    let disk_names: Vec<String> = load_disk(dir, "dm-1")
        .map(|d| d.after.keys().cloned().collect())
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "| run | {} | {} |",
        names
            .iter()
            .map(|n| format!("{n} RSS"))
            .collect::<Vec<_>>()
            .join(" | "),
        disk_names
            .iter()
            .map(|n| format!("{n} disk"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(o, "|---|{}", "---:|".repeat(names.len() + disk_names.len()));
    for r in &loaded {
        let stored = r.run.acked.max(1) as f64;
        let mut cells: Vec<String> = r
            .targets
            .iter()
            .map(|t| match (t.idle, t.end) {
                (Some(a), Some(b)) => {
                    format!(
                        "{:.0}",
                        (b.rss_kb as f64 - a.rss_kb as f64) * 1024.0 / stored
                    )
                }
                _ => "–".into(),
            })
            .collect();
        let disk = load_disk(dir, &r.scenario.name).unwrap_or_default();
        for n in &disk_names {
            match (disk.before.get(n), disk.after.get(n)) {
                (Some(&a), Some(&b)) => {
                    cells.push(format!("{:.0}", (b as f64 - a as f64) / stored));
                }
                _ => cells.push("–".into()),
            }
        }
        let _ = writeln!(o, "| {} | {} |", r.scenario.name, cells.join(" | "));
    }

    // --- the seed scenario ---------------------------------------------------
    let g = &loaded[3];
    let _ = writeln!(
        o,
        "\n## The seed scenario: a group of {} members\n",
        g.scenario.groups.first().map_or(0, |s| s.size)
    );
    let _ = writeln!(
        o,
        "{} members, all online (one connection each, over both gateways), {} senders at {} \
         message/s each for {} s, {}-byte bodies (`loadtest/scenarios/group-1000.toml`; here \
         with the ports of the capacity run). Load: {}.\n\n\
         - send-to-delivery latency: p50 **{:.2} ms**, p99 **{:.2} ms**, p99.9 **{:.2} ms** \
         (max {:.2} ms), over {} deliveries\n\
         - sustained: {:.1} messages/s stored, **{:.0} deliveries/s**; {} of {} expected \
         deliveries arrived ({} duplicates), errors: {}\n\
         - send→ok: p50 {:.2} ms, p99 {:.2} ms\n",
        g.scenario.groups.first().map_or(0, |s| s.size),
        g.scenario.senders,
        g.scenario.rate_per_sender,
        g.scenario.duration_s,
        g.scenario.message_size,
        load_note(g),
        ms(g.run.latency.p50_us),
        ms(g.run.latency.p99_us),
        ms(g.run.latency.p999_us),
        ms(g.run.latency.max_us),
        g.run.delivered,
        g.run.acked_per_s,
        g.run.delivered_per_s,
        g.run.delivered,
        g.run.expected,
        g.run.duplicates,
        if g.run.errors.is_empty() {
            "none".to_string()
        } else {
            format!("{:?}", g.run.errors)
        },
        ms(g.run.ack_latency.p50_us),
        ms(g.run.ack_latency.p99_us),
    );
    let _ = writeln!(
        o,
        "A group message is published once to the group's NATS topic (`oc.t.grp.<id>`); each \
         gateway holding members writes the pre-encoded frame to its local followers \
         (docs/internals.md). Latency is measured from the scheduled send time, carried in the \
         body, to the arrival on each member's connection, all on one clock.\n"
    );

    // --- where the time goes ---------------------------------------------------
    let _ = writeln!(o, "## Where a message's time goes\n");
    let _ = writeln!(
        o,
        "Each process times its own hops into histograms on its `/metrics` (docs/performance.md, \
         \"Where a message's time goes\"); the load generator reads them at the start and the end \
         of the measured part. p50 and p99 are interpolated within the histogram buckets.\n"
    );
    for r in [&loaded[2], &loaded[3]]
        .into_iter()
        .chain(loaded.get(FITTED_RUNS.len()))
    {
        let _ = write!(o, "{}", hop_table(r));
    }

    // --- per message and what a core carries ---------------------------------
    let _ = writeln!(o, "## What one core and one machine carry\n");
    match whole {
        Some((a, b)) if a > 0.0 && b > 0.0 => {
            let _ = writeln!(
                o,
                "With the whole stack's a = {:.1} µs per stored message and b = {:.3} µs per \
                 delivered message (table above), a message with k deliveries costs a + k·b \
                 CPU-seconds, so one core carries 1 / (a + k·b) messages per second. One machine: \
                 {MACHINE_CORES:.0} cores and 64 GiB (4 GiB per core, a common shape), CPU figures \
                 × {MACHINE_CORES:.0}, as if the stack's parts scaled over its cores:\n\n\
                 | traffic | stored msg/s per core | deliveries/s per core | one {MACHINE_CORES:.0}-core, 64 GiB machine |\n\
                 |---|---:|---:|---:|",
                a * 1e6,
                b * 1e6
            );
            for (label, k) in [
                ("direct messages (k = 2)", 2.0),
                ("100-member group (k = 100)", 100.0),
                ("1,000-member group (k = 1,000)", 1000.0),
            ] {
                let per_core = 1.0 / (a + k * b);
                let _ = writeln!(
                    o,
                    "| {label} | {:.0} | {:.0} | {:.0} msg/s, {:.0} deliveries/s |",
                    per_core,
                    per_core * k,
                    per_core * MACHINE_CORES,
                    per_core * k * MACHINE_CORES
                );
            }
        }
        other => {
            let _ = writeln!(
                o,
                "The fit of the whole stack gave no usable positive pair ({other:?}): the runs were \
                 too light or too noisy to separate the two costs. Per run, all the stack's CPU \
                 divided by the messages stored:\n"
            );
            for (r, (st, _, y)) in fitted.iter().zip(&points) {
                if *st > 0.0 {
                    let _ = writeln!(
                        o,
                        "- {}: {:.0} µs per stored message, so about {:.0} messages/s per core",
                        r.scenario.name,
                        y / st * 1e6,
                        st / y
                    );
                }
            }
        }
    }
    let conns_by_memory = USABLE * MACHINE_BYTES / mem_total.max(1.0);
    let conns_by_memory_gw = USABLE * MACHINE_BYTES / mem_gateways.max(1.0);
    let conns_per_core_cpu = if cpu_total > 0.0 {
        1e6 / cpu_total
    } else {
        f64::INFINITY
    };
    let cpu_bound_machine = MACHINE_CORES * conns_per_core_cpu;
    let idle_machine = conns_by_memory.min(cpu_bound_machine);
    let _ = writeln!(
        o,
        "\nIdle connections:\n\n\
         - memory: connections per machine = {USABLE} × 64 GiB / bytes per connection = \
         {USABLE} × {MACHINE_BYTES:.0} / {mem_total:.0} ≈ **{conns_by_memory:.0}** with every process \
         of the stack on the machine, or {conns_by_memory_gw:.0} on a machine that runs only gateways \
         ({mem_gateways:.0} bytes per connection in the gateways); the remaining 20% is left to the \
         OS, the stores and bursts;\n\
         - CPU: an idle connection costs {cpu_total:.3} µs of CPU per second (heartbeats, route \
         renewals), so one core keeps 10⁶ / {cpu_total:.3} ≈ {conns_per_core_cpu:.0} idle \
         connections alive before any message;\n\
         - so one {MACHINE_CORES:.0}-core, 64 GiB machine holds about min(memory bound, \
         {MACHINE_CORES:.0} × CPU bound) = min({conns_by_memory:.0}, {cpu_bound_machine:.0}) ≈ \
         **{idle_machine:.0}** idle connections with the whole stack on it;\n\
         - a connection limit per process (the fd limit is 20,000 here) is a setting, not a cost: \
         raise it, or run several gateways behind nginx.\n"
    );
    let _ = writeln!(
        o,
        "Limits of these figures: SecantusDB is the bottleneck of stored messages here (a Python \
         server: about 500-700 single inserts/s, 7-12k documents/s in batches; the backend batches \
         sends per conv, up to 100 per insert), so its CPU per stored message is far above what \
         `mongod` would cost, and the per-core figures above include it. The machine is shared: \
         other processes took CPU during the runs (busy cores above), which lengthens latency \
         tails more than it changes CPU per message. Two cores are too few to show how the \
         gateways scale across cores."
    );
    Ok(o)
}

/// `YYYY-MM-DD` of a Unix time (UTC), without a date library.
/// What the fit says one process costs.
struct ProcessCost {
    name: String,
    /// CPU-seconds per second per idle connection.
    idle_s_per_conn: f64,
    /// a and b, CPU-seconds per stored and per delivered message.
    per_stored_and_delivered: Option<(f64, f64)>,
}

impl ProcessCost {
    /// Cores this process should use at `stored` messages/s with `fanout`
    /// deliveries each, holding `conns` connections.
    fn predict(&self, conns: f64, stored: f64, fanout: f64) -> Option<f64> {
        let (a, b) = self.per_stored_and_delivered?;
        Some(self.idle_s_per_conn * conns + stored * (a + fanout * b))
    }
}

/// Predicted against measured CPU for `run`, a scenario that was not part
/// of the fit, from its offered rate and its fan-out (both known before
/// it runs), and the rate the fit says the machine sustains for it.
fn prediction_section(costs: &[ProcessCost], cpus: usize, run: &Report) -> String {
    let mut o = String::new();
    let s = &run.scenario;
    let conns = run.connect.connected as f64;
    let stored = f64::from(s.sender_count()) * s.sender_rate();
    // Deliveries each acknowledged send should cause (the plan's fan-out).
    let fanout = run.run.expected as f64 / run.run.acked.max(1) as f64;
    let _ = writeln!(
        o,
        "\n### A prediction checked\n\n`{}`, a scenario outside the fit: {} connections, {} \
         senders at {:.1} messages/s each ({stored:.1} stored messages/s offered), {fanout:.1} \
         deliveries per message. Predicted from the fit above, before the run, as idle cost × \
         connections + offered rate × (a + fan-out × b); measured as in the other runs. Load: \
         {}.\n",
        s.name,
        run.connect.connected,
        s.sender_count(),
        s.sender_rate(),
        load_note(run)
    );
    let _ = writeln!(
        o,
        "| process | predicted cores | measured cores | measured / predicted |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|");
    let (mut predicted_all, mut measured_all) = (0.0, 0.0);
    for (cost, target) in costs.iter().zip(&run.targets) {
        let measured = target.run_cpu_util;
        measured_all += measured;
        match cost.predict(conns, stored, fanout) {
            Some(predicted) => {
                predicted_all += predicted;
                let _ = writeln!(
                    o,
                    "| {} | {predicted:.3} | {measured:.3} | {:.2} |",
                    cost.name,
                    measured / predicted.max(1e-9)
                );
            }
            None => {
                let _ = writeln!(o, "| {} | – | {measured:.3} | – |", cost.name);
            }
        }
    }
    let _ = writeln!(
        o,
        "| **all** | **{predicted_all:.3}** | **{measured_all:.3}** | **{:.2}** |\n",
        measured_all / predicted_all.max(1e-9)
    );
    let kept_up = if sustained(run) {
        "kept up"
    } else {
        "did not keep up"
    };
    let _ = writeln!(
        o,
        "Measured: {:.1} stored and {:.0} delivered messages/s, {} of {} expected deliveries; the \
         stack {kept_up}.",
        run.run.acked_per_s, run.run.delivered_per_s, run.run.delivered, run.run.expected
    );
    // The sustainable rate: the whole machine's cores, and each process
    // that runs on one thread (Redis, SecantusDB) at one core.
    let mut limits: Vec<(String, f64)> = Vec::new();
    let (mut idle_all, mut per_message_all) = (0.0, 0.0);
    for cost in costs {
        let Some((a, b)) = cost.per_stored_and_delivered else {
            continue;
        };
        idle_all += cost.idle_s_per_conn * conns;
        per_message_all += a + fanout * b;
        if cost.name == "redis" || cost.name == "secantusdb" {
            let rate = (1.0 - cost.idle_s_per_conn * conns) / (a + fanout * b);
            limits.push((format!("{} (one thread, one core)", cost.name), rate));
        }
    }
    if per_message_all > 0.0 {
        limits.push((
            format!("the whole stack on this machine's {cpus} cores"),
            (cpus as f64 - idle_all) / per_message_all,
        ));
    }
    limits.sort_by(|x, y| x.1.total_cmp(&y.1));
    if let Some((first, rate)) = limits.first() {
        let _ = writeln!(
            o,
            "Sustainable rate predicted for this scenario: {rate:.0} stored messages/s ({:.0} \
             deliveries/s), set by {first}; the other limits: {}. Not run at that rate here.\n",
            rate * fanout,
            limits[1..]
                .iter()
                .map(|(what, rate)| format!("{what} {rate:.0}/s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    o
}

pub fn chrono_like(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!("{year:04}-{month:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_known_costs() {
        let (a, b) = (300e-6, 2e-6);
        let points: Vec<_> = [
            (50.0, 100.0),
            (100.0, 200.0),
            (10.0, 10_000.0),
            (200.0, 400.0),
        ]
        .iter()
        .map(|&(s, d)| (s, d, a * s + b * d))
        .collect();
        let (fa, fb) = fit(&points).unwrap();
        assert!((fa - a).abs() < 1e-9 && (fb - b).abs() < 1e-9, "{fa} {fb}");
        assert!(fit(&[(1.0, 2.0, 3.0), (2.0, 4.0, 6.0)]).is_none());
    }

    #[test]
    fn a_prediction_adds_idle_stored_and_delivered_costs() {
        let cost = ProcessCost {
            name: "gateway-1".into(),
            idle_s_per_conn: 2e-6,
            per_stored_and_delivered: Some((300e-6, 4e-6)),
        };
        // 1,000 connections idle: 2 ms/s; 40 msg/s × (300 µs + 100 × 4 µs) = 28 ms/s.
        let cores = cost.predict(1000.0, 40.0, 100.0).unwrap();
        assert!((cores - 0.030).abs() < 1e-9, "{cores}");
        let unfitted = ProcessCost {
            per_stored_and_delivered: None,
            ..cost
        };
        assert_eq!(unfitted.predict(1000.0, 40.0, 100.0), None);
    }

    #[test]
    fn overloaded_runs_are_not_sustained() {
        let mut r = Report {
            workers: 1,
            ..Report::default()
        };
        r.run.sent = 1000;
        r.run.expected = 2000;
        r.run.delivered = 2000;
        assert!(sustained(&r));
        r.run.errors.insert("timeout".into(), 11);
        assert!(!sustained(&r));
        r.run.errors.clear();
        r.run.delivered = 1970;
        assert!(!sustained(&r));
    }

    #[test]
    fn dates_format() {
        assert_eq!(chrono_like(0), "1970-01-01");
        assert_eq!(chrono_like(1_700_000_000), "2023-11-14");
    }
}
