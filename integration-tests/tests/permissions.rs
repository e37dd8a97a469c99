//! Least privilege, against a real nats-server with the project's accounts
//! file (`helm/pas/files/nats-accounts.conf`, through `nats/server.conf`):
//! a table of (user, action) → allowed or denied, the lease hijack through a
//! `sources` entry on the scaler's bucket, and per-user inboxes.
//!
//! A request the server's permissions refuse is dropped without a reply (the
//! client is sent a permissions violation), so "denied" is "no answer within
//! a second"; "allowed" is any answer from the JetStream API, an error
//! included (a consumer that does not exist is still a request the user may
//! make).

use std::time::Duration;

use futures::StreamExt;
use pas_integration_tests::{NatsServer, stream_info};
use pas_nats::provision;
use pas_schemas::subjects::{BUCKET_SCALER, STREAM_SAMPLES, STREAM_TRAINING};
use serde_json::{Value, json};

const ALLOWED: bool = true;
const DENIED: bool = false;

struct Users {
    server: NatsServer,
    admin: pas_nats::Connection,
}

impl Users {
    async fn start() -> Self {
        let server = NatsServer::with_accounts();
        let admin = pas_nats::connect(&server.as_user("admin"), "admin", false)
            .await
            .unwrap();
        provision::init(&admin.jetstream, Default::default())
            .await
            .unwrap();
        Users { server, admin }
    }

    async fn connect(&self, user: &str) -> pas_nats::Connection {
        pas_nats::connect(&self.server.as_user(user), user, false)
            .await
            .unwrap()
    }
}

/// The JetStream API's answer to `subject`, or `None` when none came (the
/// permissions refused the request).
async fn api(conn: &pas_nats::Connection, subject: &str, body: &Value) -> Option<Value> {
    let request = conn.client.request(subject.to_owned(), body.to_string().into());
    match tokio::time::timeout(Duration::from_secs(1), request).await {
        Ok(Ok(reply)) => Some(serde_json::from_slice(&reply.payload).unwrap_or(Value::Null)),
        _ => None,
    }
}

