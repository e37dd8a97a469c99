//! Issue 20: `pas import prometheus` against a real Prometheus server
//! (Debian's package, installed by the set-up script). Its TSDB is
//! backfilled with `promtool tsdb create-blocks-from openmetrics` from an
//! OpenMetrics file generated from a bundled trace: cAdvisor's CPU counter
//! per pod, kube-state-metrics' CPU requests and pod owners. The import must
//! give back the file's values exactly, report the gap the file has, leave
//! out the pod no StatefulSet or Deployment owns, and refuse bad input
//! clearly: an unreachable server, a namespace with no series.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pas_integration_tests::{NatsServer, Prometheus, connect_and_provision, repo_root, run_pas};
use pas_replay::prometheus::{self, Config};
use pas_schemas::CpuSample;
use pas_schemas::subjects::{BUCKET_HISTORY, Prefix};

const STEP: i64 = 300;

/// The trace's last two days, moved to end an hour ago: (time, percent).
fn trace() -> Vec<(DateTime<Utc>, f64)> {
    let text =
        std::fs::read_to_string(repo_root().join("testdata/traces/nab-ec2_cpu_utilization_77c1ca.csv"))
            .unwrap();
    let points = pas_schemas::trace::parse(&text).unwrap();
    let tail = &points[points.len() - 576..];
    let end = (Utc::now().timestamp() - 3600).div_euclid(STEP) * STEP;
    let shift = end - tail[tail.len() - 1].0.timestamp();
    tail.iter()
        .map(|(t, v)| (DateTime::from_timestamp(t.timestamp() + shift, 0).unwrap(), *v))
        .collect()
}

/// A pod of the generated cluster: its labels, cores per trace percent, the
/// rows it has no samples for, its CPU request and owner.
struct Pod {
    namespace: &'static str,
    pod: &'static str,
    cores_per_percent: f64,
    missing: std::ops::Range<usize>,
    request: f64,
    owner: (&'static str, &'static str),
}

const PODS: [Pod; 5] = [
    Pod {
        namespace: "shop",
        pod: "web-0",
        cores_per_percent: 0.01,
        missing: 0..0,
        request: 0.5,
        owner: ("StatefulSet", "web"),
    },
    Pod {
        namespace: "shop",
        pod: "web-1",
        cores_per_percent: 0.005,
        missing: 0..0,
        request: 0.5,
        owner: ("StatefulSet", "web"),
    },
    // A Deployment's pod, with two hours missing (rows 100 to 123).
    Pod {
        namespace: "shop",
        pod: "api-7d9f8b6c5-x2x1z",
        cores_per_percent: 0.02,
        missing: 100..124,
        request: 1.0,
        owner: ("ReplicaSet", "api-7d9f8b6c5"),
    },
    // A ReplicaSet no Deployment owns: not a scaling target either.
    Pod {
        namespace: "shop",
        pod: "batch-5f7c9-q8w2e",
        cores_per_percent: 0.001,
        missing: 0..0,
        request: 0.1,
        owner: ("ReplicaSet", "batch-5f7c9"),
    },
    // A DaemonSet's pod: not a scaling target.
    Pod {
        namespace: "shop",
        pod: "logs-abcde",
        cores_per_percent: 0.001,
        missing: 0..0,
        request: 0.1,
        owner: ("DaemonSet", "logs"),
    },
];

