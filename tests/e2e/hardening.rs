//! The gate's production-hardening scenarios: an unmanaged object is not
//! taken over, a poison delivery is dead-lettered while others flow, two
//! replicas have one writer, and a forged flood leaves a counter, not rows.

use super::{bin, common, Env, Evidence, Issues};
use issueops_core::{naming, Store};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A configured repo the fake GitHub App is not installed on.
pub use super::env::UNINSTALLED_REPO;

/// The value of an unlabelled-or-labelled metric line, `None` when the
/// series is absent (a series that was never written is not a zero).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn scrape(http: &reqwest::Client, url: &str) -> Option<String> {
    http.get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

pub async fn unmanaged_object_not_taken_over(env: &Env, issues: &Issues) -> Evidence {
    // Someone else's namespace, named as issueops would name the issue's.
    let namespace = naming::namespace_for_issue(common::REPO, issues.foreign);
    let theirs: Namespace = serde_json::from_value(json!({
        "metadata": { "name": namespace, "labels": { "team": "platform" } }
    }))
    .unwrap();
    let namespaces = Api::<Namespace>::all(env.kube.clone());
    namespaces
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    env.label("e2e-foreign-1", issues.foreign, "run:dev", "Codertocat")
        .await;
    let run = naming::run_id_for_delivery("e2e-foreign-1");
    env.wait_state(&run, &["failed"]).await;
    let reason = env
        .store
        .get_run(&run)
        .await
        .unwrap()
        .unwrap()
        .reason
        .unwrap_or_default();
    assert!(
        reason.contains("not managed by this issueops install"),
        "{reason}"
    );
    let refused = env
        .store
        .audit_rows_for_run(&run)
        .await
        .unwrap()
        .into_iter()
        .chain(env.store.audit_rows().await.unwrap())
        .find(|r| {
            r.outcome == "refused-not-ours"
                && r.object.as_deref() == Some(&format!("Namespace/{namespace}"))
        })
        .expect("the refusal is audited");
    let still = namespaces.get(&namespace).await.unwrap();
    let labels = still.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("platform"));
    assert!(
        !labels.contains_key(issueops_core::MANAGED_BY_LABEL),
        "our label was stamped on their namespace: {labels:?}"
    );
    let jobs = Api::<Job>::namespaced(env.kube.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(jobs.items.is_empty(), "a Job went into their namespace");
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
    let mut e = Evidence::new();
    e.insert("run_id".into(), run.into());
    e.insert("namespace".into(), namespace.into());
    e.insert("refusal_audit_id".into(), refused.id.into());
    e.insert("reason".into(), reason.into());
    e
}

pub async fn poison_delivery_dead_lettered_others_flow(env: &Env, issues: &Issues) -> Evidence {
    // A trigger from a repo the App is not installed on: GitHub answers 404
    // for its installation, for good.
    let mut poison: Value =
        serde_json::from_slice(&common::labeled_issue("run:dev", issues.foreign)).unwrap();
    poison["repository"]["full_name"] = UNINSTALLED_REPO.into();
    let (status, text) = env
        .post_signed("e2e-poison-1", &serde_json::to_vec(&poison).unwrap())
        .await;
    assert_eq!(status, 202, "{text}");
    // Right behind it, a delivery of another repo.
    env.label("e2e-after-poison-1", issues.dev, "bug", "Codertocat")
        .await;
    let dead = env
        .wait_for("the poison delivery is dead-lettered", || async {
            env.store
                .dead_deliveries()
                .await
                .unwrap()
                .into_iter()
                .find(|d| d.delivery_id == "e2e-poison-1")
        })
        .await;
    assert!(
        dead.reason.contains("404") && dead.attempts == 1,
        "{dead:?}"
    );
    let flowed = env
        .wait_for("the next delivery is handled", || async {
            let (rows, _) = env.store.deliveries_page(false, 0).await.unwrap();
            rows.into_iter()
                .find(|d| d.delivery_id == "e2e-after-poison-1" && d.processed_at.is_some())
        })
        .await;
    let audited = env
        .store
        .audit_rows()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.kind == "delivery.dead" && r.delivery_id.as_deref() == Some("e2e-poison-1"))
        .expect("the dead letter is audited");
    let listed = env.cli(&["deliveries"]);
    assert!(
        listed.contains("e2e-poison-1") && listed.contains(UNINSTALLED_REPO),
        "{listed}"
    );
    let mut e = Evidence::new();
    e.insert("dead_reason".into(), dead.reason.into());
    e.insert("dead_audit_id".into(), audited.id.into());
    e.insert(
        "next_outcome".into(),
        flowed.outcome.unwrap_or_default().into(),
    );
    e
}

