//! The staff UI in a real browser: headless Chromium (Debian's package,
//! driven by WebDriver) against a real `issueops serve` on the stand-in
//! cluster with simulated Jobs. Screenshots of every page land in
//! `target/ui-screenshots/`.

mod common;

use common::browser::{Browser, Serve};
use fantoccini::Locator;

/// Simulated Jobs end after 2 s; finished runs are pruned 3 s later.
const CONFIG: &str = "standin:\n  job_seconds: 2\n  run_retention_seconds: 3\n";

const NASTY_TITLE: &str =
    "<script>document.title='owned'</script><img src=x onerror=alert(1)><b>bold</b>";

/// Types `reason` into a pending request's form and clicks Approve.
async fn approve_with(request: &fantoccini::elements::Element, reason: &str) {
    request
        .find(Locator::Css("input[name=reason]"))
        .await
        .unwrap()
        .send_keys(reason)
        .await
        .unwrap();
    request
        .find(Locator::Css("button[value=approve]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Records, in the page itself, each text `#run-state` shows: a reload would
/// lose the record, so what it holds was seen live, in order.
const RECORD_STATES: &str = r##"
    window.seenStates = [];
    const note = () => {
        const el = document.querySelector("#run-state");
        const text = el ? el.textContent.trim() : "";
        if (text && window.seenStates[window.seenStates.length - 1] !== text) {
            window.seenStates.push(text);
        }
    };
    note();
    new MutationObserver(note).observe(document.body, { subtree: true, childList: true, characterData: true });
"##;

/// Signs in, then watches one run on its page move through every state by
/// live updates alone (one document from accepted to pruned). Each state
/// that would pass in milliseconds is held where a real fault would hold it:
/// the state repo's branch locked (`refs/heads/main.lock`; the commit fails,
/// the run stays accepted and the delivery is retried), then the reconciler's
/// turn taken (the run stays committed), then both let go. Before, the page
/// was first looked at once the run had succeeded, so a page that shows a
/// commit or a state only as served passed. Catches the run page's commit
/// section outside the live parts (`data-live` dropped from
/// `<div data-live id="live-commit">` in `ui/templates/run.html`, as it was
/// until this test found it): the diff never appears on a page opened
/// before the commit.
#[tokio::test]
async fn sign_in_then_watch_a_run_live_from_accepted_to_pruned() {
    let serve = Serve::start(CONFIG).await;
    let b = Browser::start().await;
    let c = &b.client;

    // No session: every page sends you to sign in.
    c.goto(&format!("{}/runs?state=running", serve.ui))
        .await
        .unwrap();
    assert_eq!(b.path().await, "/signin");
    b.wait_text("main", "one-time sign-in link").await;
    b.screenshot("signin").await;

    // The printed link signs in once and lands on the runs page.
    c.goto(&serve.link).await.unwrap();
    assert_eq!(b.path().await, "/runs");
    assert!(b.text("header .who").await.contains("staff-tester"));
    b.wait_text("#count", "0 runs").await;

    // Hold the run where it would not stay on its own: the branch's lock
    // file makes the commit fail; the reconciler's turn keeps it unapplied.
    let ref_lock = serve.dir.path().join("state.git/refs/heads/main.lock");
    std::fs::write(&ref_lock, "").unwrap();
    let store = issueops_core::Store::connect(&format!(
        "sqlite://{}",
        serve.dir.path().join("issueops.db").display()
    ))
    .await
    .unwrap();
    let reconciler_turn = store
        .exclusive(
            issueops_reconciler::WRITER_ROLE,
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();

    // A run whose issue title is full of markup: it shows as text.
    assert_eq!(
        serve.send("ui-live-1", "Codertocat", 7, NASTY_TITLE).await,
        202
    );
    let row = b
        .wait_text("tr[data-run]", "Codertocat/Hello-World#7")
        .await;
    assert!(row.contains(NASTY_TITLE), "title shown as text: {row}");
    assert_eq!(c.title().await.unwrap(), "Runs · issueops", "no script ran");
    assert!(
        c.find_all(Locator::Css(
            "span.title b, span.title img, span.title script"
        ))
        .await
        .unwrap()
        .is_empty(),
        "markup from the title became elements"
    );

    // Open the run and watch it live: the page is not reloaded by us, the
    // server-sent events swap in each state.
    let run_id = c
        .find(Locator::Css("tr[data-run]"))
        .await
        .unwrap()
        .attr("data-run")
        .await
        .unwrap()
        .expect("a run id");
    c.find(Locator::LinkText(&run_id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_url(&format!("/runs/{run_id}")).await;
    b.wait_text("#run-state", "accepted").await;
    c.execute(RECORD_STATES, vec![]).await.unwrap();
    // The commit goes through once the branch is free again.
    std::fs::remove_file(&ref_lock).unwrap();
    b.wait_text("#run-state", "committed").await;
    b.wait_text("#diff", "kind: Job").await;
    // The reconciler applies it once it has its turn back.
    drop(reconciler_turn);
    b.wait_text("#job", "run-").await;
    b.wait_text("#run-state", "succeeded").await;
    b.wait_text("#simulated", "simulated").await;
    b.wait_text("#reason", "simulated").await;
    b.wait_text("#job", "Complete=True").await;
    b.screenshot("run").await;
    b.wait_text("#run-state", "pruned").await;
    let refreshed = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .attr("data-refreshed")
        .await
        .unwrap();
    assert!(refreshed.is_some(), "the state arrived by live update");
    let seen: Vec<String> = serde_json::from_value(
        c.execute("return window.seenStates;", vec![])
            .await
            .unwrap(),
    )
    .expect("the record survived: the page was never reloaded");
    let mut wanted = ["accepted", "committed", "running", "succeeded", "pruned"].into_iter();
    let mut next = wanted.next();
    for text in &seen {
        if next.is_some_and(|w| text.contains(w)) {
            next = wanted.next();
        }
    }
    assert!(
        next.is_none(),
        "the page showed {seen:?}, never {next:?} after them"
    );
    store.pool().close().await;
    let timeline = b.text("table.timeline").await;
    for step in [
        "delivery.received",
        "commit",
        "apply",
        "running",
        "succeeded",
        "prune-run",
        "deleted",
    ] {
        assert!(timeline.contains(step), "timeline lacks {step}: {timeline}");
    }

    // Filter the list: pruned runs of mode dev, and a filter that matches nothing.
    c.goto(&format!("{}/runs", serve.ui)).await.unwrap();
    c.find(Locator::Css("select[name=state]"))
        .await
        .unwrap()
        .select_by_value("pruned")
        .await
        .unwrap();
    b.click("form.filters button").await;
    b.wait_url("state=pruned").await;
    b.wait_text("#count", "1 run").await;
    b.screenshot("runs").await;
    c.goto(&format!("{}/runs?state=failed", serve.ui))
        .await
        .unwrap();
    b.wait_text("#count", "0 runs").await;
    c.goto(&format!("{}/runs?state=bogus", serve.ui))
        .await
        .unwrap();
    b.wait_text("main", "there is no run state").await;

    // The issue page lists its runs and its namespace.
    c.goto(&format!("{}/issues/Codertocat/Hello-World/7", serve.ui))
        .await
        .unwrap();
    b.wait_text("main", &run_id).await;
    b.screenshot("issue").await;

    for (page, heading) in [("health", "Health"), ("deliveries", "Deliveries")] {
        c.goto(&format!("{}/{page}", serve.ui)).await.unwrap();
        b.wait_text("h1", heading).await;
        b.screenshot(page).await;
    }
    b.wait_text("#deliveries", "ui-live-1").await;
    c.goto(&format!("{}/health", serve.ui)).await.unwrap();
    b.wait_text("#prune-guard", "not tripped").await;
    b.wait_text("#last-cycle", "converged").await;

    // The running serve saved its stand-in in the data dir: the issue's
    // namespace is there (the run's Job is pruned), for `plan` and
    // `reconcile` in another process.
    let saved_file = serve.dir.path().join("standin-cluster.json");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&saved_file).unwrap()).unwrap();
    let names: Vec<String> = saved["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("Namespace/codertocat-hello-world-7-")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("Job/")), "{names:?}");
    assert!(saved["key"].as_str().unwrap().starts_with("in-memory-"));

    // The link worked once: a second browser with it is refused.
    let other = Browser::start().await;
    other.client.goto(&serve.link).await.unwrap();
    other.wait_text("main", "not valid").await;
    other
        .client
        .goto(&format!("{}/runs", serve.ui))
        .await
        .unwrap();
    assert_eq!(other.path().await, "/signin");
}

#[tokio::test]
async fn approve_in_the_browser_with_a_reason_and_find_the_audit_row() {
    let serve = Serve::start(CONFIG).await;
    let b = Browser::start().await;
    let c = &b.client;
    c.goto(&serve.link).await.unwrap();
    assert_eq!(b.path().await, "/runs");

    // octocat is not on the allowlist: the trigger waits for an approver.
    assert_eq!(
        serve
            .send("ui-approve-1", "octocat", 9, "Fix the thing")
            .await,
        202
    );
    c.goto(&format!("{}/approvals", serve.ui)).await.unwrap();
    let request = b.reload_until("section.request").await;
    let text = request.text().await.unwrap();
    assert!(text.contains("octocat") && text.contains("#9"), "{text}");
    b.screenshot("approvals").await;

    approve_with(&request, "known contributor, issue is in scope").await;
    b.wait_text("#decided", "approved").await;
    b.wait_text("#decided", "staff-tester").await;
    b.wait_text("#history", "known contributor, issue is in scope")
        .await;
    b.wait_text("#none-pending", "Nothing waits").await;

    // The audit trail has the decision, with who and why.
    c.goto(&format!("{}/audit?kind=approval", serve.ui))
        .await
        .unwrap();
    let audit = b.wait_text("#audit tbody", "approved").await;
    assert!(audit.contains("staff-tester"), "{audit}");
    assert!(
        audit.contains("known contributor, issue is in scope"),
        "{audit}"
    );
    b.screenshot("audit").await;

    // The export is JSON lines of the same rows.
    let export = c
        .execute_async(
            "const done = arguments[0]; fetch('/audit.jsonl?kind=approval').then(r => r.text()).then(done);",
            vec![],
        )
        .await
        .unwrap();
    let export = export.as_str().unwrap().to_string();
    let rows: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{export}");
    assert_eq!(rows[0]["actor"], "staff-tester");

    // The approved run starts.
    c.goto(&format!("{}/runs", serve.ui)).await.unwrap();
    b.wait_text("tr[data-run]", "Codertocat/Hello-World#9")
        .await;
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused_and_changes_nothing() {
    let serve = Serve::start(CONFIG).await;
    let b = Browser::start().await;
    let c = &b.client;
    c.goto(&serve.link).await.unwrap();
    assert_eq!(
        serve
            .send("ui-csrf-1", "octocat", 11, "Needs approval")
            .await,
        202
    );
    c.goto(&format!("{}/approvals", serve.ui)).await.unwrap();
    let request = b.reload_until("section.request").await;
    // A forged form: the same fields, without the session's token.
    c.execute(
        "document.querySelectorAll('input[name=csrf]').forEach(e => e.remove());",
        vec![],
    )
    .await
    .unwrap();
    approve_with(&request, "forged").await;
    b.wait_text("#message", "CSRF").await;
    c.goto(&format!("{}/approvals", serve.ui)).await.unwrap();
    b.wait_text("section.request", "octocat").await;
    b.wait_text("#history", "No decisions yet").await;
    c.goto(&format!("{}/audit?kind=approval", serve.ui))
        .await
        .unwrap();
    b.wait_text("#audit tbody", "No audit rows match").await;
}

/// GitHub's side of the sign-in: the authorize page sends the browser
/// straight back with a code naming whoever `signs_in` holds; the token
/// endpoint checks the client secret; `/user` and `/user/orgs` answer for
/// that token.
struct FakeGitHubSignIn {
    signs_in: std::sync::Arc<std::sync::Mutex<String>>,
}

impl wiremock::Respond for FakeGitHubSignIn {
    fn respond(&self, req: &wiremock::Request) -> wiremock::ResponseTemplate {
        use wiremock::ResponseTemplate;
        let query = |key: &str| {
            req.url
                .query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        };
        let token_login = || {
            req.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer gho_"))
                .map(str::to_string)
        };
        match req.url.path() {
            "/login/oauth/authorize" => {
                assert_eq!(query("client_id"), "Iv1.test");
                assert_eq!(query("scope"), "read:org");
                let login = self.signs_in.lock().unwrap().clone();
                let back = format!(
                    "{}?code=code-{login}&state={}",
                    query("redirect_uri"),
                    query("state")
                );
                ResponseTemplate::new(302).insert_header("Location", back.as_str())
            }
            "/login/oauth/access_token" => {
                let form: std::collections::HashMap<String, String> =
                    url_form(&String::from_utf8_lossy(&req.body));
                if form.get("client_secret").map(String::as_str) != Some("oauth-client-secret") {
                    return ResponseTemplate::new(200).set_body_json(
                        serde_json::json!({ "error": "incorrect_client_credentials" }),
                    );
                }
                let login = form["code"].trim_start_matches("code-").to_string();
                ResponseTemplate::new(200).set_body_json(
                    serde_json::json!({ "access_token": format!("gho_{login}"), "token_type": "bearer" }),
                )
            }
            "/user" => match token_login() {
                Some(login) => ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({ "login": login, "id": 1 })),
                None => ResponseTemplate::new(401),
            },
            "/user/orgs" => match token_login().as_deref() {
                Some("ann") => ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!([{ "login": "acme", "id": 2 }])),
                Some(_) => ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!([{ "login": "evil-corp", "id": 3 }])),
                None => ResponseTemplate::new(401),
            },
            _ => ResponseTemplate::new(404),
        }
    }
}

fn url_form(body: &str) -> std::collections::HashMap<String, String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .to_string()
            };
            (decode(k), decode(v))
        })
        .collect()
}

