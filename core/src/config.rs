//! Operator configuration: which repos trigger runs, and the knobs of the
//! rendered manifests (images, resources, quotas) so nobody edits templates.
//!
//! Loaded from an optional YAML file; every field has a safe default, and an
//! unknown field is an error (a typo must not silently fall back to a default).

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("config is not valid: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Repositories (`owner/name`) whose issues may trigger runs. Events from any
    /// other repository are recorded and ignored.
    pub repos: Vec<String>,
    /// Label that starts a development run.
    pub trigger_label: String,
    /// Label that starts a revision run.
    pub revise_label: String,
    pub job: JobConfig,
    pub quota: QuotaConfig,
    pub limit_range: LimitRangeConfig,
    pub lifecycle: LifecycleConfig,
    pub github: GitHubConfig,
    pub agent: AgentConfig,
    pub labels: LabelsConfig,
    pub ui: UiConfig,
    pub standin: StandinConfig,
    pub inbox: InboxConfig,
    pub gateway: GatewayConfig,
    pub cluster: ClusterConfig,
    pub limits: LimitsConfig,
    pub review: ReviewConfig,
    pub audit: AuditConfig,
    /// Names this install: every object it renders carries it in the
    /// `issueops.dev/instance` label, and its reconciler lists, observes and
    /// prunes only objects with the same value, so two installs (or two test
    /// runs) on one cluster never treat each other's objects as orphans.
    pub instance: String,
}

/// The audit trail's own upkeep.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// How often the control plane's leader runs `audit verify` on its own
    /// (recorded, shown on the health page; a break is logged as an error).
    /// 0: only when someone runs the command.
    pub verify_every_hours: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            verify_every_hours: 24,
        }
    }
}

/// Review before apply: which runs are proposed instead of applied, and
/// which commits the reconciler trusts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReviewConfig {
    /// Every run is proposed for review.
    pub all: bool,
    /// Runs of these repositories (`owner/name`) are proposed for review.
    pub repos: Vec<String>,
    /// Runs of issues carrying one of these labels are proposed for review.
    pub labels: Vec<String>,
    /// A proposal nobody approved or denied within this long expires, and
    /// its run is cancelled saying so.
    pub proposal_ttl_seconds: u64,
    /// An unencrypted OpenSSH private key (`ssh-keygen -t ed25519`) issueops
    /// signs its state-repo commits with; `ISSUEOPS_SIGNING_KEY_FILE` sets
    /// it too. With a key, the reconciler applies only commits signed by it
    /// or by a key in `trusted_keys`.
    pub signing_key_file: Option<String>,
    /// Reviewers' public keys (`ssh-ed25519 AAAA... name`): a commit they
    /// signed (`git commit -S` with `gpg.format = ssh`) is applied too.
    pub trusted_keys: Vec<String>,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        Self {
            all: false,
            repos: Vec::new(),
            labels: Vec::new(),
            proposal_ttl_seconds: 7 * 86_400,
            signing_key_file: None,
            trusted_keys: Vec::new(),
        }
    }
}

impl ReviewConfig {
    /// Whether a run of `repo`'s issue with `labels` is proposed for review.
    pub fn applies(&self, repo: &str, labels: &[String]) -> bool {
        self.all
            || self.repos.iter().any(|r| r.eq_ignore_ascii_case(repo))
            || labels.iter().any(|l| self.labels.contains(l))
    }

    /// Whether review is on for anything.
    pub fn enabled(&self) -> bool {
        self.all || !self.repos.is_empty() || !self.labels.is_empty()
    }
}

