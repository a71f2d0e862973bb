//! Rendering of the per-issue and per-run manifests from `manifests-templates/`.
//!
//! Invariants: user-controlled strings reach YAML only as serialised values
//! (minijinja's JSON auto-escaping; JSON is YAML), every rendered file holds
//! exactly one object, and the output is canonical: the same input gives
//! byte-identical files.

use issueops_core::{Config, INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Templates shipped in the binary, used unless `--templates-dir` says otherwise.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "issue/namespace.yaml",
        include_str!("../../manifests-templates/issue/namespace.yaml"),
    ),
    (
        "issue/serviceaccount.yaml",
        include_str!("../../manifests-templates/issue/serviceaccount.yaml"),
    ),
    (
        "issue/role.yaml",
        include_str!("../../manifests-templates/issue/role.yaml"),
    ),
    (
        "issue/rolebinding.yaml",
        include_str!("../../manifests-templates/issue/rolebinding.yaml"),
    ),
    (
        "issue/resourcequota.yaml",
        include_str!("../../manifests-templates/issue/resourcequota.yaml"),
    ),
    (
        "issue/limitrange.yaml",
        include_str!("../../manifests-templates/issue/limitrange.yaml"),
    ),
    (
        "issue/networkpolicy.yaml",
        include_str!("../../manifests-templates/issue/networkpolicy.yaml"),
    ),
    (
        "issue/agent-home.yaml",
        include_str!("../../manifests-templates/issue/agent-home.yaml"),
    ),
    (
        "run/job.yaml",
        include_str!("../../manifests-templates/run/job.yaml"),
    ),
    (
        "run/prompt.yaml",
        include_str!("../../manifests-templates/run/prompt.yaml"),
    ),
];

/// The agent's prompt templates, one per run mode: data for `run/prompt.yaml`,
/// not manifests. A templates dir without its own keeps these.
const EMBEDDED_PROMPTS: &[(&str, &str)] = &[
    (
        "dev",
        include_str!("../../manifests-templates/prompts/dev.md"),
    ),
    (
        "revise",
        include_str!("../../manifests-templates/prompts/revise.md"),
    ),
];

/// Labels that identify which issue and run an object belongs to.
pub const ISSUE_LABEL: &str = "issueops.dev/issue";
pub const SCOPE_LABEL: &str = "issueops.dev/scope";
pub const RUN_LABEL: &str = "issueops.dev/run-id";
/// Longest title kept in annotations; the issue itself holds the rest.
const MAX_TITLE_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read templates from {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("template {name} is not valid: {source}")]
    Template {
        name: String,
        source: minijinja::Error,
    },
    #[error("template {name} did not render one Kubernetes object: {reason}")]
    Output { name: String, reason: String },
    #[error("no templates found under {0}: expected issue/*.yaml and run/*.yaml")]
    Empty(String),
    #[error("no prompt template for {0} runs: add prompts/{0}.md to the templates")]
    NoPrompt(String),
}

/// The loaded templates, by relative name (`issue/namespace.yaml`).
#[derive(Debug, Clone)]
pub struct Templates {
    sources: BTreeMap<String, String>,
    /// Prompt templates by run mode (`dev`, `revise`).
    prompts: BTreeMap<String, String>,
}

/// Everything a rendering depends on.
#[derive(Debug, Clone, Serialize)]
pub struct IssueContext {
    pub repo: String,
    pub issue_number: u64,
    pub title: String,
    pub namespace: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunContext {
    pub id: String,
    pub mode: String,
    pub branch: String,
    /// The pull request a revision run continues (its number).
    pub pull_request: Option<String>,
    /// The agent's model and reasoning level (labels, else the config's defaults).
    pub model: String,
    pub reasoning: String,
}

/// One rendered file: its path in the state repo and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: String,
    pub content: String,
}

