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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;
use shoal::store_url::StoreUrl;
use shoal_service::{NodeArgs, ServiceConfig, ServiceDefaults};

pub use shoal_service::Role;

/// The artifact-state service's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Defaults;

impl ServiceDefaults for Defaults {
    const HTTP: &'static str = "127.0.0.1:8082";
    const STORE: &'static str = "sqlite:./data/artifact-state.db";
    const CLUSTER_NAME: &'static str = "artifact-state";
}

/// How a node runs, after flags, environment, file and defaults are merged.
pub type Config = ServiceConfig<Defaults>;

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

    /// The flags every Shoal service shares (cluster, seeds, roles, store, …).
    #[command(flatten)]
    pub node: NodeArgs,
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

    /// The defaults with this file's settings over them (the store only when `store` is
    /// set here and not given as a flag).
    fn over_defaults(self, store_flag: bool) -> anyhow::Result<Config> {
        let store = match self.store.filter(|_| !store_flag) {
            Some(url) => Some(
                StoreUrl::parse(&url)
                    .with_context(|| format!("store {url:?} in the config file"))?,
            ),
            None => None,
        };
        // The file's keys are the flags' names: they apply over the defaults as flags would.
        let mut config = NodeArgs {
            cluster: self.cluster,
            seeds: self.seeds.unwrap_or_default(),
            roles: self.roles.unwrap_or_default(),
            store,
            management: self.management,
            secret: self.secret,
            cluster_name: self.cluster_name,
            ask_timeout_ms: self.ask_timeout_ms,
        }
        .over(Config::default());
        if let Some(http) = self.http {
            config.http = http;
        }
        Ok(config)
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
        if self.node.ask_timeout_ms.or(file.ask_timeout_ms) == Some(0) {
            anyhow::bail!("the ask timeout must be at least 1 ms");
        }
        let mut config = file.over_defaults(self.node.store.is_some())?;
        self.node.apply_to(&mut config);
        if let Some(http) = &self.http {
            config.http = http.clone();
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

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
