//! The load generator against an in-process gateway: a short run of each kind, checking
//! that every message is accounted for. No timing is asserted: CI machines vary.

mod common;

use std::time::Duration;

use common::{certs_dir, TestGateway};
use mssante_loadgen::run::{self as loadgen, LoadConfig, Report, Sizes};

fn config(gw: &TestGateway) -> LoadConfig {
    let mut cfg = LoadConfig::test_peer(gw.addr, &certs_dir());
    cfg.duration = Duration::from_secs(60);
    cfg.io_timeout = common::IO_TIMEOUT;
    cfg
}

/// Every message started is either accepted or failed, and each failure has its entry.
fn assert_adds_up(r: &Report) {
    let errors: u64 = r.errors.values().sum();
    assert_eq!(
        errors,
        r.messages_failed + r.connection_errors,
        "errors by code do not add up: {r:?}"
    );
    assert_eq!(r.accept_latency.count, r.messages_ok, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_pipelined_messages_over_reused_connections_all_reach_the_spool() {
    let gw = TestGateway::start().await;
    let mut cfg = config(&gw);
    cfg.connections = 4;
    cfg.messages_per_connection = 10;
    cfg.total = 100;
    cfg.sizes = Sizes::parse("1k:3,100k:1").unwrap();
    let r = loadgen::run(cfg).await.unwrap();
    assert_adds_up(&r);
    assert_eq!((r.messages_ok, r.messages_failed), (100, 0), "{}", r.text());
    assert!(r.errors.is_empty(), "{}", r.text());
    assert!((10..=14).contains(&r.handshakes), "{}", r.text());
    assert_eq!(gw.spooled_messages().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_per_connection_costs_one_handshake_each() {
    let gw = TestGateway::start().await;
    let mut cfg = config(&gw);
    cfg.connections = 3;
    cfg.total = 30;
    cfg.pipelining = false;
    let r = loadgen::run(cfg).await.unwrap();
    assert_adds_up(&r);
    assert_eq!((r.messages_ok, r.handshakes), (30, 30), "{}", r.text());
    assert_eq!(gw.spooled_messages().len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_recipients_are_counted_by_reply_code() {
    let gw = TestGateway::start().await;
    let mut cfg = config(&gw);
    cfg.connections = 2;
    cfg.messages_per_connection = 5;
    cfg.total = 10;
    cfg.rcpt_to = "y@not-ours.example".into();
    let r = loadgen::run(cfg).await.unwrap();
    assert_adds_up(&r);
    assert_eq!((r.messages_ok, r.messages_failed), (0, 10), "{}", r.text());
    assert_eq!(r.errors.len(), 1, "{}", r.text());
    let (code, _) = r.errors.iter().next().unwrap();
    assert!(code.starts_with('5'), "{}", r.text());
    assert!(gw.spooled_messages().is_empty());
}

#[test]
fn sizes_read_units_and_weights() {
    assert_eq!(Sizes::parse("1k").unwrap(), Sizes::fixed(1024));
    assert_eq!(
        Sizes::parse("1k:80,100k:19,10m:1").unwrap().choices,
        vec![(1024, 80), (100 * 1024, 19), (10 * 1024 * 1024, 1)]
    );
    assert!(Sizes::parse("1q").is_err());
    assert!(Sizes::parse("1k:0").is_err());
}
