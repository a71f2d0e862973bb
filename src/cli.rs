//! Command-line interface: flags, environment variables and subcommands.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// `issueops labels ...`
#[derive(Debug, Subcommand)]
pub enum LabelsCommand {
    /// Create or update the label catalogue (names, colours, descriptions) on
    /// every configured repo; other labels are left alone.
    Sync {
        /// Only print the catalogue; call nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Credentials are read from the environment (or files it names) only, never
/// from flags, which show in process listings.
const ENVIRONMENT_ONLY: &str = "\
Credentials (environment only, never flags):
  ISSUEOPS_WEBHOOK_SECRET                webhook secret (or ISSUEOPS_WEBHOOK_SECRET_FILE, one per line)
  ISSUEOPS_GITHUB_APP_ID                 GitHub App id, with
  ISSUEOPS_GITHUB_APP_KEY_FILE           its private key (PEM); or ISSUEOPS_GITHUB_TOKEN, a token
  ISSUEOPS_STATE_REPO_TOKEN              token for an https:// state repo
  ISSUEOPS_AGENT_API_KEY_FILE            the model API key every run gets
  ISSUEOPS_UI_OAUTH_CLIENT_SECRET_FILE   staff UI sign-in with GitHub (ui.github_oauth)
  ISSUEOPS_UI_COOKIE_KEY_FILE            64+ bytes: UI sessions survive restarts
  ISSUEOPS_SIGNING_KEY_FILE              ed25519 SSH key that signs state-repo commits
`issueops github-app create` writes the GitHub ones. See docs/configuration.md.";

#[derive(Debug, Parser)]
#[command(
    name = "issueops",
    version,
    about = "GitHub issue labels → isolated Kubernetes runs, the GitOps way",
    after_help = ENVIRONMENT_ONLY
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Gateway, control plane and reconciler in one process (the quickstart).
    /// Migrates the database first.
    Serve {
        #[command(flatten)]
        gateway: GatewayArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        ui: UiArgs,
        #[command(flatten)]
        ops: OpsArgs,
    },
    /// Only the webhook gateway (the thin edge). Never migrates. Any number
    /// of replicas.
    Gateway {
        #[command(flatten)]
        gateway: GatewayArgs,
        #[command(flatten)]
        ops: OpsArgs,
    },
    /// Control plane and reconciler: consume the inbox, commit, apply. Any
    /// number of replicas: one leads each role, the others stand by.
    Reconciler {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        ui: UiArgs,
        #[command(flatten)]
        ops: OpsArgs,
    },
    /// Create or upgrade the database schema.
    Migrate,
    /// Render a webhook payload file offline and print the manifests as
    /// multi-document YAML (whatever repo the payload names).
    Render {
        /// Path to a GitHub `issues` webhook payload (JSON).
        payload: PathBuf,
        /// Delivery id to derive the run id from.
        #[arg(long, default_value = "offline-render")]
        delivery_id: String,
        /// Render as if this label had been added (default: the payload's label).
        #[arg(long)]
        label: Option<String>,
    },
    /// Show the whole path once in a temporary data dir: signed webhook over
    /// HTTP → commit → applied objects → audit trail.
    Demo {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Instead of a temporary run: sign GitHub's example delivery with
        /// ISSUEOPS_WEBHOOK_SECRET and send it to a running `serve` at this
        /// URL (e.g. http://127.0.0.1:8080).
        #[arg(long, value_name = "URL")]
        send: Option<String>,
        /// With --send: the delivery's sender (GitHub's example: Codertocat).
        #[arg(long, requires = "send")]
        sender: Option<String>,
        /// With --send: the issue number (GitHub's example: 1).
        #[arg(long, requires = "send")]
        issue: Option<u64>,
    },
    /// One reconcile cycle now (and optionally a full resync), then exit.
    Reconcile {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Lift prune safety for this run: allow deleting a large share of the
        /// managed objects (after checking that the state repo is right).
        #[arg(long)]
        force: bool,
        /// Also compare every desired object with the cluster (drift, orphans).
        #[arg(long)]
        resync: bool,
    },
    /// Show what the next reconcile cycle would apply and delete, without doing it.
    Plan {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Write a new commit that restores the state repo's tree at COMMIT
    /// (with review on: propose it for review). History is never rewritten;
    /// finished runs' Jobs are not re-created.
    Rollback {
        /// The commit whose tree to restore (full or abbreviated sha).
        commit: String,
        /// Who asks for the rollback, recorded in the commit and the audit table.
        #[arg(long, env = "USER", default_value = "operator")]
        actor: String,
    },
    /// Proposals waiting for review (`review` in the config), or decide one:
    /// `proposals show|approve|deny ID`.
    Proposals {
        #[command(subcommand)]
        command: Option<ProposalsCommand>,
        /// List decided proposals too.
        #[arg(long)]
        all: bool,
    },
    /// List approval requests (triggers waiting for an approver).
    Approvals,
    /// Approve a pending request: its run starts.
    Approve {
        id: String,
        /// Why, recorded in the audit table.
        #[arg(long)]
        reason: String,
        /// Who approves (a configured approver or a repo admin).
        #[arg(long, env = "USER", default_value = "operator")]
        actor: String,
    },
    /// Deny a pending request.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long, env = "USER", default_value = "operator")]
        actor: String,
    },
    /// Labels issueops gives meaning to, on GitHub.
    Labels {
        #[command(subcommand)]
        command: LabelsCommand,
    },
    /// List runs, with what the agent reported (outcome, pull request).
    Runs,
    /// Dead letters: deliveries parked after a permanent error or too many
    /// attempts, with the reason. `deliveries retry ID` puts one back in line.
    Deliveries {
        #[command(subcommand)]
        command: Option<DeliveriesCommand>,
    },
    /// List the staff UI's live sessions (or end some: `sessions revoke`).
    Sessions {
        #[command(subcommand)]
        command: Option<SessionsCommand>,
    },
    /// Register issueops' GitHub App (GitHub's manifest flow): the right
    /// permissions and events, its credentials written as files of mode 0600
    /// (and optionally as Kubernetes Secrets for deploy/).
    GithubApp {
        #[command(subcommand)]
        command: GithubAppCommand,
    },
    /// Bearer tokens for the staff JSON API (/api/v1): create one (shown
    /// once), list them, revoke one.
    ApiTokens {
        #[command(subcommand)]
        command: ApiTokensCommand,
    },
    /// Print the audit trail, oldest first (or verify it: `audit verify`).
    Audit {
        /// Only the rows of this run (and of the delivery that started it).
        #[arg(long)]
        run: Option<String>,
        #[command(subcommand)]
        command: Option<AuditCommand>,
    },
}

/// `issueops proposals ...`
#[derive(Debug, Subcommand)]
pub enum ProposalsCommand {
    /// What the proposal asks for, then the diff of its branch.
    Show { id: String },
    /// Merge the proposal into the applied branch (a commit issueops signs):
    /// the reconciler applies it on its next cycle.
    Approve {
        id: String,
        /// Why, recorded in the merge commit and the audit table.
        #[arg(long, default_value = "approved")]
        reason: String,
        /// Who approves, recorded in the merge commit and the audit table.
        #[arg(long, env = "USER", default_value = "operator")]
        actor: String,
    },
    /// Deny the proposal: nothing of it is applied; its run is cancelled
    /// with the reason, reported on the issue.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long, env = "USER", default_value = "operator")]
        actor: String,
    },
}