/// What may run at once, how often, and for how long.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Runs active at once in the whole install (none: no limit). A trigger
    /// beyond it waits in a queue that is fair across repositories and
    /// starts by itself when a run ends.
    pub max_active_runs: Option<u32>,
    /// Runs active at once per repository (none: no limit).
    pub max_active_runs_per_repo: Option<u32>,
    /// Runs a repository may start per UTC day (none: no limit); a trigger
    /// beyond it is refused with a comment saying when the count resets.
    pub runs_per_day: Option<u32>,
    /// The one wall-clock limit of a run: the Job's `activeDeadlineSeconds`.
    /// The agent gets this minus a reserve for cloning and publishing (a
    /// quarter, at most 15 minutes): see [`LimitsConfig::agent_seconds`].
    pub run_seconds: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_active_runs: None,
            max_active_runs_per_repo: None,
            runs_per_day: None,
            run_seconds: 3600,
        }
    }
}

impl LimitsConfig {
    /// How long the agent itself may run: `run_seconds` less the reserve
    /// the runner needs before (clone) and after it (push, report).
    pub fn agent_seconds(&self) -> u64 {
        self.run_seconds - (self.run_seconds / 4).min(900)
    }

    /// Whether any cap on active runs is set (then every trigger goes
    /// through the queue, so arrival order holds).
    pub fn caps_active_runs(&self) -> bool {
        self.max_active_runs.is_some() || self.max_active_runs_per_repo.is_some()
    }
}

/// The staff UI (`--ui-listen`). Without `github_oauth`, `serve` prints a
/// one-time sign-in link for the loopback address instead.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Where people reach the UI (the OAuth callback is built from it);
    /// default `http://<--ui-listen>`.
    pub public_url: Option<String>,
    /// Where issues and pull requests are linked (`https://HOST` for GitHub
    /// Enterprise).
    pub github_web_url: String,
    /// Sign in with GitHub. The client secret comes from the file named by
    /// `ISSUEOPS_UI_OAUTH_CLIENT_SECRET_FILE`, never from this file.
    pub github_oauth: Option<OAuthConfig>,
    /// Who may look (approvers may too).
    pub viewers: PeopleConfig,
    /// Who may approve, deny and cancel (besides `github.approvers`).
    pub approvers: PeopleConfig,
    /// How long a sign-in lasts.
    pub session_hours: u64,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            github_web_url: "https://github.com".into(),
            github_oauth: None,
            viewers: PeopleConfig::default(),
            approvers: PeopleConfig::default(),
            session_hours: 8,
        }
    }
}

/// A GitHub OAuth App (or a GitHub App's OAuth credentials).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    pub client_id: String,
    /// `https://github.com/login/oauth/authorize` (GitHub Enterprise: on its host).
    pub authorize_url: String,
    pub token_url: String,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            authorize_url: "https://github.com/login/oauth/authorize".into(),
            token_url: "https://github.com/login/oauth/access_token".into(),
        }
    }
}

/// People by GitHub login, organization or team (`org/team-slug`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PeopleConfig {
    pub users: Vec<String>,
    pub orgs: Vec<String>,
    pub teams: Vec<String>,
}

impl PeopleConfig {
    /// Whether `login`, member of `orgs` and `teams` (`org/slug`), is one of these people.
    pub fn contains(&self, login: &str, orgs: &[String], teams: &[String]) -> bool {
        let any = |list: &[String], of: &[String]| {
            list.iter()
                .any(|a| of.iter().any(|b| a.eq_ignore_ascii_case(b)))
        };
        self.users.iter().any(|u| u.eq_ignore_ascii_case(login))
            || any(&self.orgs, orgs)
            || any(&self.teams, teams)
    }
}

/// How the control plane retries deliveries it could not handle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InboxConfig {
    /// Attempts before a delivery that keeps failing becomes a dead letter
    /// (`issueops deliveries`); a permanent error makes it one at once.
    pub max_attempts: u32,
    /// Pause before the first retry; it doubles (with jitter) per attempt...
    pub first_retry_seconds: u64,
    /// ...up to this.
    pub max_retry_seconds: u64,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            first_retry_seconds: 2,
            max_retry_seconds: 600,
        }
    }
}