/// The OpenMetrics file: per pod, the CPU counter sampled every minute
/// (rising at each row's rate through the five minutes up to the row's
/// time, so a 5-minute rate at a row's time is its value), its request and
/// its owner. Rows a pod misses have no samples.
fn openmetrics(rows: &[(DateTime<Utc>, f64)]) -> String {
    let mut out = String::from("# TYPE container_cpu_usage_seconds counter\n");
    for p in &PODS {
        let mut counter = 0.0;
        for (i, (t, percent)) in rows.iter().enumerate().skip(1) {
            for minute in 1..=5 {
                counter += percent * p.cores_per_percent * 60.0;
                if !p.missing.contains(&i) {
                    let at = t.timestamp() - STEP + 60 * minute;
                    writeln!(
                        out,
                        r#"container_cpu_usage_seconds_total{{namespace="{}",pod="{}",container="app"}} {counter} {at}"#,
                        p.namespace, p.pod
                    )
                    .unwrap();
                }
            }
        }
    }
    let (first, last) = (rows[0].0.timestamp(), rows[rows.len() - 1].0.timestamp());
    out.push_str("# TYPE kube_pod_container_resource_requests gauge\n");
    for p in &PODS {
        for at in (first..=last).step_by(60) {
            writeln!(
                out,
                r#"kube_pod_container_resource_requests{{namespace="{}",pod="{}",container="app",resource="cpu",unit="core"}} {} {at}"#,
                p.namespace, p.pod, p.request
            )
            .unwrap();
        }
    }
    out.push_str("# TYPE kube_pod_owner gauge\n");
    for p in &PODS {
        for at in (first..=last).step_by(60) {
            writeln!(
                out,
                r#"kube_pod_owner{{namespace="{}",pod="{}",owner_kind="{}",owner_name="{}",owner_is_controller="true"}} 1 {at}"#,
                p.namespace, p.pod, p.owner.0, p.owner.1
            )
            .unwrap();
        }
    }
    // The Deployment api owns its ReplicaSet; batch's has no owner.
    out.push_str("# TYPE kube_replicaset_owner gauge\n");
    for (replicaset, kind, owner) in [
        ("api-7d9f8b6c5", "Deployment", "api"),
        ("batch-5f7c9", "<none>", "<none>"),
    ] {
        for at in (first..=last).step_by(60) {
            writeln!(
                out,
                r#"kube_replicaset_owner{{namespace="shop",replicaset="{replicaset}",owner_kind="{kind}",owner_name="{owner}",owner_is_controller="true"}} 1 {at}"#
            )
            .unwrap();
        }
    }
    out.push_str("# EOF\n");
    out
}

