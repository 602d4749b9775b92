//! Choosing a store by URL, for services that take it from a flag or the environment.
//!
//! | URL | store |
//! | --- | --- |
//! | `memory:` | a fresh [`MemoryStore`]: lost when the process exits |
//! | `sqlite:PATH` (also `sqlite://PATH`) | the embedded SQLite store at `PATH`, parent directories created |
//! | `postgres://…`, `postgresql://…` | the PostgreSQL store (schema created on first use), shared by every node of a cluster |
//!
//! `PATH` is a file system path, relative to the working directory unless it starts with
//! `/`: `sqlite:./data/cart.db`, `sqlite:/var/lib/shoal/cart.db` and
//! `sqlite:///var/lib/shoal/cart.db` all work.
//!
//! ```
//! # #[tokio::main] async fn main() {
//! use shoal::store_url::{StoreUrl, StoreUrlError, open_store};
//!
//! let store = open_store("memory:").await.unwrap();
//! # drop(store);
//! assert!(matches!(StoreUrl::parse("sqlite:./data/cart.db"), Ok(StoreUrl::Sqlite(_))));
//! assert!(matches!(StoreUrl::parse("postgres://app@db/shoal"), Ok(StoreUrl::Postgres(_))));
//! assert!(matches!(StoreUrl::parse("cassandra://db"), Err(StoreUrlError::UnknownScheme { .. })));
//! # }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use shoal_persistence::memory::MemoryStore;
use shoal_persistence::store::Store;

/// What a store URL names, after parsing and before opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `memory:` — an in-process [`MemoryStore`].
    Memory,
    /// `sqlite:PATH` — the SQLite database file at `PATH`.
    Sqlite(PathBuf),
    /// `postgres://…` — a PostgreSQL database (the URL as given; shown with its password
    /// hidden).
    Postgres(String),
}

impl StoreUrl {
    /// Parses a store URL (see the [module docs](self) for the accepted forms).
    pub fn parse(url: &str) -> Result<Self, StoreUrlError> {
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Err(StoreUrlError::Empty);
        }
        let Some((scheme, rest)) = trimmed.split_once(':') else {
            return Err(StoreUrlError::UnknownScheme {
                url: url.to_owned(),
            });
        };
        match scheme.to_ascii_lowercase().as_str() {
            "memory" | "mem" => {
                let rest = rest.trim_start_matches("//");
                if rest.is_empty() {
                    Ok(StoreUrl::Memory)
                } else {
                    Err(StoreUrlError::Invalid {
                        url: url.to_owned(),
                        reason: "`memory:` takes no path".to_owned(),
                    })
                }
            }
            "sqlite" => {
                // `sqlite://PATH` is the same as `sqlite:PATH`; `sqlite:///abs` is `/abs`.
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err(StoreUrlError::Invalid {
                        url: url.to_owned(),
                        reason: "`sqlite:` needs a file path, e.g. `sqlite:./data/shoal.db`"
                            .to_owned(),
                    });
                }
                if path.ends_with('/') {
                    return Err(StoreUrlError::Invalid {
                        url: url.to_owned(),
                        reason: "the SQLite path names a directory; name a file in it".to_owned(),
                    });
                }
                Ok(StoreUrl::Sqlite(PathBuf::from(path)))
            }
            "postgres" | "postgresql" => {
                if rest.strip_prefix("//").is_none_or(str::is_empty) {
                    return Err(StoreUrlError::Invalid {
                        url: redact(url),
                        reason: "expected `postgres://[user[:password]@]host[:port]/database`"
                            .to_owned(),
                    });
                }
                Ok(StoreUrl::Postgres(trimmed.to_owned()))
            }
            _ => Err(StoreUrlError::UnknownScheme {
                url: url.to_owned(),
            }),
        }
    }

    /// Opens the store this URL names. For SQLite, creates the parent directories of the
    /// database file first.
    pub async fn open(&self) -> Result<Arc<dyn Store>, StoreUrlError> {
        match self {
            StoreUrl::Memory => Ok(Arc::new(MemoryStore::new())),
            StoreUrl::Sqlite(path) => open_sqlite(path).await,
            StoreUrl::Postgres(url) => {
                let store = shoal_postgres::PostgresStore::connect_url(url)
                    .await
                    .map_err(|source| StoreUrlError::Postgres {
                        url: redact(url),
                        source: Box::new(source),
                    })?;
                Ok(Arc::new(store) as Arc<dyn Store>)
            }
        }
    }
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StoreUrl::parse(s)
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Memory => f.write_str("memory:"),
            StoreUrl::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreUrl::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// Parses `url` and opens the store it names: `memory:`, `sqlite:PATH` or `postgres://…`.
///
/// For SQLite the parent directories of `PATH` are created if missing, and the database
/// (with its schema) if it does not exist yet.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreUrlError> {
    StoreUrl::parse(url)?.open().await
}

