//! Bus plumbing against a real nats-server: provisioning, the definition
//! files as the JetStream API takes them, dead letters, and permissions.

use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt;
use pas_integration_tests::{NatsServer, eventually, repo_root, stream_info};
use pas_nats::provision::{self, Action};
use pas_nats::{DeadLetters, HandlerError, NatsConfig, definitions};
use pas_runtime::Secret;
use pas_schemas::subjects::{
    BUCKET_FORECASTER, BUCKET_MODELS, BUCKET_SCALER, HEADER_ERROR, HEADER_ERROR_TYPE,
    HEADER_ORIGINAL_SUBJECT, Prefix, STREAM_DLQ, STREAM_SAMPLES, STREAM_TRAINING, Stage,
};
use pas_schemas::{CpuSample, SCHEMA_VERSION};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

async fn connect(server: &NatsServer) -> pas_nats::Connection {
    pas_nats::connect(
        &NatsConfig {
            urls: vec![server.url()],
            ..Default::default()
        },
        "test",
        false,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn init_on_a_server_with_too_little_storage_says_what_to_change() {
    // A server that offers 1 GB of file storage, less than the 4 GiB PAS_SAMPLES reserves.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.conf");
    std::fs::write(&config, "jetstream { max_file_store: 1GB }\n").unwrap();
    let server = NatsServer::start_with(Some(&config), Vec::new());
    let conn = connect(&server).await;

    let err = provision::init(&conn.jetstream, Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("JetStream create stream PAS_SAMPLES"), "{err}");
    assert!(err.contains("reserve 8.2 GiB"), "{err}");
    assert!(err.contains("max_file_store"), "{err}");
    assert!(err.contains("insufficient storage resources"), "{err}");
}

#[tokio::test]
async fn init_is_idempotent_and_repairs_drift() {
    let server = NatsServer::start();
    let conn = connect(&server).await;
    let js = &conn.jetstream;

    let first = provision::init(js, Default::default()).await.unwrap();
    // Every stream and bucket, then the live consumers, which only the
    // admin may create.
    assert_eq!(
        first.len(),
        definitions::STREAM_FILES.len() + definitions::CONSUMER_FILES.len(),
        "{first:?}"
    );
    assert!(first.iter().all(|p| p.action == Action::Created), "{first:?}");
    let samples = js.get_stream(STREAM_SAMPLES).await.unwrap();
    assert!(samples.consumer_info("pas-recorder-samples").await.is_ok());
    let training = js.get_stream(STREAM_TRAINING).await.unwrap();
    assert!(training.consumer_info("pas-trainer-training").await.is_ok());
    let second = provision::init(js, Default::default()).await.unwrap();
    assert!(second.iter().all(|p| p.action == Action::Unchanged), "{second:?}");

    // The buckets work through the client's KV and object store APIs.
    let kv = js.get_key_value(BUCKET_SCALER).await.unwrap();
    kv.put("lease", "scaler-a".into()).await.unwrap();
    assert_eq!(kv.get("lease").await.unwrap().unwrap(), "scaler-a");
    let kv = js.get_key_value(BUCKET_FORECASTER).await.unwrap();
    kv.put("live.partition.0", "forecaster-a".into()).await.unwrap();
    assert_eq!(kv.get("live.partition.0").await.unwrap().unwrap(), "forecaster-a");
    let store = js.get_object_store(BUCKET_MODELS).await.unwrap();
    store.put("global/1/weights", &mut &b"weights"[..]).await.unwrap();
    let mut obj = store.get("global/1/weights").await.unwrap();
    let mut data = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut obj, &mut data)
        .await
        .unwrap();
    assert_eq!(data, b"weights");

    // Someone shortens retention by hand: status shows it, init puts it back.
    let mut cfg = stream_info(js, STREAM_SAMPLES).await.config.clone();
    cfg.max_age = Duration::from_secs(3 * 86_400);
    js.update_stream(cfg).await.unwrap();
    let status = provision::status(js, Default::default()).await.unwrap();
    let samples = status.iter().find(|s| s.stream == STREAM_SAMPLES).unwrap();
    assert_eq!(samples.drift, ["max_age"]);
    let third = provision::init(js, Default::default()).await.unwrap();
    let repaired = third.iter().find(|p| p.stream == STREAM_SAMPLES).unwrap();
    assert_eq!(
        (repaired.action, repaired.changed.clone()),
        (Action::Updated, vec!["max_age".to_string()])
    );
    assert!(
        provision::status(js, Default::default())
            .await
            .unwrap()
            .iter()
            .all(|s| s.exists && s.drift.is_empty())
    );

    // A live consumer changed or deleted by hand is drift too; init repairs it.
    let training = js.get_stream(STREAM_TRAINING).await.unwrap();
    let mut trainer = training
        .consumer_info("pas-trainer-training")
        .await
        .unwrap()
        .config
        .clone();
    trainer.max_ack_pending = 1;
    training.create_consumer(trainer).await.unwrap();
    let samples = js.get_stream(STREAM_SAMPLES).await.unwrap();
    samples.delete_consumer("pas-recorder-samples").await.unwrap();
    let status = provision::status(js, Default::default()).await.unwrap();
    let drift = |stream: &str| status.iter().find(|s| s.stream == stream).unwrap().drift.clone();
    assert_eq!(drift(STREAM_SAMPLES), ["pas-recorder-samples: missing"]);
    assert_eq!(drift(STREAM_TRAINING), ["pas-trainer-training: max_ack_pending"]);
    let fourth = provision::init(js, Default::default()).await.unwrap();
    let consumers: Vec<_> = fourth
        .iter()
        .filter(|p| p.stream.contains('/'))
        .map(|p| (p.stream.as_str(), p.action))
        .collect();
    assert_eq!(
        consumers,
        [
            ("PAS_SAMPLES/pas-recorder-samples", Action::Created),
            ("PAS_TRAINING/pas-trainer-training", Action::Updated)
        ]
    );
    assert!(
        provision::status(js, Default::default())
            .await
            .unwrap()
            .iter()
            .all(|s| s.drift.is_empty())
    );
}

/// `nats stream add --config FILE` sends the file to the JetStream API as it
/// is; the server must take every definition file that way, and what it
/// creates must be what `pas bus init` would.
#[tokio::test]
async fn definition_files_are_accepted_by_the_jetstream_api_as_they_are() {
    let server = NatsServer::start();
    let conn = connect(&server).await;
    let dir = repo_root().join("nats/jetstream");
    for (name, _) in definitions::STREAM_FILES {
        let body = std::fs::read(dir.join(format!("streams/{name}.json"))).unwrap();
        let reply = conn
            .client
            .request(format!("$JS.API.STREAM.CREATE.{name}"), body.into())
            .await
            .unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert!(reply.get("error").is_none(), "{name}: {reply}");
    }
    for (stream, durable, _) in definitions::CONSUMER_FILES {
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("consumers/{stream}.{durable}.json"))).unwrap(),
        )
        .unwrap();
        let body = serde_json::json!({ "stream_name": stream, "config": config });
        let reply = conn
            .client
            .request(
                format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}"),
                body.to_string().into(),
            )
            .await
            .unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert!(reply.get("error").is_none(), "{durable}: {reply}");
    }
    let after = provision::init(&conn.jetstream, Default::default())
        .await
        .unwrap();
    assert!(after.iter().all(|p| p.action == Action::Unchanged), "{after:?}");
}