fn by_pod(samples: &[CpuSample]) -> BTreeMap<String, BTreeMap<i64, (f64, Option<f64>)>> {
    let mut out: BTreeMap<String, BTreeMap<i64, (f64, Option<f64>)>> = BTreeMap::new();
    for s in samples {
        out.entry(s.pod.clone().unwrap()).or_default().insert(
            s.timestamp.timestamp(),
            (s.cpu_used_millicores, s.cpu_requested_millicores),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_gives_back_what_prometheus_holds() {
    let rows = trace();
    let server = tokio::task::spawn_blocking({
        let text = openmetrics(&rows);
        move || Prometheus::backfilled(&text)
    })
    .await
    .unwrap();
    let config = Config {
        url: server.url(),
        start: rows[0].0,
        end: rows[rows.len() - 1].0,
        step: Duration::from_secs(STEP as u64),
        chunk: Duration::from_secs(86_400),
        ..Config::default()
    };
    let mut seen = Vec::new();
    let imported = prometheus::import(&config, &mut |done, total| seen.push((done, total)))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    // Progress runs from nothing to every query.
    let total = seen[0].1;
    assert_eq!(seen.first(), Some(&(0, total)));
    assert_eq!(seen.last(), Some(&(total, total)));
    assert_eq!(imported.queries, total);

    // The samples equal the file's: use = percent × cores, request as given.
    let pods = by_pod(&imported.samples);
    assert_eq!(
        pods.keys().collect::<Vec<_>>(),
        ["api-7d9f8b6c5-x2x1z", "web-0", "web-1"],
        "the DaemonSet's pod and the ownerless ReplicaSet's are left out"
    );
    assert_eq!(imported.pods_left_out, 2);
    for p in PODS.iter().take(3) {
        let got = &pods[p.pod];
        let want: BTreeMap<i64, f64> = rows
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(i, _)| !p.missing.contains(i))
            .map(|(_, (t, percent))| (t.timestamp(), percent * p.cores_per_percent * 1000.0))
            .collect();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{}: the steps",
            p.pod
        );
        for (t, used) in &want {
            let (u, r) = got[t];
            assert!(
                (u - used).abs() <= 1e-6 * used.max(1.0),
                "{} at {t}: {u} against {used}",
                p.pod
            );
            assert_eq!(r, Some(p.request * 1000.0));
        }
    }
    let names: Vec<(&str, &str)> = imported
        .samples
        .iter()
        .map(|s| (s.pod.as_deref().unwrap(), s.workload.as_deref().unwrap()))
        .collect();
    assert!(
        names.contains(&("api-7d9f8b6c5-x2x1z", "api")),
        "the Deployment names its pod"
    );
    assert!(names.contains(&("web-1", "web")));
    assert_eq!(
        imported.workloads.keys().collect::<Vec<_>>(),
        ["shop/api", "shop/web"]
    );
    // The two hours api has no samples for are one gap, and the only one.
    assert_eq!(imported.gaps.len(), 1, "{:?}", imported.gaps);
    assert_eq!(imported.gaps[0].workload, "shop/api");
    assert_eq!(
        (imported.gaps[0].after, imported.gaps[0].before),
        (rows[99].0, rows[124].0)
    );

    // The binary: a .jsonl of the same samples, and the coarse history of
    // each workload in pas-history (as the admin, who may write it).
    let nats = NatsServer::with_accounts();
    let conn = connect_and_provision(&nats).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("history.jsonl");
    let since = format!("{}s", (Utc::now() - rows[0].0).num_seconds() + 60);
    let until = format!("{}s", (Utc::now() - rows[rows.len() - 1].0).num_seconds() - 60);
    let url = server.url();
    let import = |user: &str, more: &[&str]| {
        let mut args = vec![
            "import",
            "prometheus",
            "--url",
            &url,
            "--namespace",
            "shop",
            "--since",
            &since,
            "--until",
            &until,
        ];
        args.extend_from_slice(more);
        run_pas(&nats, user, &args)
    };
    let run = import(
        "admin",
        &["--step", "5m", "--out", out.to_str().unwrap(), "--live"],
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("Gap in shop/api"), "{stdout}");
    let text = std::fs::read_to_string(&out).unwrap();
    let written: Vec<CpuSample> = text
        .lines()
        .map(|l| pas_schemas::decode(l.as_bytes()).unwrap())
        .collect();
    assert_eq!(by_pod(&written), pods, "the file holds what the library read");
    let kv = conn.jetstream.get_key_value(BUCKET_HISTORY).await.unwrap();
    let keys = Prefix::live().keys();
    let t = rows[200].0;
    let index = t
        .timestamp()
        .div_euclid(STEP)
        .div_euclid(pas_workloads::history::SLOTS as i64);
    let stored = pas_nats::history::read(&kv, &keys, "shop", "web", &[index])
        .await
        .unwrap();
    let block = stored.blocks.first().expect("web's block in pas-history");
    // A slot holds the mean demand of the step that starts it: web's two
    // pods at the row ending a step later.
    let slot = (t.timestamp() - STEP)
        .div_euclid(STEP)
        .rem_euclid(pas_workloads::history::SLOTS as i64) as usize;
    let demand = rows[200].1 * (0.01 + 0.005) * 1000.0;
    // A block keeps each slot to 1/65,534 of its largest value.
    let largest = block
        .values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    assert!(
        (block.values[slot] - demand).abs() <= largest / 65_534.0 + 1e-9,
        "{} against {demand}",
        block.values[slot]
    );

    // One workload: only its pods are asked for, and given.
    let api = prometheus::import(
        &Config {
            workload: Some("api".into()),
            ..config.clone()
        },
        &mut |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(
        by_pod(&api.samples).keys().collect::<Vec<_>>(),
        ["api-7d9f8b6c5-x2x1z"]
    );
    assert_eq!(
        by_pod(&api.samples)["api-7d9f8b6c5-x2x1z"],
        pods["api-7d9f8b6c5-x2x1z"]
    );

    // Bad input: a namespace with no series, an unreachable server.
    let refusal = async |c: Config| {
        prometheus::import(&c, &mut |_, _| {})
            .await
            .unwrap_err()
            .to_string()
    };
    let empty = refusal(Config {
        namespace: Some("nope".into()),
        ..config.clone()
    })
    .await;
    assert!(
        empty.contains("no kube_pod_owner series") && empty.contains("namespace nope"),
        "{empty}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = refusal(Config {
        url: format!("http://127.0.0.1:{closed}"),
        retries: 1,
        ..config.clone()
    })
    .await;
    assert!(
        unreachable.contains("cannot reach Prometheus at http://127.0.0.1:"),
        "{unreachable}"
    );
    let refused = run_pas(&nats, "viewer", &["import", "prometheus", "--url", &server.url()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--out"),
        "no destination is refused"
    );
    // A user that may not write pas-history: the write fails, and what was
    // read is kept in a file that says so.
    let viewer = import("viewer", &["--live"]);
    let said = String::from_utf8_lossy(&viewer.stderr);
    let kept = said
        .split("What was read is kept in ")
        .nth(1)
        .and_then(|rest| rest.split(" (").next())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(!viewer.status.success(), "{said}");
    let text = std::fs::read_to_string(kept).unwrap();
    let kept_samples: Vec<CpuSample> = text
        .lines()
        .map(|l| pas_schemas::decode(l.as_bytes()).unwrap())
        .collect();
    assert_eq!(by_pod(&kept_samples), pods, "nothing read is lost");
    let _ = std::fs::remove_file(kept);
    let credentials = refusal(Config {
        url: "http://ops:secret@127.0.0.1:9090".into(),
        ..config.clone()
    })
    .await;
    assert!(
        credentials.contains("--user") && !credentials.contains("secret"),
        "{credentials}"
    );
}

/// Credentials go where Prometheus (or the proxy in front of it) reads
/// them, and a refusal says to check them. A loopback server stands in:
/// it keeps each request's `Authorization` header and answers 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_sent_and_a_refusal_says_so() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::thread::spawn(move || {
        let mut headers = Vec::new();
        for stream in listener.incoming().take(2) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let mut auth = None;
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("authorization: ") {
                    auth = Some(line[line.len() - v.len()..].trim().to_owned());
                }
                line.clear();
            }
            headers.push(auth);
            let body = r#"{"status":"error","errorType":"unauthorized","error":"no"}"#;
            write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
        headers
    });
    let base = Config {
        url,
        retries: 3,
        ..Config::default()
    };
    for auth in [
        prometheus::Auth::Bearer(pas_runtime::Secret::new("t0ken")),
        prometheus::Auth::Basic {
            user: "ops".into(),
            password: pas_runtime::Secret::new("s3cret"),
        },
    ] {
        let error = prometheus::import(&Config { auth, ..base.clone() }, &mut |_, _| {})
            .await
            .unwrap_err()
            .to_string();
        // Refused once, not retried: a 401 does not pass by itself.
        assert!(
            error.contains("refused the request (401 Unauthorized)"),
            "{error}"
        );
        assert!(!error.contains("t0ken") && !error.contains("s3cret"), "{error}");
    }
    let headers = seen.join().unwrap();
    // "ops:s3cret" in base64.
    assert_eq!(
        headers,
        [
            Some("Bearer t0ken".to_owned()),
            Some("Basic b3BzOnMzY3JldA==".to_owned())
        ]
    );
}