async fn open_sqlite(path: &Path) -> Result<Arc<dyn Store>, StoreUrlError> {
    let path = path.to_path_buf();
    // Opening touches the file system and SQLite synchronously: keep it off the async workers.
    let opened = tokio::task::spawn_blocking(move || {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreUrlError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let store =
            shoal_sqlite::SqliteStore::open(&path).map_err(|source| StoreUrlError::Sqlite {
                path,
                source: Box::new(source),
            })?;
        Ok(Arc::new(store) as Arc<dyn Store>)
    })
    .await;
    match opened {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

/// Hides a password in `scheme://user:password@host…` so errors can be logged.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Why a store URL could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreUrlError {
    /// The URL is empty.
    #[error("the store URL is empty; use `memory:`, `sqlite:PATH` or `postgres://…`")]
    Empty,
    /// The scheme is not one Shoal knows.
    #[error("unknown store URL {url:?}; use `memory:`, `sqlite:PATH` or `postgres://…`")]
    UnknownScheme {
        /// The URL as given.
        url: String,
    },
    /// A known scheme with a malformed rest.
    #[error("invalid store URL {url:?}: {reason}")]
    Invalid {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The directory for the database file could not be created.
    #[error("cannot create directory {} for the store: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The SQLite store could not be opened.
    #[error("cannot open the SQLite store at {}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// Why (boxed: SQLite's error is large).
        #[source]
        source: Box<shoal_sqlite::SqliteError>,
    },
    /// The PostgreSQL store could not be opened (unreachable server, bad credentials, schema
    /// refused).
    #[error("cannot open the PostgreSQL store at {url}: {source}")]
    Postgres {
        /// The URL, password hidden.
        url: String,
        /// Why.
        #[source]
        source: Box<shoal_postgres::PostgresError>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_accepted_forms() {
        assert_eq!(StoreUrl::parse("memory:").unwrap(), StoreUrl::Memory);
        assert_eq!(StoreUrl::parse("memory://").unwrap(), StoreUrl::Memory);
        assert_eq!(
            StoreUrl::parse("sqlite:./data/x.db").unwrap(),
            StoreUrl::Sqlite("./data/x.db".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/x.db").unwrap(),
            StoreUrl::Sqlite("/var/lib/x.db".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite://x.db").unwrap(),
            StoreUrl::Sqlite("x.db".into())
        );
        assert_eq!(
            StoreUrl::parse("SQLite:/tmp/x.db").unwrap().to_string(),
            "sqlite:/tmp/x.db"
        );
    }

    #[test]
    fn refuses_everything_else_with_a_typed_error() {
        assert!(matches!(StoreUrl::parse(""), Err(StoreUrlError::Empty)));
        assert!(matches!(StoreUrl::parse("  "), Err(StoreUrlError::Empty)));
        for url in ["cassandra://x", "nonsense", "file:/tmp/x", "redis://h"] {
            assert!(
                matches!(
                    StoreUrl::parse(url),
                    Err(StoreUrlError::UnknownScheme { .. })
                ),
                "{url}"
            );
        }
        for url in ["sqlite:", "sqlite://", "sqlite:/tmp/", "memory:/x"] {
            assert!(
                matches!(StoreUrl::parse(url), Err(StoreUrlError::Invalid { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn postgres_urls_parse_and_hide_the_password() {
        let url = StoreUrl::parse("postgres://app:s3cret@db:5432/shoal").unwrap();
        assert_eq!(
            url,
            StoreUrl::Postgres("postgres://app:s3cret@db:5432/shoal".into())
        );
        assert_eq!(url.to_string(), "postgres://app:***@db:5432/shoal");
        assert!(matches!(
            StoreUrl::parse("postgresql://db/shoal"),
            Ok(StoreUrl::Postgres(_))
        ));
        let err = StoreUrl::parse("postgres:").unwrap_err();
        assert!(matches!(err, StoreUrlError::Invalid { .. }), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_postgres_is_a_typed_error_without_the_password() {
        // Port 1 on loopback: nothing listens there.
        let err = open_store("postgres://app:s3cret@127.0.0.1:1/shoal")
            .await
            .err()
            .expect("no server on port 1");
        let msg = err.to_string();
        assert!(matches!(err, StoreUrlError::Postgres { .. }), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
    }

    #[tokio::test]
    async fn opens_memory_and_sqlite_creating_directories() {
        let store = open_store("memory:").await.unwrap();
        assert_eq!(
            store
                .highest_seq_nr(shoal_persistence::store::PersistenceId::new("a|b").unwrap())
                .await
                .unwrap(),
            0
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nested/deeper/shoal.db");
        let url = format!("sqlite:{}", file.display());
        let store = open_store(&url).await.unwrap();
        assert_eq!(
            store
                .highest_seq_nr(shoal_persistence::store::PersistenceId::new("a|b").unwrap())
                .await
                .unwrap(),
            0
        );
        assert!(file.exists(), "the database file is created");
    }

    #[tokio::test]
    async fn reports_an_uncreatable_directory() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let url = format!("sqlite:{}/sub/shoal.db", blocker.display());
        let Err(err) = open_store(&url).await else {
            panic!("a path under a regular file cannot be opened");
        };
        assert!(matches!(err, StoreUrlError::CreateDir { .. }), "{err}");
    }
}
