//! The staff JSON API (/api/v1) over real HTTP, on the real API server: it
//! gives the answers the pages give (one view code for both), bearer tokens
//! scoped viewer or approver decide only as their scope allows, refused
//! requests leave no trace, and a session's POST needs its CSRF token.

mod common;

use common::staff_ui_http::{serve_ui, Ui};
use common::{labeled_issue, test_config, Db, Harness};
use issueops_control_plane::render::Templates;
use issueops_control_plane::ControlPlane;
use issueops_core::naming;
use issueops_core::store::api_tokens::{ApiToken, PREFIX};
use serde_json::{json, Value};
use std::sync::Arc;

async fn token(h: &Harness, name: &str, role: &str) -> String {
    let secret = format!("{PREFIX}{name}0123456789abcdef0123456789abcdef");
    let made = h
        .store
        .create_api_token(
            &ApiToken {
                id: format!("id-{name}"),
                name: name.into(),
                role: role.into(),
                created_by: "test".into(),
                created_at: issueops_core::now_ms(),
                expires_at: None,
                revoked_at: None,
            },
            &secret,
        )
        .await
        .unwrap();
    assert!(made);
    secret
}

async fn call(
    ui: &Ui,
    method: reqwest::Method,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", ui.base()));
    if let Some(token) = auth {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text })),
    )
}

async fn started(db: Db) -> (Harness, Ui) {
    let mut config = test_config();
    config.github.trigger_allowlist = vec!["Codertocat".into()];
    let h = Harness::start_configured(db, config).await;
    let cp = ControlPlane::new(
        h.store.clone(),
        h.repo.clone(),
        Arc::new(test_config()),
        Templates::embedded(),
    );
    let ui = serve_ui(&h, cp).await;
    (h, ui)
}