/// Limits on what unauthenticated callers can make the gateway do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Webhook requests per second allowed from one source address (a token
    /// bucket); beyond it the gateway answers 429. 0 turns the limit off.
    pub rate_per_second: u32,
    /// Requests one source may send at once before the rate applies.
    pub rate_burst: u32,
    /// Refused (unsigned, forged, malformed) requests are counted, and
    /// written to the audit table at most once per this many seconds per
    /// reason and source address.
    pub refused_summary_seconds: u64,
    /// Address ranges of the proxies in front of the gateway (an ingress, a
    /// load balancer). A request from one of them is counted against the
    /// client it names in `X-Forwarded-For` (the nearest address not itself
    /// a trusted proxy); from anywhere else that header is ignored. Empty:
    /// every request counts against its peer address.
    pub trusted_proxies: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            rate_per_second: 20,
            rate_burst: 100,
            refused_summary_seconds: 60,
            trusted_proxies: Vec::new(),
        }
    }
}

/// What issueops may do in the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Kinds the reconciler may apply (`Kind` or `group/Kind`); a state-repo
    /// file of any other kind is refused and audited. Only kinds issueops
    /// renders can be listed; removing one (say `PersistentVolumeClaim`)
    /// narrows what a tampered state repo could create.
    pub kinds: Vec<String>,
    /// Address ranges the agents' egress policy never allows (the cluster's
    /// pod and service ranges, the node network, cloud metadata), so HTTPS
    /// reaches the internet but no in-cluster service.
    pub egress_excluded_cidrs: Vec<String>,
    /// Pod Security Admission level enforced on issue namespaces.
    pub pod_security: String,
    /// Namespace of the reconciler's leader-election Lease; by default the
    /// client's own (the pod's namespace in a cluster, the kubeconfig
    /// context's outside).
    pub lease_namespace: Option<String>,
    /// A standby reconciler takes over once the leader has not renewed its
    /// Lease for this long.
    pub lease_seconds: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            kinds: [
                "Namespace",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "ResourceQuota",
                "LimitRange",
                "NetworkPolicy",
                "PersistentVolumeClaim",
                "ConfigMap",
                "Job",
            ]
            .map(String::from)
            .to_vec(),
            egress_excluded_cidrs: [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "169.254.0.0/16",
                // IPv6: unique local (where clusters put pods and services),
                // link-local and loopback. (IPv4-mapped ranges are refused
                // by the API server's validation of ipBlock.)
                "fc00::/7",
                "fe80::/10",
                "::1/128",
            ]
            .map(String::from)
            .to_vec(),
            pod_security: "restricted".into(),
            lease_namespace: None,
            lease_seconds: 15,
        }
    }
}

/// The in-process cluster stand-in (used when no cluster is reachable).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StandinConfig {
    /// Simulate Jobs: started at once, succeeded after this many seconds;
    /// 0 leaves them as applied.
    pub job_seconds: u64,
    /// Finished runs are pruned after this many seconds on the stand-in
    /// (instead of `lifecycle.run_retention_seconds`), so a first try shows
    /// a run's whole life.
    pub run_retention_seconds: u64,
}

impl Default for StandinConfig {
    fn default() -> Self {
        Self {
            job_seconds: 5,
            run_retention_seconds: 30,
        }
    }
}

/// Who may trigger and approve, and how issueops reaches GitHub. Credentials
/// come from the environment, never from this file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GitHubConfig {
    /// `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise.
    pub api_url: String,
    /// Logins whose triggers start runs without a permission check.
    pub trigger_allowlist: Vec<String>,
    /// Logins that may approve or deny requests (repo admins may too).
    pub approvers: Vec<String>,
    /// Label an approver adds to an issue to approve its pending requests.
    pub approval_label: String,
    /// How long a request waits for a decision.
    pub approval_ttl_seconds: u64,
    /// Longest wait for a rate limit inside one call; longer waits retry later.
    pub max_wait_seconds: u64,
    pub max_attempts: u32,
    /// Link to a state repo commit in status comments, `{sha}` replaced
    /// (e.g. `https://github.com/org/issueops-state/commit/{sha}`).
    pub commit_url: Option<String>,
    /// Seconds between catch-up syncs (triggers whose delivery never arrived).
    pub catch_up_seconds: u64,
}

