//! The command line and the configuration file. Every setting has a flag, an environment
//! variable and a key in the TOML file given with `--config`; a flag or an environment
//! variable overrides the file, and the file overrides the default.
//!
//! | flag | environment | file key | default |
//! | --- | --- | --- | --- |
//! | `--config FILE` | `SHOAL_CONFIG` | | none |
//! | `--http ADDR` | `SHOAL_HTTP` | `http` | `127.0.0.1:8082` |
//! | `--cluster ADDR` | `SHOAL_CLUSTER` | `cluster` | `127.0.0.1:2551` |
//! | `--seed ADDR` (repeatable) | `SHOAL_SEEDS` (comma-separated) | `seeds = [..]` | none: form a cluster alone |
//! | `--role ROLE` (repeatable) | `SHOAL_ROLES` (comma-separated) | `roles = [..]` | `endpoint` and `entity` |
//! | `--store URL` | `SHOAL_STORE` | `store` | `sqlite:./data/artifact-state.db` |
//! | `--management ADDR` | `SHOAL_MANAGEMENT` | `management` | not served |
//! | `--secret SECRET` | `SHOAL_CLUSTER_SECRET` | `secret` | random (only for a node alone) |
//! | `--cluster-name NAME` | `SHOAL_CLUSTER_NAME` | `cluster-name` | `artifact-state` |
//! | `--ask-timeout-ms MS` | `SHOAL_ASK_TIMEOUT_MS` | `ask-timeout-ms` | `5000` |

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use shoal::store_url::StoreUrl;

/// The default HTTP address (the seed's port).
pub const DEFAULT_HTTP: &str = "127.0.0.1:8082";

/// The default store.
pub const DEFAULT_STORE: &str = "sqlite:./data/artifact-state.db";

/// The default cluster name.
pub const DEFAULT_CLUSTER_NAME: &str = "artifact-state";

/// What a node does. A node has one or both roles.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves the HTTP API and sends commands through sharding (a shard region proxy when
    /// the node is not also an `entity` node).
    Endpoint,
    /// Hosts the entities (its cluster role `entity`).
    Entity,
}

impl Role {
    /// The cluster role name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Endpoint => "endpoint",
            Role::Entity => "entity",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a node runs, after flags, environment, file and defaults are merged.
#[derive(Clone)]
pub struct Config {
    /// Where the HTTP API listens (only on `endpoint` nodes); port 0 picks a free one.
    pub http: String,
    /// Where the node listens for other nodes; port 0 picks a free one.
    pub cluster: SocketAddr,
    /// Seed nodes to join through; empty: form a cluster alone.
    pub seeds: Vec<SocketAddr>,
    /// The node's roles (never empty).
    pub roles: BTreeSet<Role>,
    /// The event store (PostgreSQL when several nodes share it).
    pub store: StoreUrl,
    /// Where the management HTTP listens, if it is served.
    pub management: Option<SocketAddr>,
    /// The cluster secret (at least 16 bytes), required when joining other nodes.
    pub secret: Option<String>,
    /// The cluster's name; nodes of another cluster are refused.
    pub cluster_name: String,
    /// How long a request waits for its entity before answering 503.
    pub ask_timeout: Duration,
    /// On shutdown, how long in-flight requests may take to finish.
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: DEFAULT_HTTP.to_owned(),
            cluster: shoal::node::DEFAULT_CLUSTER_ADDR.parse().expect("valid"),
            seeds: Vec::new(),
            roles: [Role::Endpoint, Role::Entity].into(),
            store: StoreUrl::parse(DEFAULT_STORE).expect("valid"),
            management: None,
            secret: None,
            cluster_name: DEFAULT_CLUSTER_NAME.to_owned(),
            ask_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("http", &self.http)
            .field("cluster", &self.cluster)
            .field("seeds", &self.seeds)
            .field("roles", &self.roles)
            .field("store", &self.store)
            .field("management", &self.management)
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .field("cluster_name", &self.cluster_name)
            .field("ask_timeout", &self.ask_timeout)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Whether this node serves the HTTP API.
    pub fn is_endpoint(&self) -> bool {
        self.roles.contains(&Role::Endpoint)
    }

    /// Whether this node hosts entities.
    pub fn is_entity(&self) -> bool {
        self.roles.contains(&Role::Entity)
    }
}

/// The command line of the `artifact-state` binary.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "artifact-state",
    version,
    about = "Seed 001's artifact-state service on a Shoal cluster",
    after_help = "Flags and environment variables override the --config file; the file \
                  overrides the defaults."
)]
pub struct Args {
    /// A TOML file with any of the keys http, cluster, seeds, roles, store, management,
    /// secret, cluster-name, ask-timeout-ms.
    #[arg(long, env = "SHOAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where the HTTP API listens, on endpoint nodes [default: 127.0.0.1:8082].
    #[arg(long, env = "SHOAL_HTTP", value_name = "ADDR")]
    pub http: Option<String>,