fn sample(cpu: f64) -> serde_json::Value {
    serde_json::to_value(CpuSample {
        schema_version: SCHEMA_VERSION,
        timestamp: chrono::Utc::now(),
        node: "n1".into(),
        namespace: Some("shop".into()),
        workload: Some("web".into()),
        pod: Some("web-0".into()),
        cpu_used_millicores: cpu,
        cpu_requested_millicores: Some(500.0),
        cpu_capacity_millicores: None,
        cpu_throttled_ratio: None,
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_goes_to_the_dead_letter_subject_and_nothing_stops() {
    let server = NatsServer::start();
    let conn = connect(&server).await;
    let js = conn.jetstream.clone();
    provision::init(&js, Default::default()).await.unwrap();
    let prefix = Prefix::live();
    let consumer = js
        .get_stream(STREAM_SAMPLES)
        .await
        .unwrap()
        .get_or_create_consumer(
            "pas-recorder-samples",
            definitions::consumer(Stage::Recorder, STREAM_SAMPLES, &prefix).unwrap(),
        )
        .await
        .unwrap();
    let mut registry = Registry::default();
    let dead = std::sync::Arc::new(DeadLetters::new(
        js.clone(),
        Stage::Trainer,
        &prefix,
        &mut registry,
    ));

    let subject = prefix.pod_cpu("shop", "web", "web-0").unwrap();
    let inputs: Vec<Vec<u8>> = vec![
        sample(100.0).to_string().into_bytes(),
        b"{not json".to_vec(),
        sample(-5.0).to_string().into_bytes(),
        sample(7777.0).to_string().into_bytes(), // the handler rejects this one
        sample(200.0).to_string().into_bytes(),
    ];
    for payload in inputs {
        js.publish(subject.clone(), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let handled = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let task = {
        let (dead, handled, stop) = (dead.clone(), handled.clone(), stop.clone());
        tokio::spawn(async move {
            pas_nats::consume::<CpuSample, _, _>(
                &consumer,
                &dead,
                &pas_nats::Admission::default(),
                stop,
                |s, _| {
                    let handled = handled.clone();
                    async move {
                        if s.cpu_used_millicores > 5000.0 {
                            return Err(HandlerError::Reject {
                                reason: "more CPU than the pod can have".into(),
                            });
                        }
                        handled.lock().unwrap().push(s.cpu_used_millicores);
                        Ok(())
                    }
                },
            )
            .await
        })
    };

    eventually(Duration::from_secs(10), "the good samples handled", || async {
        (handled.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        *handled.lock().unwrap(),
        [100.0, 200.0],
        "good samples before and after bad ones are handled"
    );
    assert_eq!(dead.count("malformed"), 1);
    assert_eq!(dead.count("invalid"), 1);
    assert_eq!(dead.count("rejected"), 1);

    // The dead letters are stored with the error in headers, payload as it came.
    let mut dlq = js.get_stream(STREAM_DLQ).await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 3);
    let first = dlq.get_raw_message(1).await.unwrap();
    assert_eq!(first.subject.as_str(), prefix.dlq(Stage::Trainer));
    assert_eq!(&first.payload[..], b"{not json");
    let headers: &HeaderMap = &first.headers;
    assert_eq!(headers.get(HEADER_ERROR_TYPE).unwrap().as_str(), "malformed");
    assert_eq!(headers.get(HEADER_ORIGINAL_SUBJECT).unwrap().as_str(), subject);
    assert!(
        headers
            .get(HEADER_ERROR)
            .unwrap()
            .as_str()
            .contains("not a valid message")
    );
    let second = dlq.get_raw_message(2).await.unwrap();
    assert!(
        second
            .headers
            .get(HEADER_ERROR)
            .unwrap()
            .as_str()
            .contains("cpu_used_millicores is negative")
    );

    // Everything was acked: nothing is pending or waiting for redelivery.
    eventually(Duration::from_secs(5), "all acks", || {
        let js = js.clone();
        async move {
            let mut c: async_nats::jetstream::consumer::PullConsumer = js
                .get_stream(STREAM_SAMPLES)
                .await
                .ok()?
                .get_consumer("pas-recorder-samples")
                .await
                .ok()?;
            let info = c.info().await.ok()?;
            (info.num_ack_pending == 0 && info.num_pending == 0).then_some(())
        }
    })
    .await;
    assert!(!task.is_finished(), "the consumer keeps running after bad input");
    stop.cancel();
    task.await.unwrap().unwrap();

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"pas_dlq_messages_total{stage="trainer",error_type="malformed"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn the_agent_account_may_only_publish_samples() {
    let server = NatsServer::with_accounts();
    let admin = pas_nats::connect(&server.as_user("admin"), "admin", false)
        .await
        .unwrap();
    provision::init(&admin.jetstream, Default::default())
        .await
        .unwrap();

    let agent = pas_nats::connect(&server.as_user("agent"), "agent", false)
        .await
        .unwrap();
    let ok = agent
        .jetstream
        .publish(
            Prefix::live().node_cpu("n1").unwrap(),
            sample(1.0).to_string().into(),
        )
        .await
        .unwrap()
        .await;
    assert!(ok.is_ok(), "the agent publishes samples with acks: {ok:?}");

    // Publishing a forecast is refused: the server sends a permissions
    // violation and JetStream never stores it.
    let forecast = Prefix::live().forecast("shop", "web").unwrap();
    let refused = agent
        .jetstream
        .publish(forecast, "{}".into())
        .await
        .unwrap()
        .await;
    assert!(refused.is_err(), "the agent must not publish forecasts");
    assert!(
        agent.jetstream.get_stream("PAS_FORECASTS").await.is_err(),
        "nor use the JetStream API"
    );

    // A wrong password does not get in at all.
    let mut wrong = server.as_user("agent");
    wrong.password = Some(Secret::new("nope"));
    assert!(pas_nats::connect(&wrong, "intruder", false).await.is_err());

    // The viewer reads samples the way `nats sub 'pas.>'` does.
    let viewer = pas_nats::connect(&server.as_user("viewer"), "viewer", false)
        .await
        .unwrap();
    let mut sub = viewer.client.subscribe("pas.>").await.unwrap();
    // flush() only writes the buffer; a request on the same connection is
    // answered only after the server has processed the SUB before it.
    viewer
        .client
        .request("$JS.API.STREAM.NAMES", "".into())
        .await
        .unwrap();
    agent
        .jetstream
        .publish(
            Prefix::live().node_cpu("n2").unwrap(),
            sample(2.0).to_string().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap_or_else(|_| panic!("the viewer saw no sample; server log:\n{}", server.log()))
        .unwrap();
    assert_eq!(got.subject.as_str(), "pas.cpu.node.n2");
}