impl Default for GitHubConfig {
    fn default() -> Self {
        Self {
            api_url: "https://api.github.com".into(),
            trigger_allowlist: Vec::new(),
            approvers: Vec::new(),
            approval_label: "run:approved".into(),
            approval_ttl_seconds: 86_400,
            max_wait_seconds: 60,
            max_attempts: 5,
            commit_url: None,
            catch_up_seconds: 600,
        }
    }
}

impl GitHubConfig {
    pub fn allowlisted(&self, login: &str) -> bool {
        self.trigger_allowlist
            .iter()
            .any(|l| l.eq_ignore_ascii_case(login))
    }

    pub fn is_approver(&self, login: &str) -> bool {
        self.approvers.iter().any(|l| l.eq_ignore_ascii_case(login))
    }
}

/// What the agent Job runs and how it reaches the code. Rendered into the
/// Job's environment; the runner (`runner/`) reads nothing else.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's argv for a dev run. Never run through a shell; `{model}`,
    /// `{reasoning}` and `{prompt_file}` are replaced inside each argument.
    /// The prompt also arrives on the agent's standard input.
    pub command_dev: Vec<String>,
    /// The agent's argv for a revise run (resumes the saved session).
    pub command_revise: Vec<String>,
    /// Replaced by `limits.run_seconds`; set, it is an error that says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Clone URL of a repo, `{repo}` replaced by `owner/name`.
    pub git_url: String,
    /// Model names an `ai-model:<name>` label may choose.
    pub models: Vec<String>,
    pub default_model: String,
    /// Levels an `ai-reasoning:<level>` label may choose.
    pub reasoning_levels: Vec<String>,
    pub default_reasoning: String,
    /// Size of the per-issue PersistentVolumeClaim that keeps the agent's home
    /// (its session) from the dev run to the revise runs of the same issue.
    pub home_size: String,
    /// StorageClass of that claim; the cluster's default when absent.
    pub home_storage_class: Option<String>,
    /// The variable the agent reads its model API key from; the key comes from
    /// the agent Secret (key `agent-api-key`) when the reconciler has one.
    pub api_key_env: String,
    /// The most file content (bytes) one run's change may add; a larger one
    /// is not pushed, and the run fails saying so.
    pub max_push_bytes: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        // The pod is the sandbox (non-root, no capabilities, read-only root,
        // egress limited to DNS and HTTPS), so Codex's own sandbox, which needs
        // kernel features a restricted pod lacks, is turned off.
        let base = [
            "codex",
            "exec",
            "--skip-git-repo-check",
            "--sandbox",
            "danger-full-access",
            "--model",
            "{model}",
            "--config",
            "model_reasoning_effort={reasoning}",
        ];
        let argv = |tail: &[&str]| {
            base.iter()
                .chain(tail)
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        };
        Self {
            command_dev: argv(&["-"]),
            command_revise: argv(&["resume", "--last", "-"]),
            timeout_seconds: None,
            git_url: "https://github.com/{repo}.git".into(),
            models: vec!["gpt-5.1-codex".into(), "gpt-5.1-codex-mini".into()],
            default_model: "gpt-5.1-codex".into(),
            reasoning_levels: vec!["low".into(), "medium".into(), "high".into()],
            default_reasoning: "medium".into(),
            home_size: "1Gi".into(),
            home_storage_class: None,
            api_key_env: "OPENAI_API_KEY".into(),
            max_push_bytes: 100 * 1024 * 1024,
        }
    }
}