/// `issueops audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the audit table's hash chain and hold the state repo's
    /// history against it (commit trailers ↔ rows). Prints the first break
    /// and exits 1 when anything was removed or altered; records the outcome
    /// (shown on the staff UI's health page).
    Verify {
        /// Who asks, recorded in the audit table.
        #[arg(long, default_value = "operator")]
        actor: String,
    },
}

/// `issueops github-app ...`
#[derive(Debug, Subcommand)]
pub enum GithubAppCommand {
    /// Print the address of a page that sends GitHub the App's manifest;
    /// after you confirm on GitHub, it comes back to that address with a code,
    /// exchanged for the App's id, private key, webhook secret and OAuth
    /// client secret.
    Create(GithubAppCreate),
}

/// `issueops github-app create` flags.
#[derive(Debug, Args)]
pub struct GithubAppCreate {
    /// Where GitHub sends webhooks: the gateway's public address, ending
    /// in /webhooks/github.
    #[arg(long)]
    pub webhook_url: String,
    /// Create it for this organization (you must own it); default: your
    /// own account.
    #[arg(long)]
    pub org: Option<String>,
    /// The App's name on GitHub (unique there).
    #[arg(long, default_value = "issueops")]
    pub name: String,
    /// Where the page and GitHub's redirect are answered (the staff UI's
    /// address; `serve` is not running yet).
    #[arg(long, env = "ISSUEOPS_UI_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: String,
    /// How the browser reaches --listen, when not directly.
    #[arg(long)]
    pub public_url: Option<String>,
    /// GitHub's web address (GitHub Enterprise: https://HOST).
    #[arg(long, default_value = "https://github.com")]
    pub web_url: String,
    /// GitHub's API (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, default_value = "https://api.github.com")]
    pub api_url: String,
    /// Folder for the credentials (created with mode 0700; files 0600,
    /// never overwritten).
    #[arg(long, default_value = "issueops-data/github-app")]
    pub out: std::path::PathBuf,
    /// Also write the Kubernetes Secrets deploy/ reads (issueops-github-app,
    /// issueops-webhook, issueops-ui-oauth) to this file, mode 0600.
    #[arg(long)]
    pub kubernetes_secret: Option<std::path::PathBuf>,
    /// Namespace of those Secrets.
    #[arg(long, default_value = "issueops-system")]
    pub namespace: String,
    /// How long to wait for GitHub's redirect.
    #[arg(long, default_value_t = 15)]
    pub wait_minutes: u64,
}

