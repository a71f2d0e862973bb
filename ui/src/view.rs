//! The template environment: the page templates (HTML, auto-escaped) and
//! the filters they use for times, durations and shas.

use minijinja::{Environment, Value};

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("signin.html", include_str!("../templates/signin.html")),
    ("message.html", include_str!("../templates/message.html")),
    ("runs.html", include_str!("../templates/runs.html")),
    ("run.html", include_str!("../templates/run.html")),
    ("issue.html", include_str!("../templates/issue.html")),
    (
        "approvals.html",
        include_str!("../templates/approvals.html"),
    ),
    (
        "proposals.html",
        include_str!("../templates/proposals.html"),
    ),
    ("audit.html", include_str!("../templates/audit.html")),
    (
        "deliveries.html",
        include_str!("../templates/deliveries.html"),
    ),
    ("health.html", include_str!("../templates/health.html")),
    (
        "dashboard.html",
        include_str!("../templates/dashboard.html"),
    ),
];

/// Every page template, with `.html` auto-escaping (an issue title full of
/// markup renders as text).
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        if let Err(e) = env.add_template(name, source) {
            // The templates are compiled into the binary and covered by
            // tests; a broken one is a build defect, found at start-up.
            panic!("UI template {name} does not parse: {e}");
        }
    }
    env.add_filter("time", time);
    env.add_filter("ago", ago);
    env.add_filter("duration", duration);
    env.add_filter("short", short);
    env.add_filter("facts", facts);
    env
}

/// `2026-11-26 09:58:40 UTC`
pub fn time(ms: Option<i64>) -> String {
    ms.and_then(|ms| k8s_openapi::jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A JSON object recorded in an audit detail as words: `applied 10 · failed 0`
/// (keys with underscores read as spaces, nested values compactly); any
/// other text as it is.
pub fn facts(detail: Option<String>) -> String {
    let Some(detail) = detail else {
        return "-".into();
    };
    match serde_json::from_str::<serde_json::Value>(&detail) {
        Ok(serde_json::Value::Object(map)) if !map.is_empty() => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| {
                let value = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(items) if items.is_empty() => "none".into(),
                    other => other.to_string(),
                };
                format!("{} {value}", k.replace('_', " "))
            })
            .collect::<Vec<_>>()
            .join(" · "),
        Ok(serde_json::Value::Object(_)) => "-".into(),
        _ => detail,
    }
}

/// `3m ago`, from a time in ms and now in ms.
fn ago(ms: Option<i64>, now: i64) -> String {
    match ms {
        Some(ms) => format!("{} ago", human((now - ms).max(0))),
        None => "-".into(),
    }
}

/// A span in ms as `1h 2m`, `3m 4s`, `5s`.
fn duration(ms: Option<i64>) -> String {
    ms.map(|ms| human(ms.max(0))).unwrap_or_else(|| "-".into())
}

fn human(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The first 12 characters of a sha.
fn short(v: Value) -> String {
    match v.as_str() {
        Some(s) => s.chars().take(12).collect(),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_escape() {
        let env = environment();
        let page = env.get_template("message.html").expect("message page");
        let html = page
            .render(minijinja::context! { title => "t", message => "<script>alert(1)</script>", now => 0 })
            .expect("render");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>alert(1)"));
    }

    #[test]
    fn spans_read_like_people_write_them() {
        assert_eq!(human(4_000), "4s");
        assert_eq!(human(184_000), "3m 4s");
        assert_eq!(human(3_720_000), "1h 2m");
        assert_eq!(human(90_000_000), "1d 1h");
        assert_eq!(time(Some(0)), "1970-01-01 00:00:00 UTC");
    }
}

#[cfg(test)]
mod facts_tests {
    #[test]
    fn details_read_as_words() {
        assert_eq!(
            super::facts(Some(
                r#"{"applied":10,"failed":0,"dropped_files":[],"head":"abc","x":null}"#.into()
            )),
            "applied 10 · dropped files none · failed 0 · head abc"
        );
        assert_eq!(super::facts(Some("plain text".into())), "plain text");
        assert_eq!(super::facts(None), "-");
    }
}