/// The run page and `GET /api/v1/runs/{id}` say the same of a run (state,
/// namespace, commit, every timeline row, the transcript kept), and the
/// runs page lists the runs `GET /api/v1/runs` returns. Catches an API that
/// builds its own view and drifts from the page.
#[tokio::test]
async fn the_api_answers_what_the_pages_show() {
    let (h, ui) = started(Db::Sqlite).await;
    for n in [31, 32] {
        let delivery = format!("api-{n}");
        h.post_signed("issues", &delivery, &labeled_issue("run:dev", n))
            .await;
    }
    h.control_plane.process_pending().await.unwrap();
    h.reconciler.reconcile_once().await.unwrap();
    let run = naming::run_id_for_delivery("api-31");
    let kept = issueops_core::transcript::pack(
        "agent: edited CHANGES.md\nexport GITHUB_TOKEN=ghs_abcdefghijklmnopqrstuvwx\n",
        &[],
        issueops_core::transcript::MAX_BYTES,
    );
    h.store.save_transcript(&run, &kept, 1).await.unwrap();
    let viewer = token(&h, "viewer", "viewer").await;

    let (status, api) = call(
        &ui,
        reqwest::Method::GET,
        &format!("/api/v1/runs/{run}"),
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(status, 200, "{api}");
    let (status, page) = ui.get(&format!("/runs/{run}")).await;
    assert_eq!(status, 200);
    let state = api["run"]["state"].as_str().unwrap();
    assert!(
        page.contains(&format!("id=\"run-state\">{state}<")),
        "{state}: {page}"
    );
    let namespace = api["run"]["namespace"].as_str().unwrap();
    assert_eq!(namespace, naming::namespace_for_issue(common::REPO, 31));
    assert!(page.contains(&format!("<code>{namespace}</code>")));
    let sha = api["commit"]["sha"].as_str().expect("the run's commit");
    assert_eq!(
        Some(sha),
        h.store
            .get_run(&run)
            .await
            .unwrap()
            .unwrap()
            .commit_sha
            .as_deref()
    );
    assert!(page.contains(&sha[..12]), "{page}");
    let timeline = api["timeline"].as_array().unwrap();
    assert!(timeline.len() >= 3, "{timeline:?}");
    assert_eq!(
        page.matches("<tr><td title=").count(),
        timeline.len(),
        "one timeline row per audit row"
    );
    // The resource tree: the namespace, what the reconciler applied into it
    // (the Job among them), the same on the page.
    let objects = api["tree"]["objects"].as_array().unwrap();
    assert!(objects.len() >= 8, "{:?}", api["tree"]);
    assert!(
        objects
            .iter()
            .any(|o| o["kind"] == "Job" && o["name"] == format!("run-{run}")),
        "{:?}",
        api["tree"]
    );
    assert_eq!(api["tree"]["namespace"]["name"], namespace);
    assert_eq!(
        page.matches("<li data-kind=\"").count() - page.matches("<li data-kind=\"Pod\"").count(),
        objects.len(),
        "one tree entry per object"
    );
    let transcript = api["transcript"]["text"].as_str().unwrap();
    assert!(transcript.contains("agent: edited CHANGES.md"));
    assert!(
        !transcript.contains("ghs_abcdefghijklmnopqrstuvwx")
            && !page.contains("ghs_abcdefghijklmnopqrstuvwx")
    );
    assert!(
        page.contains("agent: edited CHANGES.md") && page.contains("GITHUB_TOKEN=[redacted]"),
        "{page}"
    );

    let (status, list) = call(
        &ui,
        reqwest::Method::GET,
        "/api/v1/runs?label=run:dev",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 2);
    let (_, runs_page) = ui.get("/runs?label=run:dev").await;
    for r in list["runs"].as_array().unwrap() {
        let id = r["run_id"].as_str().unwrap();
        assert!(
            runs_page.contains(&format!("data-run='{id}'"))
                || runs_page.contains(&format!("data-run=\"{id}\"")),
            "{id} listed"
        );
    }
    // Bad filters are 400s with the page's words, not 500s.
    let (status, bad) = call(
        &ui,
        reqwest::Method::GET,
        "/api/v1/runs?state=nope&page=-9223372036854775808",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(
        (status, bad["error"].as_str().unwrap()),
        (400, "there is no run state \"nope\"")
    );
    let (status, _) = call(
        &ui,
        reqwest::Method::GET,
        "/api/v1/runs?page=9223372036854775807",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(status, 200, "a page past the end is empty, not an overflow");
    let (status, health) = call(
        &ui,
        reqwest::Method::GET,
        "/api/v1/health",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!((status, health["database"].as_str()), (200, Some("SQLite")));
    // The dashboard: the page draws what the API returns (two runs today,
    // both active: applied, no Job ended).
    let (status, dash) = call(
        &ui,
        reqwest::Method::GET,
        "/api/v1/dashboard",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(status, 200, "{dash}");
    let today = dash["days"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(today["total"], 2, "{dash}");
    let (status, page) = ui.get("/dashboard").await;
    assert_eq!(status, 200, "{page}");
    let drawn: i64 = page
        .split("data-count=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(drawn, 2, "the bars add up to the runs: {page}");
    assert_eq!(dash["label_to_started"]["samples"], 2, "{dash}");
    assert!(page.contains("id=\"label-to-started\""), "{page}");
    assert!(
        page.contains("<svg class=\"chart\" id=\"runs-per-day\""),
        "{page}"
    );
    assert!(page.contains(&format!("data-day=\"{}\"", today["day"].as_str().unwrap())));
    let (status, doc) = call(
        &ui,
        reqwest::Method::GET,
        "/api/v1/openapi.json",
        None,
        None,
    )
    .await;
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.1.0")));
    h.finish().await;
}

/// A viewer token reads but cannot decide; an approver token decides through
/// the same path as the UI's form (the request is approved, audited with the
/// token's name); a revoked, unknown or missing token is refused, and no
/// refused request adds an audit row. A session may use the API too, but
/// its POST needs the CSRF token.
#[tokio::test]
async fn tokens_decide_only_as_their_scope_allows() {
    let (h, ui) = started(Db::Sqlite).await;
    let mut outsider: Value = serde_json::from_slice(&labeled_issue("run:dev", 41)).unwrap();
    outsider["sender"]["login"] = "octocat".into();
    h.post_signed(
        "issues",
        "api-outsider",
        &serde_json::to_vec(&outsider).unwrap(),
    )
    .await;
    h.control_plane.process_pending().await.unwrap();
    let id = h.store.list_approvals().await.unwrap()[0].id.clone();
    let viewer = token(&h, "viewer", "viewer").await;
    let approver = token(&h, "bot", "approver").await;
    let decide = json!({ "decision": "approve", "reason": "in scope" });
    let path = format!("/api/v1/approvals/{id}");
    let marks = h.store.audit_high_water().await.unwrap();

    let (status, refused) = call(
        &ui,
        reqwest::Method::POST,
        &path,
        Some(&viewer),
        Some(decide.clone()),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert!(refused["error"]
        .as_str()
        .unwrap()
        .contains("may read but not decide"));
    for auth in [None, Some("issueops_0000"), Some("not-a-token")] {
        let (status, _) = call(
            &ui,
            reqwest::Method::POST,
            &path,
            auth,
            Some(decide.clone()),
        )
        .await;
        assert_eq!(status, 401, "{auth:?}");
        let (status, _) = call(&ui, reqwest::Method::GET, "/api/v1/runs", auth, None).await;
        assert_eq!(status, 401, "{auth:?}");
    }
    // A session's POST without its CSRF token.
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", ui.base()))
        .header("cookie", ui.cookie())
        .json(&decide)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let (status, bad) = call(
        &ui,
        reqwest::Method::POST,
        &path,
        Some(&approver),
        Some(json!({ "decision": "maybe", "reason": "x" })),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    let (status, bad) = call(
        &ui,
        reqwest::Method::POST,
        &path,
        Some(&approver),
        Some(json!({ "nope": 1 })),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(
        h.store.audit_high_water().await.unwrap(),
        marks,
        "refusals leave no trace"
    );
    assert_eq!(
        h.store.get_approval(&id).await.unwrap().unwrap().state,
        "pending"
    );

    let (status, done) = call(
        &ui,
        reqwest::Method::POST,
        &path,
        Some(&approver),
        Some(decide.clone()),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    let decided = h.store.get_approval(&id).await.unwrap().unwrap();
    assert_eq!(
        (decided.state.as_str(), decided.decided_by.as_deref()),
        ("approved", Some("bot (API token)"))
    );
    let (status, again) = call(
        &ui,
        reqwest::Method::POST,
        &path,
        Some(&approver),
        Some(decide.clone()),
    )
    .await;
    assert_eq!(status, 409, "decided once: {again}");

    assert!(h.store.revoke_api_token("bot").await.unwrap());
    let (status, _) = call(
        &ui,
        reqwest::Method::GET,
        "/api/v1/me",
        Some(&approver),
        None,
    )
    .await;
    assert_eq!(status, 401, "revoked");

    // The session, with its CSRF token: reads, and cancels the run.
    h.control_plane.process_pending().await.unwrap();
    let run = naming::run_id_for_delivery("api-outsider");
    let csrf = ui.csrf("/runs").await;
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/runs/{run}/cancel", ui.base()))
        .header("cookie", ui.cookie())
        .header("x-csrf-token", csrf)
        .json(&json!({ "reason": "wrong issue" }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 200, "{}", resp.text().await.unwrap());
    assert_eq!(
        h.store.get_run(&run).await.unwrap().unwrap().state,
        "cancelled"
    );
    h.finish().await;
}

/// A dead letter put back in line through the API, by the control plane's
/// path (as `issueops deliveries retry`): the approver's reason in its audit
/// row; a delivery that is no dead letter is a 409, a viewer a 403.
#[tokio::test]
async fn a_dead_letter_is_retried_through_the_api() {
    let (h, ui) = started(Db::Sqlite).await;
    h.post_signed("issues", "api-dead", &labeled_issue("run:dev", 51))
        .await;
    let seq = h.store.pending_deliveries(10).await.unwrap()[0].seq;
    h.store
        .fail_delivery(seq, "GitHub refuses for good", None)
        .await
        .unwrap();
    assert_eq!(h.store.dead_deliveries().await.unwrap().len(), 1);
    let viewer = token(&h, "viewer", "viewer").await;
    let approver = token(&h, "ops", "approver").await;
    let body = json!({ "reason": "the App is installed now" });
    let (status, _) = call(
        &ui,
        reqwest::Method::POST,
        "/api/v1/deliveries/api-dead/retry",
        Some(&viewer),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let (status, refused) = call(
        &ui,
        reqwest::Method::POST,
        "/api/v1/deliveries/nope/retry",
        Some(&approver),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    let (status, done) = call(
        &ui,
        reqwest::Method::POST,
        "/api/v1/deliveries/api-dead/retry",
        Some(&approver),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert!(h.store.dead_deliveries().await.unwrap().is_empty());
    let row = h
        .store
        .last_audit_of_kind(issueops_core::audit::kind::DELIVERY_RETRY)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.actor.as_deref(), Some("ops (API token)"));
    assert!(
        row.detail.contains("the App is installed now"),
        "{}",
        row.detail
    );
    h.finish().await;
}