/// Labels besides the triggers: their names, and what they mean.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LabelsConfig {
    /// Prefix of the labels that choose the agent's model (`ai-model:<name>`).
    pub model_prefix: String,
    /// Prefix of the labels that choose the reasoning level.
    pub reasoning_prefix: String,
    /// Keeps an issue's namespace after its run ends, until removed...
    pub debug: String,
    /// ...or until this long after the run ended.
    pub debug_max_seconds: u64,
    /// The runner puts this on the pull request it opened or updated.
    pub in_review: String,
    /// Remove the trigger label from the issue when its run ends.
    pub remove_trigger_when_done: bool,
    /// A review with "changes requested" on a run's pull request starts a
    /// revise run (the reviewer must be allowed to trigger, as for labels).
    pub revise_on_changes_requested: bool,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        Self {
            model_prefix: "ai-model:".into(),
            reasoning_prefix: "ai-reasoning:".into(),
            debug: "run:debug".into(),
            debug_max_seconds: 3 * 86_400,
            in_review: "state:in-review".into(),
            remove_trigger_when_done: true,
            revise_on_changes_requested: false,
        }
    }
}

/// What happens to runs over time, and the guard on deletions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    /// A second trigger while a run is active: `refuse` it (recorded, with the
    /// reason) or `queue` it until the active run finishes (first in, first out).
    pub on_active_run: ActiveRunPolicy,
    /// How long a finished run's objects stay before the run is pruned.
    pub run_retention_seconds: u64,
    /// How long an issue with no active run stays before its namespace is pruned.
    pub issue_idle_seconds: u64,
    /// Whether removing the trigger label cancels the active run.
    pub cancel_on_unlabel: bool,
    /// A reconcile cycle that would delete more than this share of the managed
    /// objects stops and waits for `--force` (an emptied or broken state repo)...
    pub max_delete_share: f64,
    /// ...unless it deletes at most this many objects (pruning one issue is
    /// fine). Deleting every managed object always needs `--force`.
    pub max_unguarded_deletes: usize,
    /// A run still committed or applied (its Job never started) after this
    /// many seconds fails with the reason, and frees its issue.
    pub stuck_seconds: u64,
    /// How long the agent's transcript (the end of its run's pod logs,
    /// redacted) is kept after its Job ended; 0 keeps none.
    pub transcript_retention_days: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ActiveRunPolicy {
    Refuse,
    Queue,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            on_active_run: ActiveRunPolicy::Refuse,
            run_retention_seconds: 86_400,
            issue_idle_seconds: 7 * 86_400,
            cancel_on_unlabel: false,
            max_delete_share: 0.5,
            max_unguarded_deletes: 20,
            stuck_seconds: 1800,
            transcript_retention_days: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JobConfig {
    pub image: String,
    pub image_pull_policy: String,
    pub cpu_request: String,
    pub cpu_limit: String,
    pub memory_request: String,
    pub memory_limit: String,
    pub workdir_size_limit: String,
    /// Replaced by `limits.run_seconds`; set, it is an error that says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<u64>,
    pub backoff_limit: u32,
    /// Name of the Secret the reconciler writes the GitHub token into; the Job
    /// only references it.
    pub github_token_secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    pub requests_cpu: String,
    pub requests_memory: String,
    pub limits_cpu: String,
    pub limits_memory: String,
    pub pods: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitRangeConfig {
    pub default_cpu: String,
    pub default_memory: String,
    pub default_request_cpu: String,
    pub default_request_memory: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            repos: Vec::new(),
            trigger_label: "run:dev".into(),
            revise_label: "run:dev:revise".into(),
            job: JobConfig::default(),
            quota: QuotaConfig::default(),
            limit_range: LimitRangeConfig::default(),
            lifecycle: LifecycleConfig::default(),
            github: GitHubConfig::default(),
            agent: AgentConfig::default(),
            labels: LabelsConfig::default(),
            ui: UiConfig::default(),
            standin: StandinConfig::default(),
            inbox: InboxConfig::default(),
            gateway: GatewayConfig::default(),
            cluster: ClusterConfig::default(),
            limits: LimitsConfig::default(),
            review: ReviewConfig::default(),
            audit: AuditConfig::default(),
            instance: crate::DEFAULT_INSTANCE.into(),
        }
    }
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            image: "ghcr.io/issueops/agent:0.1.0".into(),
            image_pull_policy: "IfNotPresent".into(),
            cpu_request: "500m".into(),
            cpu_limit: "2".into(),
            memory_request: "1Gi".into(),
            memory_limit: "4Gi".into(),
            workdir_size_limit: "10Gi".into(),
            active_deadline_seconds: None,
            backoff_limit: 1,
            github_token_secret: "issueops-github-token".into(),
        }
    }
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            requests_cpu: "2".into(),
            requests_memory: "4Gi".into(),
            limits_cpu: "4".into(),
            limits_memory: "8Gi".into(),
            pods: "4".into(),
        }
    }
}

