//! The cost of one JSON log record, as a session writes several per message: the
//! gateway's `JsonFormat` against tracing-subscriber's own JSON format (which wrote debug
//! strings), on the line of an accepted message inside a session span, written to a sink.
use criterion::{criterion_group, criterion_main, Criterion};
use tracing::subscriber::with_default;

fn accepted_line() {
    tracing::info!(
        stage = "data",
        verdict = "accept",
        queue_id = "1A246FF826498DC34F4",
        size = 19u64,
        mail_from = Some("a@peer-a.test.mssante.fr"),
        rcpts = %mssante_gateway::logging::list(["bob@gateway.test.mssante.fr", "alice@gateway.test.mssante.fr"]),
        peer_dn = Some("CN=smtp.peer-a.test.mssante.fr,OU=398765432400001,O=OPERATEUR PEER A,ST=Bas-Rhin (67),C=FR"),
        "message accepted and spooled"
    );
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("json log record");
    let ours = mssante_gateway::logging::json_subscriber(
        tracing_subscriber::EnvFilter::new("info"),
        std::io::sink,
    );
    with_default(ours, || {
        let span = tracing::info_span!("session", session = "64ff-0", peer = "127.0.0.1:35392");
        let _entered = span.enter();
        group.bench_function("gateway JsonFormat", |b| b.iter(accepted_line));
    });
    let theirs = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .json()
        .flatten_event(true)
        .finish();
    with_default(theirs, || {
        let span = tracing::info_span!("session", session = "64ff-0", peer = "127.0.0.1:35392");
        let _entered = span.enter();
        group.bench_function("tracing-subscriber json", |b| b.iter(accepted_line));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
