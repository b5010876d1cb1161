//! The gateway and backend reach NATS over TLS, checking the server's
//! certificate against the CA they are given, and log in to it.

use oceanchat_testkit::{Backend, Stack, TestCerts};
use oceanchat_tests::{start_gateways, World, WAIT};

fn nats_with_tls(certs: &TestCerts) -> String {
    format!(
        r#"
tls {{
  cert_file: "{}"
  key_file: "{}"
}}
authorization {{ token: "s3cret-token" }}
"#,
        certs.server_cert().display(),
        certs.server_key().display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_works_over_nats_with_tls_and_a_token() {
    let certs = TestCerts::generate();
    let stack = Stack::start_with_nats_config(&nats_with_tls(&certs));
    let url = format!("tls://127.0.0.1:{}", stack.nats.port());
    let ca = certs.ca().display().to_string();
    let args = [
        "--nats-url",
        url.as_str(),
        "--nats-tls-ca",
        ca.as_str(),
        "--nats-token",
        "s3cret-token",
    ];
    let backend = Backend::start(&stack, &args);
    let gateways = start_gateways(&stack, 1, &args);
    let world = World::assemble(stack, vec![backend], gateways);

    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a = alice.connect(&world, 0).await;
    let b = bob.connect(&world, 0).await;
    let group = a.group_create("secure", &[&bob.user_id]).await.unwrap();
    a.send(&group.conv, "m1", "over tls").await.unwrap();
    assert_eq!(b.next_msg(WAIT).await.unwrap().body, "over tls");
}

#[test]
fn a_nats_certificate_from_an_unknown_ca_is_refused() {
    let certs = TestCerts::generate();
    let stack = Stack::start_with_nats_config(&nats_with_tls(&certs));
    let url = format!("tls://127.0.0.1:{}", stack.nats.port());
    // No --nats-tls-ca: the system's roots do not know the test CA.
    let output = std::process::Command::new(oceanchat_testkit::bin_path("oceanchat-gateway"))
        .args(["--listen", "127.0.0.1:0", "--nats-url", &url])
        .args([
            "--nats-token",
            "s3cret-token",
            "--redis-url",
            &stack.redis.url(),
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains("cannot connect to NATS"), "{log}");
    assert!(
        !log.contains("s3cret-token"),
        "the token is not logged: {log}"
    );
}