impl Default for LimitRangeConfig {
    fn default() -> Self {
        Self {
            default_cpu: "1".into(),
            default_memory: "1Gi".into(),
            default_request_cpu: "250m".into(),
            default_request_memory: "256Mi".into(),
        }
    }
}

impl Config {
    /// Reads a YAML config file; fields it leaves out keep their defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let config: Config = serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: shown,
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (old, set) in [
            (
                "job.active_deadline_seconds",
                self.job.active_deadline_seconds,
            ),
            ("agent.timeout_seconds", self.agent.timeout_seconds),
        ] {
            if set.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "{old} was replaced by limits.run_seconds: the one wall-clock limit of a run (the agent gets it less a reserve for clone and push)"
                )));
            }
        }
        if self.review.enabled() && self.review.proposal_ttl_seconds < 60 {
            return Err(ConfigError::Invalid(
                "review.proposal_ttl_seconds must be at least 60".into(),
            ));
        }
        if self.limits.run_seconds < 120 {
            return Err(ConfigError::Invalid(
                "limits.run_seconds must be at least 120".into(),
            ));
        }
        for (name, cap) in [
            ("limits.max_active_runs", self.limits.max_active_runs),
            (
                "limits.max_active_runs_per_repo",
                self.limits.max_active_runs_per_repo,
            ),
            ("limits.runs_per_day", self.limits.runs_per_day),
        ] {
            if cap == Some(0) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be at least 1 (leave it out for no limit)"
                )));
            }
        }
        for repo in &self.repos {
            let ok = repo
                .split_once('/')
                .is_some_and(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'));
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "repo {repo:?} must be written owner/name"
                )));
            }
        }
        if let Some(oauth) = &self.ui.github_oauth {
            if oauth.client_id.trim().is_empty() {
                return Err(ConfigError::Invalid(
                    "ui.github_oauth.client_id is empty: set it, or remove ui.github_oauth for the loopback sign-in link".into(),
                ));
            }
        }
        if !(1..=24 * 30).contains(&self.ui.session_hours) {
            return Err(ConfigError::Invalid(
                "ui.session_hours must be between 1 and 720".into(),
            ));
        }
        if self.inbox.max_attempts == 0 || self.inbox.first_retry_seconds == 0 {
            return Err(ConfigError::Invalid(
                "inbox.max_attempts and inbox.first_retry_seconds must be at least 1".into(),
            ));
        }
        if self.lifecycle.stuck_seconds < 60 {
            return Err(ConfigError::Invalid(
                "lifecycle.stuck_seconds must be at least 60".into(),
            ));
        }
        for cidr in &self.cluster.egress_excluded_cidrs {
            if !valid_cidr(cidr) {
                return Err(ConfigError::Invalid(format!(
                    "cluster.egress_excluded_cidrs: {cidr:?} is not an address range like 10.0.0.0/8"
                )));
            }
        }
        for cidr in &self.gateway.trusted_proxies {
            if !valid_cidr(cidr) {
                return Err(ConfigError::Invalid(format!(
                    "gateway.trusted_proxies: {cidr:?} is not an address range like 10.0.0.0/8"
                )));
            }
        }
        if self.cluster.lease_seconds < 2 {
            return Err(ConfigError::Invalid(
                "cluster.lease_seconds must be at least 2".into(),
            ));
        }
        let known = ClusterConfig::default().kinds;
        if let Some(kind) = self.cluster.kinds.iter().find(|k| !known.contains(k)) {
            return Err(ConfigError::Invalid(format!(
                "cluster.kinds: {kind:?} is not a kind issueops renders ({})",
                known.join(", ")
            )));
        }
        if !["restricted", "baseline", "privileged"].contains(&self.cluster.pod_security.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "cluster.pod_security {:?} must be restricted, baseline or privileged",
                self.cluster.pod_security
            )));
        }
        if !(0.0..=1.0).contains(&self.lifecycle.max_delete_share) {
            return Err(ConfigError::Invalid(
                "lifecycle.max_delete_share must be between 0 and 1".into(),
            ));
        }
        let label_value = |v: &str| {
            (1..=63).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric())
        };
        if !label_value(&self.instance) {
            return Err(ConfigError::Invalid(format!(
                "instance {:?} must be a Kubernetes label value: 1 to 63 letters, digits, '-', '_' or '.', \
                 starting and ending with a letter or digit",
                self.instance
            )));
        }
        if self.trigger_label.is_empty() || self.revise_label.is_empty() {
            return Err(ConfigError::Invalid(
                "trigger labels must not be empty".into(),
            ));
        }
        self.validate_agent()
    }

    fn validate_agent(&self) -> Result<(), ConfigError> {
        let a = &self.agent;
        if a.command_dev.is_empty() || a.command_revise.is_empty() {
            return Err(ConfigError::Invalid(
                "agent.command_dev and agent.command_revise must name a program".into(),
            ));
        }
        if !a.git_url.contains("{repo}") {
            return Err(ConfigError::Invalid(format!(
                "agent.git_url {:?} must contain {{repo}}",
                a.git_url
            )));
        }
        if !a.models.contains(&a.default_model) {
            return Err(ConfigError::Invalid(format!(
                "agent.default_model {:?} is not in agent.models {:?}",
                a.default_model, a.models
            )));
        }
        if !a.reasoning_levels.contains(&a.default_reasoning) {
            return Err(ConfigError::Invalid(format!(
                "agent.default_reasoning {:?} is not in agent.reasoning_levels {:?}",
                a.default_reasoning, a.reasoning_levels
            )));
        }
        Ok(())
    }

    /// The labels that start runs; only one may be on an issue at a time.
    pub fn run_labels(&self) -> [&str; 2] {
        [self.trigger_label.as_str(), self.revise_label.as_str()]
    }

    /// Whether events from `repo` may trigger runs (GitHub names are case-insensitive).
    pub fn watches(&self, repo: &str) -> bool {
        self.repos.iter().any(|r| r.eq_ignore_ascii_case(repo))
    }
}