    /// Where the node listens for other nodes [default: 127.0.0.1:2551].
    #[arg(long, env = "SHOAL_CLUSTER", value_name = "ADDR")]
    pub cluster: Option<SocketAddr>,

    /// A seed node to join through (repeatable). None: this node forms a cluster alone.
    #[arg(
        long = "seed",
        env = "SHOAL_SEEDS",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub seeds: Vec<SocketAddr>,

    /// A role of this node (repeatable) [default: endpoint and entity].
    #[arg(
        long = "role",
        env = "SHOAL_ROLES",
        value_delimiter = ',',
        value_name = "ROLE"
    )]
    pub roles: Vec<Role>,

    /// The event store: `sqlite:PATH`, `postgres://…` (shared by a cluster's nodes) or
    /// `memory:` [default: sqlite:./data/artifact-state.db].
    #[arg(long, env = "SHOAL_STORE", value_name = "URL")]
    pub store: Option<StoreUrl>,

    /// Where the management HTTP (`/cluster/members`, `/ready`, `/alive`) listens
    /// [default: not served].
    #[arg(long, env = "SHOAL_MANAGEMENT", value_name = "ADDR")]
    pub management: Option<SocketAddr>,

    /// The shared cluster secret, at least 16 bytes (needed to join seed nodes).
    #[arg(
        long,
        env = "SHOAL_CLUSTER_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub secret: Option<String>,

    /// The cluster's name [default: artifact-state].
    #[arg(long, env = "SHOAL_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,

    /// How long a request waits for its entity before answering 503, in milliseconds
    /// [default: 5000].
    #[arg(long, env = "SHOAL_ASK_TIMEOUT_MS", value_name = "MS")]
    pub ask_timeout_ms: Option<u64>,
}

/// The `--config` file: the same settings as the flags, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// `http = "127.0.0.1:8082"`
    pub http: Option<String>,
    /// `cluster = "127.0.0.1:2551"`
    pub cluster: Option<SocketAddr>,
    /// `seeds = ["127.0.0.1:2551"]`
    #[serde(alias = "seed")]
    pub seeds: Option<Vec<SocketAddr>>,
    /// `roles = ["endpoint", "entity"]`
    #[serde(alias = "role")]
    pub roles: Option<Vec<Role>>,
    /// `store = "postgres://…"`
    pub store: Option<String>,
    /// `management = "127.0.0.1:8558"`
    pub management: Option<SocketAddr>,
    /// `secret = "…"`
    pub secret: Option<String>,
    /// `cluster-name = "artifact-state"`
    pub cluster_name: Option<String>,
    /// `ask-timeout-ms = 5000`
    pub ask_timeout_ms: Option<u64>,
}

impl FileConfig {
    /// Reads and parses a configuration file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the config file {}", path.display()))
    }

    /// Parses a configuration file's text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }
}