#[tokio::test]
async fn github_sign_in_gives_configured_people_their_role_and_refuses_others() {
    let github = wiremock::MockServer::start().await;
    let signs_in = std::sync::Arc::new(std::sync::Mutex::new("ann".to_string()));
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(FakeGitHubSignIn {
            signs_in: signs_in.clone(),
        })
        .mount(&github)
        .await;
    let config = format!(
        "{CONFIG}github:\n  api_url: {url}\nui:\n  github_oauth:\n    client_id: Iv1.test\n    \
         authorize_url: {url}/login/oauth/authorize\n    token_url: {url}/login/oauth/access_token\n  \
         viewers: {{ orgs: [acme] }}\n  approvers: {{ users: [boss] }}\n",
        url = github.uri()
    );
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "oauth-client-secret\n").unwrap();
    let serve = Serve::start_with(
        &config,
        &[(
            "ISSUEOPS_UI_OAUTH_CLIENT_SECRET_FILE",
            secret.path().display().to_string(),
        )],
    )
    .await;
    assert!(
        serve.link.is_empty(),
        "no loopback link with GitHub sign-in"
    );
    let b = Browser::start().await;
    let c = &b.client;

    // A member of a viewer org signs in and lands where she was going.
    c.goto(&format!("{}/approvals", serve.ui)).await.unwrap();
    assert_eq!(b.path().await, "/signin");
    b.click("#github-signin").await;
    b.wait_text("header .who", "ann").await;
    assert!(b.text("header .who").await.contains("viewer"));
    assert_eq!(b.path().await, "/approvals");
    c.goto(&format!("{}/audit?kind=ui.signin", serve.ui))
        .await
        .unwrap();
    b.wait_text("#audit tbody", "ann").await;

    // Signing out ends the session.
    b.click("header .who button").await;
    b.wait_url("/signin").await;
    c.goto(&format!("{}/runs", serve.ui)).await.unwrap();
    assert_eq!(b.path().await, "/signin");

    // Someone in no configured org, team or list is refused.
    *signs_in.lock().unwrap() = "eve".into();
    b.click("#github-signin").await;
    b.wait_text("#message", "eve is not allowed here").await;
    c.goto(&format!("{}/runs", serve.ui)).await.unwrap();
    assert_eq!(b.path().await, "/signin");

    // A callback that did not start here (forged state) is refused.
    c.goto(&format!(
        "{}/signin/github/callback?code=code-boss&state=forged",
        serve.ui
    ))
    .await
    .unwrap();
    b.wait_text("#message", "state mismatch").await;

    // A configured approver gets the approver role.
    *signs_in.lock().unwrap() = "boss".into();
    c.goto(&format!("{}/signin", serve.ui)).await.unwrap();
    b.click("#github-signin").await;
    b.wait_text("header .who", "boss").await;
    assert!(b.text("header .who").await.contains("approver"));
}