impl Templates {
    pub fn embedded() -> Self {
        let owned = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect()
        };
        Self {
            sources: owned(EMBEDDED),
            prompts: owned(EMBEDDED_PROMPTS),
        }
    }

    /// The prompt template of `mode`.
    pub fn prompt(&self, mode: &str) -> Option<&str> {
        self.prompts.get(mode).map(String::as_str)
    }

    /// Loads `issue/*.yaml` and `run/*.yaml` from a directory.
    pub fn from_dir(dir: &Path) -> Result<Self, RenderError> {
        let mut sources = BTreeMap::new();
        for group in ["issue", "run"] {
            let sub = dir.join(group);
            let read_err = |source| RenderError::Read {
                path: sub.display().to_string(),
                source,
            };
            for entry in std::fs::read_dir(&sub).map_err(read_err)? {
                let path = entry.map_err(read_err)?.path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    let name = format!(
                        "{group}/{}",
                        path.file_name().unwrap_or_default().to_string_lossy()
                    );
                    let text =
                        std::fs::read_to_string(&path).map_err(|source| RenderError::Read {
                            path: path.display().to_string(),
                            source,
                        })?;
                    sources.insert(name, text);
                }
            }
        }
        if sources.is_empty() {
            return Err(RenderError::Empty(dir.display().to_string()));
        }
        let mut prompts: BTreeMap<String, String> = Self::embedded().prompts;
        let prompt_dir = dir.join("prompts");
        for (mode, _) in EMBEDDED_PROMPTS {
            let path = prompt_dir.join(format!("{mode}.md"));
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    prompts.insert(mode.to_string(), text);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(RenderError::Read {
                        path: path.display().to_string(),
                        source,
                    })
                }
            }
        }
        Ok(Self { sources, prompts })
    }

    fn env(&self) -> Result<Environment<'_>, RenderError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::Json);
        for (name, src) in &self.sources {
            env.add_template(name, src)
                .map_err(|source| RenderError::Template {
                    name: name.clone(),
                    source,
                })?;
        }
        Ok(env)
    }

    /// Renders the issue's objects and, when `run` is given, that run's objects.
    pub fn render(
        &self,
        config: &Config,
        issue: &IssueContext,
        run: Option<&RunContext>,
    ) -> Result<Vec<RenderedFile>, RenderError> {
        let env = self.env()?;
        let issue_dir = issueops_core::state_repo::issue_dir(&issue.namespace);
        let labels = BTreeMap::from([
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
            (INSTANCE_LABEL.to_string(), config.instance.clone()),
            (ISSUE_LABEL.to_string(), issue.issue_number.to_string()),
            (SCOPE_LABEL.to_string(), issue.namespace.clone()),
        ]);
        let annotations = BTreeMap::from([
            ("issueops.dev/repo".to_string(), issue.repo.clone()),
            (
                "issueops.dev/issue-number".to_string(),
                issue.issue_number.to_string(),
            ),
            (
                "issueops.dev/issue-title".to_string(),
                issue.title.chars().take(MAX_TITLE_CHARS).collect(),
            ),
        ]);
        let run_value = match run {
            Some(r) => {
                let mut run_labels = labels.clone();
                run_labels.insert(RUN_LABEL.to_string(), r.id.clone());
                let command = match r.mode.as_str() {
                    "revise" => &config.agent.command_revise,
                    _ => &config.agent.command_dev,
                };
                let prompt = self
                    .prompt(&r.mode)
                    .ok_or_else(|| RenderError::NoPrompt(r.mode.clone()))?;
                Some(minijinja::context! {
                    id => r.id, mode => r.mode, branch => r.branch, pull_request => r.pull_request,
                    job_name => format!("run-{}", r.id), labels => run_labels,
                    prompt_config_map => format!("run-{}-prompt", r.id),
                    model => r.model, reasoning => r.reasoning,
                    // Strings: environment values must not render as YAML lists or numbers.
                    agent_command => serde_json::to_string(command).unwrap_or_default(),
                    agent_timeout_seconds => config.limits.agent_seconds().to_string(),
                    git_url => config.agent.git_url.replace("{repo}", &issue.repo),
                    prompt_template => prompt,
                })
            }
            None => None,
        };
        // Pod Security Admission: the level is enforced, and also warned and
        // audited so a refused pod says why.
        let mut namespace_labels = labels.clone();
        for mode in ["enforce", "warn", "audit"] {
            namespace_labels.insert(
                format!("pod-security.kubernetes.io/{mode}"),
                config.cluster.pod_security.clone(),
            );
        }
        let (except_v6, except_v4): (Vec<&String>, Vec<&String>) = config
            .cluster
            .egress_excluded_cidrs
            .iter()
            .partition(|c| c.contains(':'));
        let ctx = minijinja::context! {
            namespace => issue.namespace, repo => issue.repo,
            issue_number => issue.issue_number.to_string(),
            labels => labels, annotations => annotations, config => config,
            namespace_labels => namespace_labels,
            egress_except_v4 => except_v4, egress_except_v6 => except_v6,
            run => run_value,
        };
        let mut out = Vec::new();
        for name in self.sources.keys() {
            let (group, file) = name.split_once('/').unwrap_or(("issue", name));
            let path = match (group, run) {
                ("issue", _) => format!("{issue_dir}/{file}"),
                ("run", Some(r)) => format!("{issue_dir}/runs/{}/{file}", r.id),
                _ => continue,
            };
            let tmpl = env
                .get_template(name)
                .map_err(|source| RenderError::Template {
                    name: name.clone(),
                    source,
                })?;
            let text = tmpl.render(&ctx).map_err(|source| RenderError::Template {
                name: name.clone(),
                source,
            })?;
            out.push(RenderedFile {
                path,
                content: canonical(name, &text)?,
            });
        }
        Ok(out)
    }
}