impl Args {
    /// The configuration: these flags over the `--config` file (if any) over the defaults.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        self.merge(file)
    }

    /// These flags over `file` over the defaults.
    pub fn merge(&self, file: FileConfig) -> anyhow::Result<Config> {
        let defaults = Config::default();
        let store = match (&self.store, &file.store) {
            (Some(url), _) => url.clone(),
            (None, Some(url)) => {
                StoreUrl::parse(url).with_context(|| format!("store {url:?} in the config file"))?
            }
            (None, None) => defaults.store,
        };
        let roles: BTreeSet<Role> = if !self.roles.is_empty() {
            self.roles.iter().copied().collect()
        } else {
            file.roles.unwrap_or_default().into_iter().collect()
        };
        let ask_timeout_ms = self.ask_timeout_ms.or(file.ask_timeout_ms);
        if ask_timeout_ms == Some(0) {
            anyhow::bail!("the ask timeout must be at least 1 ms");
        }
        Ok(Config {
            http: self.http.clone().or(file.http).unwrap_or(defaults.http),
            cluster: self.cluster.or(file.cluster).unwrap_or(defaults.cluster),
            seeds: if self.seeds.is_empty() {
                file.seeds.unwrap_or_default()
            } else {
                self.seeds.clone()
            },
            roles: if roles.is_empty() {
                defaults.roles
            } else {
                roles
            },
            store,
            management: self.management.or(file.management),
            secret: self.secret.clone().or(file.secret),
            cluster_name: self
                .cluster_name
                .clone()
                .or(file.cluster_name)
                .unwrap_or(defaults.cluster_name),
            ask_timeout: ask_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.ask_timeout),
            shutdown_timeout: defaults.shutdown_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Args {
        let mut all = vec!["artifact-state"];
        all.extend_from_slice(args);
        Args::try_parse_from(all).unwrap()
    }

    #[test]
    fn no_flags_is_a_complete_single_node() {
        let config = Args::default().resolve().unwrap();
        assert_eq!(config.http, "127.0.0.1:8082");
        assert_eq!(config.cluster.to_string(), "127.0.0.1:2551");
        assert!(config.seeds.is_empty());
        assert!(config.is_endpoint() && config.is_entity());
        assert_eq!(
            config.store,
            StoreUrl::Sqlite("./data/artifact-state.db".into())
        );
        assert_eq!(config.management, None);
        assert_eq!(config.ask_timeout, Duration::from_secs(5));
    }

    #[test]
    fn flags_are_parsed() {
        let args = parse(&[
            "--http",
            "0.0.0.0:9000",
            "--cluster",
            "127.0.0.1:2600",
            "--seed",
            "127.0.0.1:2600",
            "--seed",
            "127.0.0.1:2601,127.0.0.1:2602",
            "--role",
            "endpoint",
            "--store",
            "memory:",
            "--management",
            "127.0.0.1:8600",
            "--secret",
            "0123456789abcdef",
            "--ask-timeout-ms",
            "250",
        ]);
        let config = args.resolve().unwrap();
        assert_eq!(config.http, "0.0.0.0:9000");
        assert_eq!(config.seeds.len(), 3);
        assert_eq!(config.roles, [Role::Endpoint].into());
        assert_eq!(config.store, StoreUrl::Memory);
        assert_eq!(config.management, Some("127.0.0.1:8600".parse().unwrap()));
        assert_eq!(config.secret.as_deref(), Some("0123456789abcdef"));
        assert_eq!(config.ask_timeout, Duration::from_millis(250));
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            &["--role", "worker"][..],
            &["--store", "cassandra://x"],
            &["--cluster", "nowhere"],
            &["--seed", "127.0.0.1"],
        ] {
            let mut all = vec!["artifact-state"];
            all.extend_from_slice(bad);
            assert!(Args::try_parse_from(all).is_err(), "{bad:?}");
        }
        assert!(parse(&["--ask-timeout-ms", "0"]).resolve().is_err());
    }

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let file = FileConfig::parse(
            r#"
            http = "127.0.0.1:9082"
            cluster = "127.0.0.1:2552"
            seeds = ["127.0.0.1:2551", "127.0.0.1:2552"]
            roles = ["entity"]
            store = "postgres://app@db/artifacts"
            management = "127.0.0.1:8559"
            secret = "from-the-file-0123456789"
            ask-timeout-ms = 2000
            "#,
        )
        .unwrap();
        let config = parse(&["--cluster", "127.0.0.1:2553", "--role", "endpoint"])
            .merge(file)
            .unwrap();
        assert_eq!(config.http, "127.0.0.1:9082");
        assert_eq!(config.cluster.to_string(), "127.0.0.1:2553");
        assert_eq!(config.seeds.len(), 2);
        assert_eq!(config.roles, [Role::Endpoint].into());
        assert_eq!(
            config.store,
            StoreUrl::Postgres("postgres://app@db/artifacts".into())
        );
        assert_eq!(config.management, Some("127.0.0.1:8559".parse().unwrap()));
        assert_eq!(config.secret.as_deref(), Some("from-the-file-0123456789"));
        assert_eq!(config.ask_timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(FileConfig::parse("htp = \"x\"").is_err(), "unknown key");
        assert!(FileConfig::parse("roles = [\"worker\"]").is_err());
        assert!(FileConfig::parse("cluster = \"nowhere\"").is_err());
        let file = FileConfig::parse("store = \"cassandra://x\"").unwrap();
        assert!(Args::default().merge(file).is_err());
    }

    #[test]
    fn the_shipped_config_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for name in ["single.toml", "endpoint.toml", "entity.toml"] {
            let file = FileConfig::read(&dir.join(name)).unwrap();
            let config = Args::default().merge(file).unwrap();
            match name {
                "endpoint.toml" => assert_eq!(config.roles, [Role::Endpoint].into()),
                "entity.toml" => assert_eq!(config.roles, [Role::Entity].into()),
                _ => assert_eq!(config.roles, [Role::Endpoint, Role::Entity].into()),
            }
        }
    }
}