/// `issueops api-tokens ...`
#[derive(Debug, Subcommand)]
pub enum ApiTokensCommand {
    /// Make a token and print it (once: only its SHA-256 is stored).
    Create {
        /// What it is for (unique; how it is listed, revoked and named in
        /// the audit trail as "<name> (API token)").
        #[arg(long)]
        name: String,
        /// `viewer` reads; `approver` also decides (approve, deny, cancel,
        /// retry).
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Expires after this many days; without it, when revoked.
        #[arg(long)]
        expires_days: Option<u32>,
        /// Who asks, recorded in the audit table.
        #[arg(long, env = "USER", default_value = "operator")]
        actor: String,
    },
    /// Every token: name, role, who made it, when, and whether it is live.
    List,
    /// Revoke a token by name: it is refused from its next request.
    Revoke {
        name: String,
        #[arg(long, env = "USER", default_value = "operator")]
        actor: String,
    },
}

/// `issueops sessions ...`
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// End sessions at their next request (copies of the cookie included):
    /// one by the id `issueops sessions` shows, every session of a login, or
    /// all of them.
    Revoke {
        /// The session id as listed (a prefix of it is enough).
        #[arg(required_unless_present_any = ["login", "all"], conflicts_with_all = ["login", "all"])]
        id: Option<String>,
        /// Every session of this login.
        #[arg(long, conflicts_with = "all")]
        login: Option<String>,
        /// Every session.
        #[arg(long)]
        all: bool,
        /// Who asks, recorded in the audit table.
        #[arg(long, env = "USER", default_value = "operator")]
        actor: String,
    },
}

/// `issueops deliveries ...`
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Put a dead letter back in line (after fixing its cause), with a fresh
    /// count of attempts.
    Retry {
        /// The delivery id (X-GitHub-Delivery).
        id: String,
        /// Who asks, recorded in the audit table.
        #[arg(long, env = "USER", default_value = "operator")]
        actor: String,
    },
}