fn consumer_body(stream: &str, config: Value) -> Value {
    json!({ "stream_name": stream, "config": config, "action": "" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_may_use_only_the_jetstream_api_its_job_needs() {
    let users = Users::start().await;
    let mut conns = std::collections::HashMap::new();
    for user in ["agent", "trainer", "forecaster", "scaler", "recorder", "viewer"] {
        conns.insert(user, users.connect(user).await);
    }
    let live_trainer = json!({ "durable_name": "pas-trainer-training", "filter_subject": "pas.train.>", "ack_policy": "explicit", "max_ack_pending": 1 });
    let live_recorder = json!({ "durable_name": "pas-recorder-samples", "filter_subject": "pas.cpu.>", "ack_policy": "explicit", "max_ack_pending": 1 });
    let sources = json!({
        "name": "KV_pas-scaler", "subjects": ["$KV.pas-scaler.>"], "max_msgs_per_subject": 5, "allow_rollup_hdrs": true,
        "deny_delete": true, "allow_direct": true, "discard": "new", "duplicate_window": 120000000000u64,
        "sources": [{ "name": "PAS_FORECASTS", "subject_transforms": [{ "src": "pas.forecast.>", "dest": "$KV.pas-scaler.>" }] }]
    });
    let ephemeral = |filter: &str| json!({ "filter_subject": filter, "ack_policy": "none", "inactive_threshold": 5_000_000_000u64 });
    #[rustfmt::skip]
    let table: Vec<(&str, &str, Value, bool)> = vec![
        // Only the admin changes streams, buckets and live consumers.
        ("forecaster", "$JS.API.STREAM.UPDATE.KV_pas-scaler", sources.clone(), DENIED),
        ("forecaster", "$JS.API.STREAM.DELETE.PAS_SAMPLES", json!({}), DENIED),
        ("trainer", "$JS.API.STREAM.DELETE.PAS_FORECASTS", json!({}), DENIED),
        ("scaler", "$JS.API.STREAM.PURGE.PAS_SAMPLES", json!({}), DENIED),
        ("recorder", "$JS.API.STREAM.PURGE.KV_pas-scaler", json!({}), DENIED),
        ("forecaster", "$JS.API.STREAM.PURGE.KV_pas-scaler", json!({}), DENIED),
        ("scaler", "$JS.API.STREAM.CREATE.EVIL", json!({ "name": "EVIL", "subjects": ["$KV.pas-scaler.>"] }), DENIED),
        ("viewer", "$JS.API.STREAM.DELETE.PAS_SAMPLES", json!({}), DENIED),
        ("trainer", "$JS.API.CONSUMER.DELETE.PAS_SAMPLES.pas-recorder-samples", json!({}), DENIED),
        ("recorder", "$JS.API.CONSUMER.DELETE.PAS_FORECASTS.pas-scaler-forecasts", json!({}), DENIED),
        ("viewer", "$JS.API.CONSUMER.DELETE.PAS_TRAINING.pas-trainer-training", json!({}), DENIED),
        ("trainer", "$JS.API.CONSUMER.DELETE.PAS_TRAINING.pas-trainer-training", json!({}), DENIED),
        ("trainer", "$JS.API.CONSUMER.CREATE.PAS_TRAINING.pas-trainer-training.pas.train.>", consumer_body(STREAM_TRAINING, live_trainer.clone()), DENIED),
        ("forecaster", "$JS.API.CONSUMER.CREATE.PAS_TRAINING.pas-trainer-training.pas.train.>", consumer_body(STREAM_TRAINING, live_trainer.clone()), DENIED),
        ("viewer", "$JS.API.CONSUMER.CREATE.PAS_TRAINING.pas-trainer-training.pas.train.>", consumer_body(STREAM_TRAINING, live_trainer.clone()), DENIED),
        ("trainer", "$JS.API.CONSUMER.CREATE.PAS_SAMPLES.pas-recorder-samples.pas.cpu.>", consumer_body(STREAM_SAMPLES, live_recorder.clone()), DENIED),
        ("forecaster", "$JS.API.CONSUMER.CREATE.PAS_SAMPLES.pas-recorder-samples.pas.cpu.pod.>", consumer_body(STREAM_SAMPLES, live_recorder.clone()), DENIED),
        ("forecaster", "$JS.API.CONSUMER.CREATE.PAS_FORECASTS.x.pas.forecast.>", consumer_body("PAS_FORECASTS", ephemeral("pas.forecast.>")), DENIED),
        // No stage pulls from, or acks for, another stage's consumer.
        ("trainer", "$JS.API.CONSUMER.MSG.NEXT.PAS_SAMPLES.pas-recorder-samples", json!({ "batch": 1, "no_wait": true }), DENIED),
        ("scaler", "$JS.API.CONSUMER.MSG.NEXT.PAS_FORECASTS.pas-recorder-forecasts", json!({ "batch": 1, "no_wait": true }), DENIED),
        ("recorder", "$JS.API.CONSUMER.MSG.NEXT.PAS_FORECASTS.pas-scaler-forecasts", json!({ "batch": 1, "no_wait": true }), DENIED),
        ("viewer", "$JS.API.CONSUMER.MSG.NEXT.PAS_TRAINING.pas-trainer-training", json!({ "batch": 1, "no_wait": true }), DENIED),
        ("forecaster", "$JS.API.CONSUMER.MSG.NEXT.PAS_TRAINING.pas-trainer-training", json!({ "batch": 1, "no_wait": true }), DENIED),
        ("recorder", "$JS.ACK.PAS_TRAINING.pas-trainer-training.1.1.1.1.0", json!({}), DENIED),
        // Only trainers queue training jobs.
        ("forecaster", "pas.train.shop.web", json!({}), DENIED),
        ("scaler", "pas.train.global", json!({}), DENIED),
        ("agent", "pas.train.global", json!({}), DENIED),
        // Buckets: each stage its own.
        ("forecaster", "$JS.API.DIRECT.GET.KV_pas-scaler.$KV.pas-scaler.leader", json!({}), DENIED),
        ("scaler", "$JS.API.STREAM.INFO.KV_pas-forecaster", json!({}), DENIED),
        ("scaler", "$JS.API.STREAM.PURGE.OBJ_pas-models", json!({}), DENIED),
        ("scaler", "$JS.API.DIRECT.GET.KV_pas-history.$KV.pas-history.live.history.shop.web.1", json!({}), DENIED),
        ("trainer", "$KV.pas-history.live.history.shop.web.1", json!({}), DENIED),
        ("forecaster", "$JS.API.STREAM.PURGE.KV_pas-history", json!({}), DENIED),
        ("forecaster", "$JS.API.CONSUMER.CREATE.KV_pas-history", consumer_body("KV_pas-history", ephemeral("$KV.pas-history.>")), DENIED),
        ("agent", "$JS.API.STREAM.INFO.PAS_SAMPLES", json!({}), DENIED),
        // What each job needs.
        ("trainer", "$JS.API.STREAM.INFO.PAS_SAMPLES", json!({}), ALLOWED),
        ("trainer", "$JS.API.STREAM.INFO.PAS_TRAINING", json!({}), ALLOWED),
        ("trainer", "$JS.API.CONSUMER.INFO.PAS_TRAINING.pas-trainer-training", json!({}), ALLOWED),
        ("trainer", "$JS.API.CONSUMER.MSG.NEXT.PAS_TRAINING.pas-trainer-training", json!({ "batch": 1, "no_wait": true }), ALLOWED),
        ("trainer", "$JS.API.CONSUMER.CREATE.PAS_TRAINING.pas-trainer-training-r1.replay.r1.pas.train.>",
            consumer_body(STREAM_TRAINING, json!({ "durable_name": "pas-trainer-training-r1", "filter_subject": "replay.r1.pas.train.>", "ack_policy": "explicit" })), ALLOWED),
        // (A run's subject: a live job would race the MSG.NEXT row above.)
        ("trainer", "replay.r1.pas.train.shop.web", json!({}), ALLOWED),
        ("trainer", "$JS.API.CONSUMER.CREATE.PAS_SAMPLES.pas-read-1.pas.cpu.pod.>",
            consumer_body(STREAM_SAMPLES, json!({ "name": "pas-read-1", "filter_subject": "pas.cpu.pod.>", "ack_policy": "none" })), ALLOWED),
        ("trainer", "$JS.API.STREAM.PURGE.OBJ_pas-models", json!({ "filter": "$O.pas-models.C.none" }), ALLOWED),
        ("forecaster", "$JS.API.CONSUMER.CREATE.PAS_SAMPLES.pas-forecaster-f0-1.pas.cpu.pod.>",
            consumer_body(STREAM_SAMPLES, json!({ "name": "pas-forecaster-f0-1", "filter_subject": "pas.cpu.pod.>", "ack_policy": "none" })), ALLOWED),
        // Ordered consumers on a stage's own bucket, recreated after a
        // reconnect under `<name>_<n>` with the old one deleted first.
        ("forecaster", "$JS.API.CONSUMER.CREATE.OBJ_pas-models.w_1.$O.pas-models.M.>",
            consumer_body("OBJ_pas-models", json!({ "name": "w_1", "filter_subject": "$O.pas-models.M.>", "ack_policy": "none", "deliver_subject": "_INBOX_forecaster.w" })), ALLOWED),
        ("forecaster", "$JS.API.CONSUMER.DELETE.OBJ_pas-models.w_1", json!({}), ALLOWED),
        ("scaler", "$JS.API.CONSUMER.CREATE.KV_pas-scaler.k_1.$KV.pas-scaler.>",
            consumer_body("KV_pas-scaler", json!({ "name": "k_1", "filter_subject": "$KV.pas-scaler.>", "ack_policy": "none", "deliver_subject": "_INBOX_scaler.k" })), ALLOWED),
        ("scaler", "$JS.API.CONSUMER.CREATE.KV_pas-forecaster.k_1.$KV.pas-forecaster.>",
            consumer_body("KV_pas-forecaster", json!({ "name": "k_1", "filter_subject": "$KV.pas-forecaster.>", "ack_policy": "none" })), DENIED),
        ("forecaster", "$JS.API.CONSUMER.DELETE.PAS_SAMPLES.pas-recorder-samples", json!({}), DENIED),
        ("scaler", "$JS.API.CONSUMER.DELETE.PAS_FORECASTS.pas-recorder-forecasts", json!({}), DENIED),
        ("forecaster", "$JS.ACK.PAS_SAMPLES.pas-recorder-samples.1.1.1.1.0", json!({}), DENIED),
        ("trainer", "$JS.ACK.PAS_SAMPLES.pas-recorder-samples.1.1.1.1.0", json!({}), DENIED),
        ("forecaster", "$JS.API.STREAM.INFO.KV_pas-forecaster", json!({}), ALLOWED),
        ("forecaster", "$JS.API.STREAM.INFO.KV_pas-history", json!({}), ALLOWED),
        ("forecaster", "$JS.API.DIRECT.GET.KV_pas-history.$KV.pas-history.live.history.shop.web.1", json!({}), ALLOWED),
        ("trainer", "$JS.API.DIRECT.GET.KV_pas-history.$KV.pas-history.live.history.shop.web.1", json!({}), ALLOWED),
        ("forecaster", "$JS.API.STREAM.INFO.OBJ_pas-models", json!({}), ALLOWED),
        ("scaler", "$JS.API.DIRECT.GET.KV_pas-scaler.$KV.pas-scaler.leader", json!({}), ALLOWED),
        ("scaler", "$JS.API.CONSUMER.MSG.NEXT.PAS_FORECASTS.pas-scaler-forecasts", json!({ "batch": 1, "no_wait": true }), ALLOWED),
        ("recorder", "$JS.API.CONSUMER.INFO.PAS_DECISIONS.pas-recorder-decisions", json!({}), ALLOWED),
        ("viewer", "$JS.API.STREAM.INFO.PAS_SAMPLES", json!({}), ALLOWED),
        ("viewer", "$JS.API.STREAM.MSG.GET.PAS_SAMPLES", json!({ "seq": 1 }), ALLOWED),
        ("viewer", "$JS.API.CONSUMER.CREATE.PAS_SAMPLES", consumer_body(STREAM_SAMPLES, ephemeral("pas.cpu.>")), DENIED),
        ("viewer", "$JS.API.CONSUMER.CREATE.PAS_SAMPLES.x.pas.cpu.>", consumer_body(STREAM_SAMPLES, ephemeral("pas.cpu.>")), DENIED),
    ];
    let checks = table.iter().map(|(user, subject, body, allowed)| {
        let conn = &conns[user];
        async move { (*user, *subject, *allowed, api(conn, subject, body).await) }
    });
    let mut wrong = Vec::new();
    for (user, subject, allowed, answer) in futures::future::join_all(checks).await {
        if answer.is_some() != allowed {
            wrong.push(format!(
                "{user} {subject}: expected {}, got {answer:?}",
                if allowed { "allowed" } else { "denied" }
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows wrong:\n{}",
        wrong.len(),
        table.len(),
        wrong.join("\n")
    );

    // Queuing a live job, after the rows: a job in the queue would answer
    // the MSG.NEXT row above with itself.
    assert!(
        api(&conns["trainer"], "pas.train.shop.web", &json!({}))
            .await
            .is_some(),
        "the trainer may queue a live training job"
    );

    // Nothing the denied rows asked for happened.
    let js = &users.admin.jetstream;
    let kv_stream = stream_info(js, "KV_pas-scaler").await;
    assert!(
        kv_stream.config.sources.as_ref().is_none_or(|s| s.is_empty()),
        "{:?}",
        kv_stream.config.sources
    );
    let changed = |stream: &'static str, durable: &'static str| async move {
        let info = js
            .get_stream(stream)
            .await
            .unwrap()
            .consumer_info(durable)
            .await
            .unwrap();
        info.config.max_ack_pending == 1
    };
    let unchanged = || async {
        assert!(
            !changed(STREAM_TRAINING, "pas-trainer-training").await,
            "the trainers' consumer was changed"
        );
        assert!(
            !changed(STREAM_SAMPLES, "pas-recorder-samples").await,
            "the recorder's consumer was changed"
        );
    };
    unchanged().await;
    assert!(js.get_stream("EVIL").await.is_err());

    // The unnamed create subject would let the body name a durable: the
    // server then updates it (this is how a stage could have changed
    // another's consumer), so no stage user may use it on a stream with
    // durable consumers.
    let forecaster = &conns["forecaster"];
    for (stream, body) in [
        (
            STREAM_SAMPLES,
            consumer_body(STREAM_SAMPLES, live_recorder.clone()),
        ),
        (
            STREAM_SAMPLES,
            consumer_body(
                STREAM_SAMPLES,
                json!({ "name": "pas-recorder-samples", "filter_subject": "pas.cpu.>", "ack_policy": "explicit", "max_ack_pending": 1 }),
            ),
        ),
        (
            STREAM_TRAINING,
            consumer_body(STREAM_TRAINING, live_trainer.clone()),
        ),
    ] {
        for user in ["trainer", "forecaster", "scaler", "recorder", "viewer"] {
            let answer = api(&conns[user], &format!("$JS.API.CONSUMER.CREATE.{stream}"), &body).await;
            assert!(
                answer.is_none(),
                "{user} may use the unnamed create subject: {answer:?}"
            );
        }
    }
    unchanged().await;

    // A push consumer cannot deliver into another user's bucket: the server
    // checks the deliver subject against its creator's permissions. The
    // forecaster may create consumers on pod samples, so the request itself
    // is allowed; a control consumer delivering to its own inbox does
    // deliver.
    let mut control = forecaster
        .client
        .subscribe("_INBOX_forecaster.control")
        .await
        .unwrap();
    for (name, deliver) in [
        ("evil", "$KV.pas-scaler.live.leader"),
        ("control", "_INBOX_forecaster.control"),
    ] {
        let push = consumer_body(
            STREAM_SAMPLES,
            json!({ "name": name, "deliver_subject": deliver, "ack_policy": "none", "filter_subject": "pas.cpu.pod.>" }),
        );
        let subject = format!("$JS.API.CONSUMER.CREATE.PAS_SAMPLES.{name}.pas.cpu.pod.>");
        assert!(
            api(forecaster, &subject, &push).await.is_some(),
            "the forecaster may create consumers on pod samples"
        );
    }
    js.publish("pas.cpu.pod.shop.web.web-0", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(5), control.next()).await;
    assert!(
        matches!(delivered, Ok(Some(_))),
        "the control push consumer delivers"
    );
    let kv = js.get_key_value(BUCKET_SCALER).await.unwrap();
    assert!(
        kv.get("live.leader").await.unwrap().is_none(),
        "a sample reached the scaler's bucket"
    );
    let held = stream_info(js, "KV_pas-scaler").await.state.messages;
    assert_eq!(held, 0);
}

/// The reproduction: a forecaster that could add a `sources` entry
/// to KV_pas-scaler wrote a fake leader lease through its own subjects, and
/// `pas bus status` showed no drift. Now the forecaster may not (above); if
/// someone with admin rights does, status reports it and init removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sources_entry_on_a_bucket_is_drift_and_init_removes_it() {
    let users = Users::start().await;
    let js = &users.admin.jetstream;
    let mut config = stream_info(js, "KV_pas-scaler").await.config.clone();
    config.sources = Some(vec![async_nats::jetstream::stream::Source {
        name: "PAS_FORECASTS".into(),
        subject_transforms: vec![async_nats::jetstream::stream::SubjectTransform {
            source: "pas.forecast.>".into(),
            destination: "$KV.pas-scaler.>".into(),
        }],
        ..Default::default()
    }]);
    js.update_stream(config).await.unwrap();

    // The hijack works while the source is there: a forecast becomes a key.
    let forecaster = users.connect("forecaster").await;
    forecaster
        .jetstream
        .publish("pas.forecast.live.leader", "forecaster-0".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let kv = js.get_key_value(BUCKET_SCALER).await.unwrap();
    pas_integration_tests::eventually(
        Duration::from_secs(5),
        "the sourced forecast in the bucket",
        || {
            let kv = kv.clone();
            async move { kv.get("live.leader").await.ok().flatten().map(|_| ()) }
        },
    )
    .await;

    let status = provision::status(js, Default::default()).await.unwrap();
    let bucket = status.iter().find(|s| s.stream == "KV_pas-scaler").unwrap();
    assert_eq!(bucket.drift, ["sources"], "{status:?}");
    let repaired = provision::init(js, Default::default()).await.unwrap();
    let bucket = repaired.iter().find(|p| p.stream == "KV_pas-scaler").unwrap();
    assert_eq!(
        (bucket.action, bucket.changed.clone()),
        (provision::Action::Updated, vec!["sources".to_string()])
    );
    let status = provision::status(js, Default::default()).await.unwrap();
    assert!(status.iter().all(|s| s.drift.is_empty()), "{status:?}");

    // Once removed, forecasts stay forecasts.
    kv.purge("live.leader").await.unwrap();
    forecaster
        .jetstream
        .publish("pas.forecast.live.leader", "forecaster-0".into())
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(kv.get("live.leader").await.unwrap().is_none());
}

/// Replies go to `_INBOX_<user>`: no user can read another's deliveries,
/// acks or key-value reads, and the old shared `_INBOX.>` is no one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_go_to_per_user_inboxes_no_other_user_can_read() {
    let users = Users::start().await;
    let scaler = users.connect("scaler").await;
    let agent = users.connect("agent").await;
    // Subscriptions the permissions refuse are accepted by the client and
    // dropped by the server.
    let mut theirs = scaler.client.subscribe("_INBOX_forecaster.>").await.unwrap();
    let mut shared = agent.client.subscribe("_INBOX.>").await.unwrap();
    let mut own = scaler.client.subscribe("_INBOX_scaler.probe").await.unwrap();
    // A round trip, so the server has processed the subscriptions.
    api(&scaler, "$JS.API.STREAM.INFO.PAS_FORECASTS", &json!({}))
        .await
        .expect("the scaler may");
    api(&agent, "$JS.API.STREAM.INFO.PAS_SAMPLES", &json!({})).await;

    let forecaster = users.connect("forecaster").await;
    assert!(
        api(&forecaster, "$JS.API.STREAM.INFO.KV_pas-forecaster", &json!({}))
            .await
            .is_some()
    );
    forecaster
        .jetstream
        .publish("pas.forecast.shop.web", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    users
        .admin
        .client
        .publish("_INBOX.x", "shared".into())
        .await
        .unwrap();
    users
        .admin
        .client
        .publish("_INBOX_forecaster.x", "theirs".into())
        .await
        .unwrap();
    users
        .admin
        .client
        .publish("_INBOX_scaler.probe", "own".into())
        .await
        .unwrap();
    users.admin.client.flush().await.unwrap();

    let got = tokio::time::timeout(Duration::from_secs(2), own.next())
        .await
        .expect("the scaler reads its own inbox");
    assert_eq!(got.unwrap().payload, "own");
    let leaked = tokio::time::timeout(Duration::from_millis(300), theirs.next()).await;
    assert!(
        !matches!(leaked, Ok(Some(_))),
        "the scaler read the forecaster's replies: {leaked:?}"
    );
    let leaked = tokio::time::timeout(Duration::from_millis(300), shared.next()).await;
    assert!(
        !matches!(leaked, Ok(Some(_))),
        "the agent read _INBOX.>: {leaked:?}"
    );
}