/// Parses one rendered object and writes it back in canonical form with a
/// header that names its template.
fn canonical(name: &str, text: &str) -> Result<String, RenderError> {
    let output_err = |reason: String| RenderError::Output {
        name: name.to_string(),
        reason,
    };
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| output_err(e.to_string()))?;
        docs.push(value);
    }
    let [object] = docs.as_slice() else {
        return Err(output_err(format!("{} documents", docs.len())));
    };
    for field in ["apiVersion", "kind"] {
        if !object.get(field).is_some_and(|v| v.is_string()) {
            return Err(output_err(format!("missing {field}")));
        }
    }
    if !object
        .get("metadata")
        .and_then(|m| m.get("name"))
        .is_some_and(|v| v.is_string())
    {
        return Err(output_err("missing metadata.name".into()));
    }
    let body = serde_yaml::to_string(object).map_err(|e| output_err(e.to_string()))?;
    Ok(format!(
        "# Rendered by issueops from manifests-templates/{name}. Do not edit: change the\n# template or the config, or roll back with git.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(title: &str) -> IssueContext {
        IssueContext {
            repo: "Codertocat/Hello-World".into(),
            issue_number: 1,
            title: title.into(),
            namespace: "codertocat-hello-world-1-abc".into(),
        }
    }

    fn run() -> RunContext {
        RunContext {
            id: "r1".into(),
            mode: "dev".into(),
            branch: "issueops/issue-1".into(),
            pull_request: None,
            model: "gpt-5.1-codex".into(),
            reasoning: "medium".into(),
        }
    }

    #[test]
    fn renders_every_object_deterministically() {
        let t = Templates::embedded();
        let a = t
            .render(&Config::default(), &issue("t"), Some(&run()))
            .unwrap();
        let b = t
            .render(&Config::default(), &issue("t"), Some(&run()))
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 10);
        assert!(a.iter().any(|f| f.path
            == issueops_core::state_repo::run_dir("codertocat-hello-world-1-abc", "r1")
                + "/job.yaml"));
        for f in &a {
            assert!(
                f.content.contains("app.kubernetes.io/managed-by: issueops"),
                "{}",
                f.path
            );
        }
    }

    #[test]
    fn hostile_title_stays_one_string_value() {
        let hostile =
            "x\"\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: evil}\n'}: {{ 7*7 }}";
        let files = Templates::embedded()
            .render(&Config::default(), &issue(hostile), Some(&run()))
            .unwrap();
        let ns = files
            .iter()
            .find(|f| f.path.ends_with("namespace.yaml"))
            .unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&ns.content).unwrap();
        assert_eq!(
            v["metadata"]["annotations"]["issueops.dev/issue-title"].as_str(),
            Some(hostile)
        );
        assert_eq!(v["kind"].as_str(), Some("Namespace"));
    }

    #[test]
    fn config_overrides_reach_the_job() {
        let mut config = Config::default();
        config.job.image = "example.org/agent:7".into();
        config.job.memory_limit = "3Gi".into();
        let files = Templates::embedded()
            .render(&config, &issue("t"), Some(&run()))
            .unwrap();
        let job = files.iter().find(|f| f.path.ends_with("job.yaml")).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&job.content).unwrap();
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"].as_str(), Some("example.org/agent:7"));
        assert_eq!(c["resources"]["limits"]["memory"].as_str(), Some("3Gi"));
    }

    #[test]
    fn the_job_tells_the_runner_everything_as_strings() {
        let mut config = Config::default();
        config.agent.command_dev = vec!["agent".into(), "--model".into(), "{model}".into()];
        config.agent.git_url = "https://git.example/{repo}.git".into();
        let files = Templates::embedded()
            .render(&config, &issue("t"), Some(&run()))
            .unwrap();
        let job = files.iter().find(|f| f.path.ends_with("job.yaml")).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&job.content).unwrap();
        let env = &v["spec"]["template"]["spec"]["containers"][0]["env"];
        let get = |name: &str| {
            env.as_sequence()
                .unwrap()
                .iter()
                .find(|e| e["name"].as_str() == Some(name))
                .and_then(|e| e["value"].as_str())
                .map(str::to_string)
        };
        assert_eq!(
            get("ISSUEOPS_AGENT_COMMAND").as_deref(),
            Some(r#"["agent","--model","{model}"]"#)
        );
        assert_eq!(
            get("ISSUEOPS_GIT_URL").as_deref(),
            Some("https://git.example/Codertocat/Hello-World.git")
        );
        assert_eq!(
            get("ISSUEOPS_AGENT_TIMEOUT_SECONDS").as_deref(),
            Some("2700")
        );
        assert_eq!(get("ISSUEOPS_MODEL").as_deref(), Some("gpt-5.1-codex"));
        let prompt = files
            .iter()
            .find(|f| f.path.ends_with("runs/r1/prompt.yaml"))
            .unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&prompt.content).unwrap();
        assert_eq!(
            v["data"]["prompt.md"].as_str(),
            Templates::embedded().prompt("dev")
        );
    }

    #[test]
    fn a_templates_dir_may_override_a_prompt() {
        let dir = tempfile::tempdir().unwrap();
        for group in ["issue", "run", "prompts"] {
            std::fs::create_dir_all(dir.path().join(group)).unwrap();
        }
        std::fs::write(
            dir.path().join("prompts/revise.md"),
            "Fix {{ issue.title }}",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("run/prompt.yaml"),
            include_str!("../../manifests-templates/run/prompt.yaml"),
        )
        .unwrap();
        let t = Templates::from_dir(dir.path()).unwrap();
        assert_eq!(t.prompt("revise"), Some("Fix {{ issue.title }}"));
        assert_eq!(t.prompt("dev"), Templates::embedded().prompt("dev"));
    }

    #[test]
    fn a_template_with_two_documents_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("issue")).unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        std::fs::write(
            dir.path().join("issue/x.yaml"),
            "apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\napiVersion: v1\nkind: B\nmetadata: {name: b}\n",
        )
        .unwrap();
        let t = Templates::from_dir(dir.path()).unwrap();
        let err = t.render(&Config::default(), &issue("t"), None).unwrap_err();
        assert!(err.to_string().contains("2 documents"), "{err}");
    }

    #[test]
    fn an_unknown_variable_is_an_error_not_an_empty_string() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("issue")).unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        std::fs::write(dir.path().join("issue/x.yaml"), "kind: {{ nope }}\n").unwrap();
        let t = Templates::from_dir(dir.path()).unwrap();
        assert!(t.render(&Config::default(), &issue("t"), None).is_err());
    }
}