#[derive(Debug, Args)]
pub struct Common {
    /// Where the embedded defaults keep their files (SQLite database, local state repo).
    #[arg(
        long,
        env = "ISSUEOPS_DATA_DIR",
        default_value = "issueops-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB. Default: SQLite in the data dir.
    #[arg(
        long,
        env = "ISSUEOPS_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Services and `migrate` (serve, gateway, reconciler, migrate): keep trying an
    /// unreachable database this long, saying why and when the next try is,
    /// before giving up (a pod whose database starts after it). 0: give up
    /// at the first failure.
    #[arg(
        long,
        env = "ISSUEOPS_DATABASE_WAIT_SECONDS",
        global = true,
        default_value_t = 0
    )]
    pub database_wait_seconds: u64,
    /// State repo: a local path to a bare repo, or a remote URL (https://, git://, file://; not ssh://: git2 is built with HTTPS only).
    /// Default: a bare repo in the data dir.
    #[arg(long, env = "ISSUEOPS_STATE_REPO", global = true)]
    pub state_repo: Option<String>,
    /// Branch of the state repo holding the desired state.
    #[arg(
        long,
        env = "ISSUEOPS_STATE_BRANCH",
        default_value = "main",
        global = true
    )]
    pub state_branch: String,
    /// Optional YAML config file (repos, labels, images, limits, quotas).
    #[arg(long, env = "ISSUEOPS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Repositories (owner/name) that may trigger runs; added to the config file's list.
    #[arg(
        long = "repo",
        env = "ISSUEOPS_REPOS",
        value_delimiter = ',',
        global = true
    )]
    pub repos: Vec<String>,
    /// Logins whose triggers start runs at once; added to the config's
    /// `github.trigger_allowlist`. Without GitHub, everyone else then waits
    /// for an approver.
    #[arg(
        long = "allow",
        env = "ISSUEOPS_TRIGGER_ALLOWLIST",
        value_delimiter = ',',
        global = true
    )]
    pub allow: Vec<String>,
    /// Use templates from this directory instead of the embedded ones.
    #[arg(long, env = "ISSUEOPS_TEMPLATES_DIR", global = true)]
    pub templates_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "ISSUEOPS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Address the gateway listens on.
    #[arg(long, env = "ISSUEOPS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// File with webhook secrets, one per line (several allow rotation).
    #[arg(long, env = "ISSUEOPS_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Largest webhook body accepted, in bytes.
    #[arg(long, env = "ISSUEOPS_BODY_LIMIT", default_value_t = issueops_gateway::router::DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
}

#[derive(Debug, Args)]
pub struct OpsArgs {
    /// Address of `/metrics` (Prometheus text format), `/healthz` and
    /// `/readyz` for this process. Port 0 picks a free one (logged).
    #[arg(
        long,
        env = "ISSUEOPS_METRICS_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_listen: SocketAddr,
}

#[derive(Debug, Args)]
pub struct UiArgs {
    /// Address of the staff UI: never the webhook address. Without GitHub
    /// sign-in (`ui.github_oauth`) it must be a loopback address.
    #[arg(long, env = "ISSUEOPS_UI_LISTEN", default_value = "127.0.0.1:8081")]
    pub ui_listen: SocketAddr,
    /// Do not serve the staff UI.
    #[arg(long, env = "ISSUEOPS_NO_UI")]
    pub no_ui: bool,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Which Kubernetes API to apply to: `kube` (kubeconfig / in-cluster, must be
    /// reachable), `in-memory` (an in-process stand-in, nothing runs), or `auto`
    /// (kube when reachable, else the stand-in, said loudly).
    #[arg(long, env = "ISSUEOPS_CLUSTER", value_enum, default_value_t = ClusterMode::Auto)]
    pub cluster: ClusterMode,
    /// Seconds between reconciler cycles when nothing wakes it.
    #[arg(long, env = "ISSUEOPS_POLL_SECONDS", default_value_t = 10)]
    pub poll_seconds: u64,
    /// Seconds between full resyncs (drift correction, orphan deletion).
    #[arg(long, env = "ISSUEOPS_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ClusterMode {
    Auto,
    Kube,
    InMemory,
}