/// One replica of `issueops reconciler` (control plane and reconciler).
struct Replica {
    child: Child,
    metrics: String,
}

impl Replica {
    fn start(work: &std::path::Path, name: &str, db: &str, state_repo: &std::path::Path) -> Self {
        let port = common::free_port();
        let log = std::fs::File::create(work.join(format!("{name}.log"))).unwrap();
        let child = Command::new(bin())
            .args([
                "reconciler",
                "--cluster",
                "kube",
                "--poll-seconds",
                "1",
                "--no-ui",
                "--metrics-listen",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .env("ISSUEOPS_DATA_DIR", work.join(name))
            .env("ISSUEOPS_DATABASE_URL", db)
            .env("ISSUEOPS_STATE_REPO", state_repo)
            .env("ISSUEOPS_CONFIG", work.join("replicas.yaml"))
            .env("HOSTNAME", name)
            .env("KUBECONFIG", common::real_cluster().kubeconfig)
            .env_remove("ISSUEOPS_GITHUB_APP_ID")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("issueops reconciler starts");
        Self {
            child,
            metrics: format!("http://127.0.0.1:{port}"),
        }
    }

    /// `(control plane, reconciler)` leadership as this replica reports it;
    /// `None` until it answers with both gauges.
    async fn leads(&self, http: &reqwest::Client) -> Option<(bool, bool)> {
        let text = scrape(http, &self.metrics).await?;
        Some((
            metric(&text, "issueops_leader{role=\"control-plane\"}")? == 1.0,
            metric(&text, "issueops_leader{role=\"reconciler\"}")? == 1.0,
        ))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two `issueops reconciler` replicas on one PostgreSQL database and one
/// cluster: the second reports itself standing by (both leader gauges
/// present and 0), takes over within two Lease durations after the first is
/// killed, and nothing is started or applied twice. Catches a standby that
/// never publishes its gauges (`metrics::leader(role, false)` removed from
/// `src/leader.rs`'s waiting loop), which a reading of "absent" as 0 let
/// through.
pub async fn two_replicas_one_writer(env: &Env, _issues: &Issues) -> Evidence {
    let work = env.work.join("replicas");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let pg = common::PgDatabase::create().await;
    let instance = format!("e2e-rep-{}", hex::encode(rand::random::<[u8; 3]>()));
    let lease_seconds = 4u64;
    std::fs::write(
        work.join("replicas.yaml"),
        serde_yaml::to_string(&json!({
            "repos": [common::REPO],
            "instance": instance,
            "job": { "image": "registry.example/issueops/agent:succeed" },
            "lifecycle": { "run_retention_seconds": 0, "issue_idle_seconds": 0 },
            "cluster": { "lease_namespace": "default", "lease_seconds": lease_seconds },
        }))
        .unwrap(),
    )
    .unwrap();
    let state_repo = work.join("state.git");
    let migrated = Command::new(bin())
        .arg("migrate")
        .env("ISSUEOPS_DATABASE_URL", &pg.url)
        .output()
        .unwrap();
    assert!(migrated.status.success());
    // The edge: one gateway process on the same database.
    let gateway_port = common::free_port();
    let gateway_log = std::fs::File::create(work.join("gateway.log")).unwrap();
    let mut gateway = Command::new(bin())
        .args(["gateway", "--metrics-listen", "127.0.0.1:0", "--listen"])
        .arg(format!("127.0.0.1:{gateway_port}"))
        .env("ISSUEOPS_DATABASE_URL", &pg.url)
        .env("ISSUEOPS_WEBHOOK_SECRET", common::SECRET)
        .stdout(gateway_log.try_clone().unwrap())
        .stderr(gateway_log)
        .spawn()
        .unwrap();
    let http = &env.http;
    let a = Replica::start(&work, "replica-a", &pg.url, &state_repo);
    env.wait_until("replica a leads both roles", || async {
        a.leads(http).await == Some((true, true))
    })
    .await;
    let b = Replica::start(&work, "replica-b", &pg.url, &state_repo);
    env.wait_until("replica b answers, standing by", || async {
        b.leads(http).await == Some((false, false))
    })
    .await;

    let store = Store::connect(&pg.url).await.unwrap();
    let deliver = |delivery: &'static str, issue: u64| {
        let body = common::labeled_issue("run:dev", issue);
        let base = format!("http://127.0.0.1:{gateway_port}");
        async move {
            let (status, text) = common::post_signed_issue(http, &base, delivery, &body).await;
            assert_eq!(status, 202, "{text}");
            naming::run_id_for_delivery(delivery)
        }
    };
    let pruned = |run: String| {
        let store = store.clone();
        async move {
            env.wait_for(&format!("run {run} to end and be pruned"), || async {
                let r = store.get_run(&run).await.unwrap()?;
                (r.state == "pruned").then_some(r)
            })
            .await
        }
    };
    env.wait_until("the gateway is ready", || async {
        http.get(format!("http://127.0.0.1:{gateway_port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let first = deliver("e2e-replicas-1", common::unique_issue()).await;
    pruned(first.clone()).await;

    // The leader dies without a word (no release of its Lease or lock).
    let killed = Instant::now();
    drop(a);
    let second = deliver("e2e-replicas-2", common::unique_issue()).await;
    env.wait_until("replica b takes over both roles", || async {
        b.leads(http).await == Some((true, true))
    })
    .await;
    let took_over = killed.elapsed();
    assert!(
        took_over < Duration::from_secs(lease_seconds * 2 + 2),
        "took {took_over:?} for a {lease_seconds} s Lease"
    );
    pruned(second.clone()).await;

    // Nothing lost, nothing done twice: one start commit and one Job apply
    // per run, both runs' deliveries handled once.
    let repo = issueops_core::state_repo::StateRepo::local(&state_repo, "main").unwrap();
    let mut evidence = Evidence::new();
    for run in [&first, &second] {
        let starts = repo
            .log()
            .unwrap()
            .into_iter()
            .filter(|sha| {
                repo.commit_info(sha).is_ok_and(|i| {
                    i.trailers.iter().any(|(k, v)| k == "Run-Id" && v == run)
                        && i.trailers
                            .iter()
                            .any(|(k, v)| k == "Action" && v == "start-run")
                })
            })
            .count();
        assert_eq!(starts, 1, "run {run} was started {starts} times");
        let job_applies = store
            .audit_rows_for_run(run)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| {
                r.kind == "apply"
                    && r.outcome == "applied"
                    && r.object.as_deref().is_some_and(|o| o.starts_with("Job/"))
            })
            .count();
        assert_eq!(
            job_applies, 1,
            "run {run}'s Job applied {job_applies} times"
        );
    }
    let (inbox, _) = store.deliveries_page(false, 0).await.unwrap();
    assert!(inbox.iter().all(|d| d.processed_at.is_some()), "{inbox:?}");
    let _ = gateway.kill();
    let _ = gateway.wait();
    drop(b);
    pg.drop_db().await;
    evidence.insert("runs".into(), json!([first, second]));
    evidence.insert("takeover_seconds".into(), took_over.as_secs_f64().into());
    evidence.insert("lease_seconds".into(), lease_seconds.into());
    evidence
}

/// Refusals counted so far (signature and rate limit), from `/metrics`; a
/// family not yet written counts 0 here, since refusals may not have happened.
fn refusals_counted(metrics: &str) -> f64 {
    ["signature", "rate_limited"]
        .iter()
        .map(|r| {
            metric(
                metrics,
                &format!("issueops_refused_requests_total{{reason=\"{r}\"}}"),
            )
            .unwrap_or(0.0)
        })
        .sum()
}

/// How many rows of `table` carry a delivery id of the flood in `column`.
async fn flood_rows(env: &Env, table: &str, column: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(&format!(
        "SELECT COUNT(*) FROM {table} WHERE {column} LIKE 'e2e-flood-%'"
    ))
    .fetch_one(env.store.pool())
    .await
    .unwrap();
    n
}

/// 3,000 forged deliveries from one address: each is refused (401, then
/// 429), none reaches the inbox, no audit row is linked to a delivery id they
/// claim, the only new rows are a few refusal rows, and the counter has all
/// 3,000. Catches a refusal row that links the claimed id (`(Some(id), _) =>
/// event.detail["claimed_delivery_id"] = …` in `gateway/src/router.rs` made
/// `event = event.delivery(id.clone())`): a forged request would show in the
/// timeline of a real run with that id.
pub async fn forged_flood_leaves_no_trace_but_a_counter(env: &Env, issues: &Issues) -> Evidence {
    let rows_before = env.store.audit_rows().await.unwrap().len();
    let inbox_before = env.store.count_deliveries().await.unwrap();
    let counted_before = scrape(&env.http, &env.metrics_url)
        .await
        .map(|t| refusals_counted(&t))
        .unwrap_or(0.0);
    let body = common::labeled_issue("run:dev", issues.dev);
    let forged = issueops_gateway::sign(b"an attacker's guess", &body);
    let started = Instant::now();
    let sends = (0..3000).map(|i| {
        let (body, forged) = (&body, &forged);
        async move {
            env.post(&format!("e2e-flood-{i}"), body, Some(forged.clone()))
                .await
                .0
        }
    });
    let statuses = futures::future::join_all(sends).await;
    let took = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429));
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    let rows = env.store.audit_rows().await.unwrap();
    // Besides the reconciler's own periodic rows, only refusals: first of
    // their kind from the source, or a window's summary.
    let new_rows: Vec<_> = rows[rows_before..]
        .iter()
        .filter(|r| r.kind != "reconcile")
        .collect();
    assert!(
        new_rows.len() <= 4,
        "{} audit rows for 3,000 forged requests",
        new_rows.len()
    );
    assert!(
        new_rows.iter().all(|r| r.kind == "delivery.rejected"),
        "{new_rows:?}"
    );
    assert_eq!(flood_rows(env, "inbox", "delivery_id").await, 0, "inbox");
    assert_eq!(
        env.store.count_deliveries().await.unwrap(),
        inbox_before,
        "the inbox grew"
    );
    assert_eq!(
        flood_rows(env, "audit_events", "delivery_id").await,
        0,
        "an audit row is linked to a forged delivery id"
    );
    let metrics = scrape(&env.http, &env.metrics_url).await.unwrap();
    let counted = refusals_counted(&metrics);
    assert_eq!(counted - counted_before, 3000.0, "{metrics}");
    // GitHub's deliveries from that address flow again once its rate allows.
    let probe = common::labeled_issue("bug", issues.dev);
    let recovered = env
        .wait_for("the source's rate to recover", || async {
            let (status, _) = env.post_signed("e2e-after-flood", &probe).await;
            (status == 202).then_some(started.elapsed())
        })
        .await;
    let mut e = Evidence::new();
    e.insert("flood_seconds".into(), took.as_secs_f64().into());
    e.insert("throttled_429".into(), throttled.into());
    e.insert("new_audit_rows".into(), new_rows.len().into());
    e.insert("refusals_counted".into(), (counted - counted_before).into());
    e.insert(
        "recovered_after_seconds".into(),
        recovered.as_secs_f64().into(),
    );
    e
}
