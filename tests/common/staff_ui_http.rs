//! The staff UI served over a harness's store, repo and cluster on
//! loopback, signed in through its one-time link, spoken to over HTTP.

use super::{test_config, Harness};
use issueops_control_plane::ControlPlane;

/// The staff UI over the harness's store, repo and cluster, on loopback,
/// with a signed-in session.
pub struct Ui {
    base: String,
    cookie: String,
    http: reqwest::Client,
}

impl Ui {
    /// Where the UI (and its API, under /api/v1) answers.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The signed-in session's cookie header value.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

pub async fn serve_ui(h: &Harness, control_plane: ControlPlane) -> Ui {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = std::sync::Arc::new(test_config());
    let state = issueops_ui::AppState::new(issueops_ui::UiParts {
        store: h.store.clone(),
        repo: h.repo.clone(),
        control_plane,
        config,
        cluster: h.client.clone(),
        cluster_description: "test".into(),
        simulated: false,
        state_key: "default".into(),
        public_url: base.clone(),
        cookie_key: issueops_ui::session::cookie_key(None).unwrap(),
        github_sign_in: None,
        local_login: "ann".into(),
    });
    let link = state.sign_in_link().unwrap();
    tokio::spawn(issueops_ui::serve(listener, state, std::future::pending()));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(&link).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    Ui { base, cookie, http }
}

impl Ui {
    /// The session's CSRF token, as the form on `page` carries it.
    pub async fn csrf(&self, page: &str) -> String {
        let (_, html) = self.get(page).await;
        html.split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the page has a form with its CSRF token")
            .to_string()
    }

    /// Posts `fields` to the form at `action` with the CSRF token of the
    /// page at `page`; the status and the `location` it answered.
    pub async fn post_form(
        &self,
        page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> (u16, String) {
        let csrf = self.csrf(page).await;
        let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf)];
        form.extend_from_slice(fields);
        let resp = self
            .http
            .post(format!("{}{action}", self.base))
            .header("cookie", &self.cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (resp.status().as_u16(), location)
    }
}