/// `a.b.c.d/n` or an IPv6 range, as NetworkPolicy's `ipBlock` takes them.
fn valid_cidr(cidr: &str) -> bool {
    let Some((addr, bits)) = cidr.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_only_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "repos: [a/b]\njob:\n  image: example/agent:2\n").unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.job.image, "example/agent:2");
        assert_eq!(c.job.cpu_limit, JobConfig::default().cpu_limit);
        assert!(c.watches("A/B"));
    }

    #[test]
    fn unknown_field_and_bad_repo_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "job:\n  imag: typo\n").unwrap();
        assert!(Config::load(&path)
            .unwrap_err()
            .to_string()
            .contains("imag"));
        std::fs::write(&path, "repos: [nobody]\n").unwrap();
        assert!(Config::load(&path)
            .unwrap_err()
            .to_string()
            .contains("owner/name"));
    }
}

#[cfg(test)]
mod example_file {
    use super::Config;

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../issueops.example.yaml");
    const REFERENCE: &str = include_str!("../../docs/configuration.md");

    /// Every leaf key of a YAML mapping, dotted.
    fn keys(value: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
        match value {
            serde_yaml::Value::Mapping(map) if !map.is_empty() => {
                for (k, v) in map {
                    let k = k.as_str().unwrap_or_default();
                    let path = if prefix.is_empty() {
                        k.to_string()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    keys(v, &path, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }

    /// The config reference's words for `path`, when it has a row for it.
    fn meaning(path: &str) -> Option<String> {
        REFERENCE.lines().find_map(|line| {
            let mut cells = line.split(" | ");
            let first = cells.next()?.trim_start_matches("| ");
            first
                .split(" / ")
                .any(|k| k.trim_matches('`') == path)
                .then(|| {
                    cells
                        .nth(1)
                        .unwrap_or_default()
                        .trim()
                        .trim_end_matches('|')
                        .trim()
                        .to_string()
                })
        })
    }

    /// The example with the reference's words above each key.
    fn generated() -> String {
        let yaml = serde_yaml::to_string(&Config::default()).unwrap();
        let mut out = String::from(
            "# issueops config file: every key with its default (docs/configuration.md\n\
             # says more). Copy what you change; leave the rest out.\n\
             # Regenerate: ISSUEOPS_WRITE_EXAMPLE=1 cargo test -p issueops-core example\n",
        );
        let mut stack: Vec<(usize, String)> = Vec::new();
        for line in yaml.lines() {
            let indent = line.len() - line.trim_start().len();
            let trimmed = line.trim_start();
            if let Some((key, _)) = trimmed
                .split_once(':')
                .filter(|_| !trimmed.starts_with("- "))
            {
                while stack.last().is_some_and(|(i, _)| *i >= indent) {
                    stack.pop();
                }
                stack.push((indent, key.to_string()));
                let path = stack
                    .iter()
                    .map(|(_, k)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(".");
                if let Some(words) = meaning(&path).filter(|w| !w.is_empty()) {
                    let mut comment = String::new();
                    for word in words.replace('`', "").split_whitespace() {
                        if comment.len() + word.len() > 76 {
                            out.push_str(&format!(
                                "{}# {}\n",
                                " ".repeat(indent),
                                comment.trim_end()
                            ));
                            comment.clear();
                        }
                        comment.push_str(word);
                        comment.push(' ');
                    }
                    out.push_str(&format!("{}# {}\n", " ".repeat(indent), comment.trim_end()));
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// issueops.example.yaml has every key with its default, parses as the
    /// defaults, and carries the reference's words: a key added to the code
    /// without it, or a changed default, fails here.
    #[test]
    fn the_example_config_has_every_key_with_its_default() {
        if std::env::var_os("ISSUEOPS_WRITE_EXAMPLE").is_some() {
            std::fs::write(EXAMPLE, generated()).unwrap();
        }
        let example = std::fs::read_to_string(EXAMPLE).unwrap_or_default();
        assert_eq!(
            example,
            generated(),
            "issueops.example.yaml is stale: ISSUEOPS_WRITE_EXAMPLE=1 cargo test -p issueops-core example"
        );
        let parsed: Config = serde_yaml::from_str(&example).unwrap();
        assert_eq!(parsed, Config::default());
        let (mut want, mut have) = (Vec::new(), Vec::new());
        keys(
            &serde_yaml::to_value(Config::default()).unwrap(),
            "",
            &mut want,
        );
        keys(&serde_yaml::from_str(&example).unwrap(), "", &mut have);
        assert_eq!(have, want);
        assert!(
            example.contains("# Label that starts a development run."),
            "{example}"
        );
    }
}
