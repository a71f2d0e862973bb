//! The gateway over a real socket: what it accepts, what it refuses, and that
//! a refusal changes nothing but the audit table.

mod common;

use common::{fixture, labeled, Db, Harness};
use issueops_gateway::sign;
use std::time::Duration;

async fn refused(
    h: &Harness,
    event: Option<&str>,
    delivery: Option<&str>,
    body: &[u8],
    sig: Option<String>,
) -> (u16, String) {
    let audit_before = h.audit().await.len();
    let result = h.post(event, delivery, body, sig).await;
    assert_eq!(
        h.store.count_deliveries().await.unwrap(),
        0,
        "a refused delivery reached the inbox"
    );
    // The first refusal of a kind from a source is audited; the rest of the
    // window only counted (summarised when the window ends).
    let rows = h.audit().await;
    assert!(
        rows.len() <= audit_before + 1,
        "a refusal writes at most one audit row"
    );
    if rows.len() > audit_before {
        assert_eq!(rows.last().unwrap().kind, "delivery.rejected");
    }
    result
}

fn rejected_rows(rows: &[issueops_core::AuditRow]) -> usize {
    rows.iter()
        .filter(|r| r.kind == "delivery.rejected")
        .count()
}

#[tokio::test]
async fn missing_malformed_or_forged_signatures_get_401() {
    let h = Harness::start(Db::Sqlite).await;
    let body = labeled("issues/labeled.payload.json", "run:dev");
    let (s, text) = refused(&h, Some("issues"), Some("d1"), &body, None).await;
    assert_eq!(s, 401);
    assert!(text.contains("missing X-Hub-Signature-256"), "{text}");
    let (s, _) = refused(
        &h,
        Some("issues"),
        Some("d2"),
        &body,
        Some("sha1=abc".into()),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = refused(
        &h,
        Some("issues"),
        Some("d3"),
        &body,
        Some(sign(b"wrong", &body)),
    )
    .await;
    assert_eq!(s, 401);
    // A valid signature over a different body is a forgery too.
    let (s, _) = refused(
        &h,
        Some("issues"),
        Some("d4"),
        &body,
        Some(sign(common::SECRET.as_bytes(), b"{}")),
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(
        rejected_rows(&h.audit().await),
        1,
        "four forged requests from one source: one row"
    );
    h.finish().await;
}

/// 3,000 forged requests as fast as one client sends them: the source is
/// throttled (429), and the audit table gains a handful of rows, however many
/// requests came; the numbers are in the metrics and the summaries.
#[tokio::test]
async fn a_forged_flood_leaves_a_handful_of_rows_and_a_counter() {
    let mut config = common::test_config();
    config.gateway.rate_per_second = 50;
    config.gateway.rate_burst = 100;
    config.gateway.refused_summary_seconds = 5;
    let h = Harness::start_configured(Db::Sqlite, config).await;
    let body = labeled("issues/labeled.payload.json", "run:dev");
    let forged = sign(b"not the secret", &body);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let sends = (0..3000).map(|i| {
        let (h, body, forged) = (&h, &body, &forged);
        async move {
            h.post(
                Some("issues"),
                Some(&format!("flood-{i}")),
                body,
                Some(forged.clone()),
            )
            .await
            .0
        }
    });
    for status in futures::future::join_all(sends).await {
        *statuses.entry(status).or_default() += 1;
    }
    assert_eq!(statuses.values().sum::<usize>(), 3000);
    assert!(
        statuses.get(&401).is_some_and(|&n| n >= 100),
        "{statuses:?}"
    );
    assert!(
        statuses.get(&429).is_some_and(|&n| n > 1000),
        "{statuses:?}"
    );
    assert_eq!(h.store.count_deliveries().await.unwrap(), 0);
    // When the window ends, each kind of refusal is summarised with its count:
    // the first rows plus the summaries account for every request.
    let count_of = |r: &issueops_core::AuditRow| {
        serde_json::from_str::<serde_json::Value>(&r.detail).unwrap()["count"]
            .as_u64()
            .unwrap_or(1)
    };
    let rows = common::wait_for("the refusal summaries", Duration::from_secs(30), || async {
        let rows = h.audit().await;
        let accounted: u64 = rows
            .iter()
            .filter(|r| r.kind == "delivery.rejected")
            .map(count_of)
            .sum();
        (accounted == 3000).then_some(rows)
    })
    .await;
    assert!(
        rows.iter().any(|r| r.outcome == "rejected-summary"),
        "{rows:?}"
    );
    assert!(
        rows.len() <= 6,
        "{} rows for 3,000 forged requests",
        rows.len()
    );
    // The exact numbers are in the metrics (this process's gateway; other
    // tests of this binary may add their own refusals).
    let metrics = issueops_core::metrics::render();
    let counted = |reason: &str| -> u64 {
        let prefix = format!("issueops_refused_requests_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        counted("signature") + counted("rate_limited") >= 3000,
        "{metrics}"
    );
    // A signed delivery from the same source goes through once its rate allows.
    let ok = common::wait_for(
        "the source's rate to recover",
        Duration::from_secs(30),
        || async {
            let (status, _) = h.post_signed("issues", "after-the-flood", &body).await;
            (status == 202).then_some(())
        },
    )
    .await;
    assert_eq!(ok, ());
    h.finish().await;
}

/// GitHub's signed deliveries never spend a source's budget: a burst of them
/// from one address (GitHub's, or an ingress in front of the gateway) is
/// stored whole, even with the strictest limit.
#[tokio::test]
async fn signed_deliveries_are_never_throttled() {
    let mut config = common::test_config();
    config.gateway.rate_per_second = 1;
    config.gateway.rate_burst = 1;
    let h = Harness::start_configured(Db::Sqlite, config).await;
    for i in 0..50 {
        let body = common::labeled_issue("run:dev", 100 + i);
        let (status, text) = h.post_signed("issues", &format!("burst-{i}"), &body).await;
        assert_eq!(status, 202, "delivery {i}: {text}");
    }
    assert_eq!(h.store.count_deliveries().await.unwrap(), 50);
    // Two refusals spend the budget of one: the source is throttled.
    let body = labeled("issues/labeled.payload.json", "run:dev");
    let forged = Some(sign(b"guess", &body));
    assert_eq!(
        h.post(Some("issues"), Some("f1"), &body, forged.clone())
            .await
            .0,
        401
    );
    assert_eq!(
        h.post(Some("issues"), Some("f2"), &body, forged.clone())
            .await
            .0,
        401
    );
    assert_eq!(
        h.post(Some("issues"), Some("f3"), &body, forged).await.0,
        429
    );
    h.finish().await;
}

#[tokio::test]
async fn previous_secret_still_verifies_during_rotation() {
    let h = Harness::start(Db::Sqlite).await;
    let body = labeled("issues/labeled.payload.json", "run:dev");
    let (s, _) = h
        .post(
            Some("issues"),
            Some("rot-1"),
            &body,
            Some(sign(b"previous-secret", &body)),
        )
        .await;
    assert_eq!(s, 202);
    assert_eq!(h.store.count_deliveries().await.unwrap(), 1);
    h.finish().await;
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let h = Harness::start(Db::Sqlite).await;
    let body = vec![b' '; 65 * 1024];
    let (s, _) = refused(
        &h,
        Some("issues"),
        Some("big"),
        &body,
        Some(sign(common::SECRET.as_bytes(), &body)),
    )
    .await;
    assert_eq!(s, 413);
    h.finish().await;
}

#[tokio::test]
async fn bad_bodies_and_missing_headers_get_400() {
    let h = Harness::start(Db::Sqlite).await;
    let signed = |b: &[u8]| Some(sign(common::SECRET.as_bytes(), b));
    let (s, text) = refused(
        &h,
        Some("issues"),
        Some("j1"),
        b"not json",
        signed(b"not json"),
    )
    .await;
    assert_eq!(s, 400);
    assert!(text.contains("not JSON"), "{text}");
    let (s, _) = refused(&h, Some("issues"), Some("j2"), b"[1,2]", signed(b"[1,2]")).await;
    assert_eq!(s, 400);
    // A stray byte inside a string (found by fuzzing): it used to pass and
    // be stored with the byte replaced, not as received.
    let mut stray = labeled("issues/labeled.payload.json", "run:dev");
    let at = stray.windows(10).position(|w| w == b"Codertocat").unwrap() + 4;
    stray.insert(at, 0xEC);
    let (s, text) = refused(&h, Some("issues"), Some("j3"), &stray, signed(&stray)).await;
    assert_eq!(s, 400);
    assert!(text.contains("not UTF-8"), "{text}");
    let bom = [b"\xEF\xBB\xBF".as_slice(), b"{}"].concat();
    let (s, _) = refused(&h, Some("issues"), Some("j4"), &bom, signed(&bom)).await;
    assert_eq!(s, 400, "JSON text has no byte order mark");
    let body = fixture("ping/payload.json");
    let (s, text) = refused(
        &h,
        None,
        Some("h1"),
        body.as_bytes(),
        signed(body.as_bytes()),
    )
    .await;
    assert_eq!(s, 400);
    assert!(text.contains("X-GitHub-Event"), "{text}");
    let (s, text) = refused(
        &h,
        Some("ping"),
        None,
        body.as_bytes(),
        signed(body.as_bytes()),
    )
    .await;
    assert_eq!(s, 400);
    assert!(text.contains("X-GitHub-Delivery"), "{text}");
    let (s, _) = refused(
        &h,
        Some("ping"),
        Some("bad id with spaces"),
        body.as_bytes(),
        signed(body.as_bytes()),
    )
    .await;
    assert_eq!(s, 400);
    h.finish().await;
}

#[tokio::test]
async fn ping_is_answered_and_other_events_are_recorded_and_ignored() {
    let h = Harness::start(Db::Sqlite).await;
    let (s, text) = h
        .post_signed(
            "ping",
            "p1",
            fixture("ping/with-app_id.payload.json").as_bytes(),
        )
        .await;
    assert_eq!(s, 202);
    assert!(text.contains("pong"), "{text}");
    for (event, file, id) in [
        ("issue_comment", "issue_comment/created.payload.json", "c1"),
        ("pull_request", "pull_request/opened.payload.json", "pr1"),
        ("issues", "issues/opened.payload.json", "o1"),
        ("issues", "issues/labeled.payload.json", "l1"), // label "bug": not a trigger
        ("installation", "installation/created.payload.json", "i1"),
    ] {
        let (s, text) = h.post_signed(event, id, fixture(file).as_bytes()).await;
        assert_eq!(s, 202, "{event}: {text}");
    }
    assert_eq!(h.control_plane.process_pending().await.unwrap(), 6);
    let decisions: Vec<_> = h
        .audit()
        .await
        .into_iter()
        .filter(|r| r.kind == "decision")
        .collect();
    assert_eq!(decisions.len(), 6);
    assert!(decisions.iter().all(|r| r.outcome == "ignored"));
    assert!(h.store.list_runs().await.unwrap().is_empty());
    assert!(h.repo.log().unwrap().is_empty());
    h.finish().await;
}

#[tokio::test]
async fn trigger_from_an_unconfigured_repo_is_recorded_and_ignored() {
    let h = Harness::start(Db::Sqlite).await;
    let mut v: serde_json::Value =
        serde_json::from_slice(&labeled("issues/labeled.payload.json", "run:dev")).unwrap();
    v["repository"]["full_name"] = "someone/else".into();
    let body = serde_json::to_vec(&v).unwrap();
    assert_eq!(h.post_signed("issues", "u1", &body).await.0, 202);
    h.control_plane.process_pending().await.unwrap();
    let last = h.audit().await.pop().unwrap();
    assert_eq!(last.outcome, "ignored");
    assert!(last.detail.contains("not configured"), "{}", last.detail);
    assert!(h.repo.log().unwrap().is_empty());
    h.finish().await;
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let h = Harness::start(Db::Sqlite).await;
    for path in ["/healthz", "/readyz"] {
        let resp = h.http.get(format!("{}{path}", h.url)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    h.finish().await;
}

#[tokio::test]
async fn readiness_fails_on_a_database_that_was_never_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        issueops_core::Store::connect(&format!("sqlite://{}", dir.path().join("x.db").display()))
            .await
            .unwrap();
    let app = issueops_gateway::router(issueops_gateway::AppState::new(
        store,
        issueops_gateway::Secrets::new(vec![b"k".to_vec()]).unwrap(),
        Default::default(),
        1024,
        &Default::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let resp = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.text().await.unwrap().contains("issueops migrate"));
    server.abort();
}

/// A TCP proxy to PostgreSQL that can stop passing bytes: the database as a
/// load balancer sees it when the server hangs or the network drops packets.
struct Blackhole {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    async fn to(upstream: String) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let Ok(outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                for (mut from, mut to, cut) in [
                    (
                        Box::new(ri) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(wo) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                        flag.clone(),
                    ),
                    (Box::new(ro), Box::new(wi), flag.clone()),
                ] {
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            // Cut: the bytes go nowhere, the peer waits forever.
                            if cut.load(Ordering::SeqCst) {
                                continue;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Self { addr, cut, task }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// With PostgreSQL unreachable, a webhook and `/readyz` answer 503 within
/// 2 s (GitHub gives up at 10 s; a load balancer must stop routing here).
#[tokio::test]
async fn with_the_database_unreachable_answers_come_within_two_seconds() {
    let pg = common::PgDatabase::create().await;
    let upstream = pg
        .url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_string();
    let proxy = Blackhole::to(upstream.clone()).await;
    let url = pg.url.replace(&upstream, &proxy.addr.to_string());
    let store = issueops_core::Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let state = issueops_gateway::AppState::new(
        store,
        issueops_gateway::Secrets::new(vec![common::SECRET.as_bytes().to_vec()]).unwrap(),
        Default::default(),
        1 << 20,
        &Default::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(issueops_gateway::serve(
        listener,
        state,
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    proxy.cut();
    let body = labeled("issues/labeled.payload.json", "run:dev");
    let started = std::time::Instant::now();
    let resp = http
        .post(format!("{base}/webhooks/github"))
        .header("X-GitHub-Event", "issues")
        .header("X-GitHub-Delivery", "db-down-1")
        .header(
            "X-Hub-Signature-256",
            sign(common::SECRET.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(took < Duration::from_secs(2), "the webhook took {took:?}");
    assert!(resp.text().await.unwrap().contains("did not answer"));
    let started = std::time::Instant::now();
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(ready.status().as_u16(), 503);
    assert!(took < Duration::from_secs(2), "readiness took {took:?}");
    server.abort();
    proxy.task.abort();
    pg.drop_db().await;
}

/// Concurrent deliveries, all through the group-commit writers: every one
/// is stored exactly once with its own audit row naming its inbox row, and a
/// delivery id sent twice at once is stored once and answered "duplicate"
/// the other time. On both databases. (That waiting deliveries share a
/// transaction is proven by `deliveries_waiting_together_share_one_transaction`.)
#[tokio::test]
async fn concurrent_deliveries_are_each_stored_once_with_their_audit_row() {
    for db in [Db::Sqlite, Db::Postgres] {
        let h = std::sync::Arc::new(Harness::start(db).await);
        let mut posts = tokio::task::JoinSet::new();
        for i in 0..48u64 {
            let h = h.clone();
            // Ids 0..40, and eight of them a second time, all at once.
            let id = format!("group-{}", i % 40);
            posts.spawn(async move {
                let body = common::labeled_issue("run:dev", 1 + i % 40);
                let sig = sign(common::SECRET.as_bytes(), &body);
                h.post(Some("issues"), Some(&id), &body, Some(sig)).await
            });
        }
        let answers: Vec<(u16, String)> = posts.join_all().await;
        assert_eq!(h.inbox.stats().deliveries, 48, "all through the writers");
        let stored = answers.iter().filter(|(s, _)| *s == 202).count();
        let duplicates = answers
            .iter()
            .filter(|(s, t)| *s == 200 && t.contains("duplicate"))
            .count();
        assert_eq!((stored, duplicates), (40, 8), "{answers:?}");
        assert_eq!(h.store.count_deliveries().await.unwrap(), 40);
        let rows: Vec<_> = h
            .audit()
            .await
            .into_iter()
            .filter(|r| {
                r.kind == issueops_core::audit::kind::DELIVERY_RECEIVED && r.outcome == "stored"
            })
            .collect();
        assert_eq!(rows.len(), 40);
        let pending = h.store.pending_deliveries(100).await.unwrap();
        for row in &rows {
            let detail: serde_json::Value = serde_json::from_str(&row.detail).unwrap();
            let seq = detail["inbox_seq"].as_i64().unwrap();
            let inbox = pending.iter().find(|d| d.seq == seq).unwrap();
            assert_eq!(Some(&inbox.delivery_id), row.delivery_id.as_ref());
        }
        match std::sync::Arc::try_unwrap(h) {
            Ok(h) => h.finish().await,
            Err(_) => panic!("harness still shared"),
        }
    }
}

/// Deliveries that wait while a transaction is in flight are stored together:
/// with the inbox held by another transaction, 48 deliveries (8 of them a
/// second time) queue up behind the writers (1 on SQLite, 4 on PostgreSQL);
/// once it is released they are stored in at most one transaction per writer
/// plus one, each exactly once. Catches a writer that stores one delivery
/// per transaction (`MAX_GROUP` of 1 in `gateway/src/group_commit.rs`): 48
/// transactions.
#[tokio::test]
async fn deliveries_waiting_together_share_one_transaction() {
    use issueops_core::store::inbox::{Inserted, NewDelivery};
    use issueops_core::store::Backend;
    for db in [Db::Sqlite, Db::Postgres] {
        let dir = tempfile::tempdir().unwrap();
        let (store, pg) = common::store_for(db, dir.path()).await;
        let writers = match store.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => 4,
        };
        // Another connection holds the inbox: no delivery can be written.
        let url = match &pg {
            Some(pg) => pg.url.clone(),
            None => format!("sqlite://{}", dir.path().join("issueops.db").display()),
        };
        let other = issueops_core::Store::connect(&url).await.unwrap();
        let mut holder = other.pool().acquire().await.unwrap();
        let hold: &[&str] = match store.backend() {
            Backend::Sqlite => &["BEGIN IMMEDIATE"],
            Backend::Postgres => &["BEGIN", "LOCK TABLE inbox IN EXCLUSIVE MODE"],
        };
        for sql in hold {
            sqlx::query(sql).execute(&mut *holder).await.unwrap();
        }
        let group = issueops_gateway::group_commit::GroupCommit::start(store.clone());
        let mut stores = tokio::task::JoinSet::new();
        for i in 0..48u64 {
            let group = group.clone();
            stores.spawn(async move {
                group
                    .store(NewDelivery {
                        delivery_id: format!("together-{}", i % 40),
                        event: "issues".into(),
                        action: Some("labeled".into()),
                        repo: Some(common::REPO.into()),
                        sender: Some("Codertocat".into()),
                        payload: "{}".into(),
                    })
                    .await
            });
        }
        common::eventually("every delivery waits for, or is held by, a writer", || {
            let stats = group.stats();
            async move { stats.waiting as u64 + stats.writing == 48 }
        })
        .await;
        assert_eq!(group.stats().transactions, 0, "{:?}", group.stats());
        sqlx::query("COMMIT").execute(&mut *holder).await.unwrap();
        let results: Vec<_> = stores.join_all().await;
        let stored = results
            .iter()
            .filter(|r| matches!(r, Ok(Inserted::Stored { .. })))
            .count();
        let duplicates = results
            .iter()
            .filter(|r| matches!(r, Ok(Inserted::Duplicate)))
            .count();
        assert_eq!((stored, duplicates), (40, 8), "{results:?}");
        let stats = group.stats();
        assert_eq!(stats.deliveries, 48, "{stats:?}");
        assert!(
            stats.transactions <= writers + 1 && stats.largest > 1,
            "{stats:?}"
        );
        assert_eq!(store.count_deliveries().await.unwrap(), 40);
        drop(holder);
        other.pool().close().await;
        store.pool().close().await;
        if let Some(pg) = pg {
            pg.drop_db().await;
        }
    }
}

/// Signed deliveries are verified before any throttle: 200 unsigned
/// requests spend the address's budget (401, then 429), and a correctly
/// signed delivery from the same address right after is stored (202).
#[tokio::test]
async fn a_signed_delivery_after_200_unsigned_ones_from_its_address_is_stored() {
    let h = Harness::start(Db::Sqlite).await;
    let body = labeled("issues/labeled.payload.json", "run:dev");
    let mut statuses = Vec::new();
    for i in 0..200 {
        statuses.push(
            h.post(Some("issues"), Some(&format!("unsigned-{i}")), &body, None)
                .await
                .0,
        );
    }
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "the budget was spent: {statuses:?}"
    );
    let (status, text) = h.post_signed("issues", "signed-after-flood", &body).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(h.store.count_deliveries().await.unwrap(), 1);
    h.finish().await;
}

/// Behind a trusted proxy (`gateway.trusted_proxies`), each client named in
/// `X-Forwarded-For` has its own budget: one client's forgeries throttle it,
/// not the next client behind the same proxy.
#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_budget() {
    let mut config = common::test_config();
    config.gateway.rate_per_second = 1;
    config.gateway.rate_burst = 1;
    config.gateway.trusted_proxies = vec!["127.0.0.0/8".into()];
    let h = Harness::start_configured(Db::Sqlite, config).await;
    let body = labeled("issues/labeled.payload.json", "run:dev");
    let forged = sign(b"guess", &body);
    let post_as = |client: &'static str, delivery: String, signature: String| {
        let (h, body) = (&h, &body);
        async move {
            h.http
                .post(format!("{}/webhooks/github", h.url))
                .header("X-GitHub-Event", "issues")
                .header("X-GitHub-Delivery", delivery)
                .header("X-Hub-Signature-256", signature)
                .header("X-Forwarded-For", client)
                .body(body.clone())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let a: Vec<u16> = futures::future::join_all(
        (0..3).map(|i| post_as("198.51.100.1", format!("a-{i}"), forged.clone())),
    )
    .await;
    assert!(a.contains(&429), "client a is throttled: {a:?}");
    assert_eq!(
        post_as("198.51.100.2", "b-1".into(), forged.clone()).await,
        401,
        "client b has a budget of its own"
    );
    // IPv6 clients count by /64: another address of a's neighbour's /64 is
    // throttled with it once that network spent its budget.
    let v6: Vec<u16> = futures::future::join_all(
        (0..3).map(|i| post_as("2001:db8:7:7::1", format!("v6-{i}"), forged.clone())),
    )
    .await;
    assert!(v6.contains(&429), "{v6:?}");
    assert_eq!(
        post_as("2001:db8:7:7::99", "v6-same-64".into(), forged.clone()).await,
        429
    );
    assert_eq!(
        post_as("2001:db8:7:8::1", "v6-next-64".into(), forged).await,
        401
    );
    h.finish().await;
}

/// A body that fails to read (a broken chunked encoding) with a real-looking
/// delivery id is refused, and its id is only a claim in the audit row: the
/// linking column stays empty, so it cannot show in a real run's timeline.
#[tokio::test]
async fn an_unreadable_unsigned_body_does_not_link_its_claimed_delivery_id() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(Db::Sqlite).await;
    let addr = h.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: issues\r\n\
         X-GitHub-Delivery: claimed-1234\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let rows = h.audit().await;
    assert!(
        rows.iter()
            .all(|r| r.delivery_id.as_deref() != Some("claimed-1234")),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.kind == "delivery.rejected"
            && r.detail
                .contains("\"claimed_delivery_id\":\"claimed-1234\"")),
        "{rows:?}"
    );
    assert_eq!(h.store.count_deliveries().await.unwrap(), 0);
    h.finish().await;
}
