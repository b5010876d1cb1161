//! Where a message's time goes: each hop of a send and its delivery is a
//! histogram on the gateway's or the backend's `/metrics`
//! (docs/performance.md), which the load generator reads back.

use oceanchat_protocol::metrics::{parse_histograms, Scraped};
use oceanchat_testkit::http_get;
use oceanchat_tests::{World, WAIT};

/// The histogram series of `GET /metrics` on `port`.
fn scrape(port: u16) -> std::collections::BTreeMap<String, Scraped> {
    let (status, body) = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    parse_histograms(&body)
}

fn count(series: &std::collections::BTreeMap<String, Scraped>, name: &str) -> u64 {
    series
        .iter()
        .filter(|(key, _)| key.split('{').next() == Some(name))
        .map(|(_, s)| s.count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hop_of_a_send_and_its_delivery_is_timed() {
    let world = World::with(1, 1);
    let (alice, bob) = (world.user("alice").await, world.user("bob").await);
    let a = alice.connect(&world, 0).await;
    let b = bob.connect(&world, 0).await;
    let dm = a.dm_open(&bob.user_id).await.unwrap();
    let group = a.group_create("hops", &[&bob.user_id]).await.unwrap();
    let (gateway, backend) = (world.gateways[0].port(), world.backends[0].port());
    let before = (scrape(gateway), scrape(backend));

    for (i, conv) in [&dm, &group.conv].into_iter().enumerate() {
        a.send(conv, &format!("hop{i}"), "timed").await.unwrap();
        let got = b.next_msg(WAIT).await.expect("the message arrives");
        assert_eq!(got.conv, *conv);
    }

    let after = (scrape(gateway), scrape(backend));
    let grew = |side: usize, name: &str| {
        let (then, now) = if side == 0 {
            (&before.0, &after.0)
        } else {
            (&before.1, &after.1)
        };
        count(now, name) - count(then, name)
    };
    // Two sends, one batch each, two deliveries (one direct, one topic).
    assert_eq!(grew(1, "oc_backend_send_queue_seconds"), 2);
    assert_eq!(grew(1, "oc_backend_store_write_seconds"), 2);
    assert_eq!(grew(1, "oc_backend_delivery_seconds"), 2);
    assert!(grew(1, "oc_backend_rpc_transit_seconds") >= 2);
    let sends = &after.1["oc_backend_request_seconds{op=\"send\"}"];
    let earlier = before.1.get("oc_backend_request_seconds{op=\"send\"}");
    assert_eq!(
        sends.since(earlier.unwrap_or(&Scraped::default())).count(),
        2
    );
    assert!(grew(0, "oc_gateway_rpc_seconds") >= 2);
    assert!(grew(0, "oc_gateway_delivery_transit_seconds") >= 2);
    assert!(grew(0, "oc_gateway_delivery_handoff_seconds") >= 2);
    // Times are plausible: a local store write is under the 10 s bound.
    let store = after.1["oc_backend_store_write_seconds"]
        .quantile(0.99)
        .unwrap();
    assert!(store > 0.0 && store < 10.0, "{store}");
}
