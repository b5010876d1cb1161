//! Where a message's time goes: the hop histograms the gateway and the
//! backend expose on `/metrics` (docs/performance.md), read at the start
//! and at the end of the measured part of a run. The difference of the
//! two scrapes is what this run's messages did, hop by hop, printed next
//! to the end-to-end latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use oceanchat_protocol::metrics::{parse_histograms, Scraped};

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// One scrape of every metrics URL: per URL, its histogram series (an
/// endpoint that does not answer has none).
pub type Scrapes = Vec<BTreeMap<String, Scraped>>;

/// One hop over the measured part of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hop {
    /// The metrics URL it was read from.
    pub source: String,
    /// The series: metric name and labels.
    pub series: String,
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Reads every URL of `urls` (`http://host:port/path`).
pub async fn scrape(urls: &[String]) -> Scrapes {
    let mut out = Vec::with_capacity(urls.len());
    for url in urls {
        let text = match tokio::time::timeout(SCRAPE_TIMEOUT, get(url)).await {
            Ok(Ok(text)) => text,
            Ok(Err(error)) => {
                eprintln!("metrics {url}: {error}");
                String::new()
            }
            Err(_) => {
                eprintln!("metrics {url}: no answer within {SCRAPE_TIMEOUT:?}");
                String::new()
            }
        };
        out.push(parse_histograms(&text));
    }
    out
}

/// The hops between two scrapes of `urls`: every `_seconds` histogram
/// with observations in between.
pub fn between(urls: &[String], before: &Scrapes, after: &Scrapes) -> Vec<Hop> {
    let mut hops = Vec::new();
    for ((url, before), after) in urls.iter().zip(before).zip(after) {
        for (series, now) in after {
            if !series.split('{').next().unwrap_or("").ends_with("_seconds") {
                continue;
            }
            let run = match before.get(series) {
                Some(then) => now.since(then),
                None => now.clone(),
            };
            let count = run.count();
            if count == 0 {
                continue;
            }
            let ms = |q: f64| run.quantile(q).unwrap_or(0.0) * 1000.0;
            hops.push(Hop {
                source: url.clone(),
                series: series.clone(),
                count,
                mean_ms: run.sum / count as f64 * 1000.0,
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
            });
        }
    }
    hops
}

/// The hops as a table, one line each (p50 and p99 are interpolated
/// within the histogram's buckets).
pub fn table(hops: &[Hop]) -> String {
    let mut out = String::new();
    if hops.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<62} {:>9} {:>9} {:>9} {:>9}",
        "hop (from /metrics)", "count", "mean ms", "p50 ms", "p99 ms"
    );
    for h in hops {
        let _ = writeln!(
            out,
            "{:<62} {:>9} {:>9.3} {:>9.3} {:>9.3}",
            h.series, h.count, h.mean_ms, h.p50_ms, h.p99_ms
        );
    }
    out
}

/// A plain HTTP/1.1 GET; the body of a 200.
async fn get(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are read")?;
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, format!("/{path}")),
        None => (rest, "/".to_string()),
    };
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("not an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(head.lines().next().unwrap_or("").to_string());
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

/// The payload of a chunked body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oceanchat_protocol::metrics::LatencyHistogram;

    #[test]
    fn hops_are_what_happened_between_the_scrapes() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_millis(300));
        let mut text = String::new();
        h.render(&mut text, "oc_x_seconds", "");
        h.render(&mut text, "oc_idle_seconds", "");
        let before = vec![parse_histograms(&text)];
        for _ in 0..10 {
            h.observe(Duration::from_micros(700));
        }
        let mut text = String::new();
        h.render(&mut text, "oc_x_seconds", "");
        let after = vec![parse_histograms(&text)];
        let urls = vec!["http://m/metrics".to_string()];
        let hops = between(&urls, &before, &after);
        assert_eq!(hops.len(), 1, "the idle series had nothing new");
        assert_eq!(hops[0].count, 10);
        assert!(hops[0].p99_ms <= 1.0 && hops[0].p50_ms >= 0.5, "{hops:?}");
        assert!((hops[0].mean_ms - 0.7).abs() < 0.01);
        assert!(table(&hops).contains("oc_x_seconds"));
    }

    #[test]
    fn chunked_bodies_are_put_together() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