/// Sessions live on the server: signing out ends the session for every
/// copy of its cookie, and `issueops sessions revoke` ends one at its next
/// request. Over plain HTTP against the real `issueops serve`.
#[tokio::test]
async fn sign_out_and_revoke_end_sessions_for_every_copy_of_the_cookie() {
    let serve = Serve::start(CONFIG).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // A sign-in link's answer: a session cookie.
    let sign_in = |link: String| {
        let http = &http;
        async move {
            let signed_in = http.get(&link).send().await.unwrap();
            assert_eq!(signed_in.status().as_u16(), 303, "{signed_in:?}");
            signed_in
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find(|c| c.starts_with("issueops_session="))
                .and_then(|c| c.split(';').next())
                .expect("a session cookie")
                .to_string()
        }
    };
    let cookie = sign_in(serve.link.clone()).await;
    let page = |cookie: String| {
        let (http, ui) = (&http, &serve.ui);
        async move {
            let answer = http
                .get(format!("{ui}/runs"))
                .header("Cookie", cookie)
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            (status, answer.text().await.unwrap())
        }
    };
    let (status, body) = page(cookie.clone()).await;
    assert_eq!(status, 200, "{body}");
    let cli = |args: &[&str]| {
        let (ok, out, err) = common::run_issueops(serve.dir.path(), args);
        (ok, out + &err)
    };
    let (ok, listed) = cli(&["sessions"]);
    assert!(
        ok && listed.contains("staff-tester") && listed.contains("approver"),
        "{listed}"
    );

    // Sign out with the page's CSRF token; a copy of the cookie kept aside.
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sign-out form's token")
        .to_string();
    let copy = cookie.clone();
    let out = http
        .post(format!("{}/signout", serve.ui))
        .header("Cookie", cookie)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status().as_u16(), 303);
    let (status, _) = page(copy).await;
    assert_eq!(status, 303, "a copy of a signed-out cookie still let in");
    let (_, listed) = cli(&["sessions"]);
    assert!(listed.contains("no live staff UI sessions"), "{listed}");

    // A second session, ended by an operator.
    let (ok, _) = cli(&["sessions", "revoke", "--all"]);
    assert!(!ok, "nothing to revoke is an error");
    let link = reqwest::get(format!("{}/signin", serve.ui)).await.unwrap();
    assert!(link.status().is_success());
    let fresh = std::fs::read_to_string(serve.dir.path().join("serve.log"))
        .unwrap()
        .lines()
        .rev()
        .find_map(|l| l.split_once("sign-in link (one-time): "))
        .and_then(|(_, l)| l.split(['\u{1b}', ' ']).next())
        .map(|l| l.trim().to_string())
        .expect("a fresh link in the log");
    let cookie = sign_in(fresh).await;
    assert_eq!(page(cookie.clone()).await.0, 200);
    let (ok, said) = cli(&[
        "sessions",
        "revoke",
        "--login",
        "staff-tester",
        "--actor",
        "ops",
    ]);
    assert!(ok, "{said}");
    assert_eq!(page(cookie).await.0, 303, "a revoked session still let in");
}
