//! Configuration: built-in defaults, then `orderflow.toml` (or `--config FILE`), then
//! `ORDERFLOW_*` environment variables (nested keys with `__`:
//! `ORDERFLOW_ERP__DEFAULT_MODE=wait`), then command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use oms::bindings::{Bindings, CommandBinding, ConditionBinding, TimeoutProcessorBinding};
use oms::parse::LoadOptions;
use serde::{Deserialize, Serialize};

pub mod duration;
mod sections;

pub use sections::{
    ClientConfig, EffectsConfig, ErpConfig, ErpMode, EventConfig, EventPolicy, InboxConfig,
    OutboundConfig, ProjectorConfig, RabbitConfig, RedisConfig, ServerConfig, SubscriptionsConfig,
    TransportKind, WorkerConfig,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("invalid duration {value:?} for {key}: {reason}")]
    Duration {
        key: String,
        value: String,
        reason: String,
    },
    #[error("clients.{0}.rate_limit_per_second must be at least 1 (leave it out for no limit)")]
    ZeroRateLimit(String),
    #[error("commands.\"{name}\".{key}: {reason}")]
    HttpCommand {
        name: String,
        key: &'static str,
        reason: String,
    },
    #[error("subscriptions.{0}")]
    Subscriptions(&'static str),
    #[error("{0}")]
    Inbox(String),
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// `ORDERFLOW_*` variables that are not configuration (the tests' own).
const NOT_CONFIG_ENV: [&str; 3] = ["test_database_url", "corpus_dir", "test_flood_addr"];

/// The effective configuration. An unknown key, in the file or in `ORDERFLOW_*`, is an
/// error that names it and where it came from: a misspelt setting must not silently
/// change nothing.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `sqlite://FILE` (created if missing) or `postgres://...`.
    pub database_url: String,
    /// Address `serve` listens on.
    pub listen: SocketAddr,
    /// Folder with the process definitions (`*.xml` with `<process main="true">`).
    pub processes: PathBuf,
    /// Refuse to start when a process uses a condition or command nothing is bound to.
    /// Otherwise start with a warning; such items stay where they are and the reason is
    /// recorded in their history.
    pub strict: bool,
    /// Largest request body accepted, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Connection limits and timeouts of the HTTP server.
    pub server: ServerConfig,
    /// How ERP updates are answered.
    pub erp: ErpConfig,
    /// Per OMS event name: what to do with an ERP update whose event does not apply.
    pub events: BTreeMap<String, EventConfig>,
    /// The inbox worker and the check-condition loop.
    pub worker: WorkerConfig,
    /// Where accepted ERP updates wait: the database (default) or a message broker.
    pub inbox: InboxConfig,
    /// The list projection.
    pub projector: ProjectorConfig,
    /// The HTTP client of outbound requests, and the address guard.
    pub outbound: OutboundConfig,
    /// The executor of after-commit effects (HTTP commands).
    pub effects: EffectsConfig,
    /// Order events sent to subscribers.
    pub subscriptions: SubscriptionsConfig,
    /// Optional per-client limits, by client name.
    pub clients: BTreeMap<String, ClientConfig>,
    /// Built-in conditions bound by name (`[conditions."Payment/IsAuthorized"]`).
    pub conditions: BTreeMap<String, ConditionBinding>,
    /// Built-in commands bound by name (`[commands."Erp/MarkExported"]`).
    pub commands: BTreeMap<String, CommandBinding>,
    /// Built-in timeout processors bound by the name an event's `timeoutProcessor="..."`
    /// uses (`[timeout_processors."OmsTimeout/Initiation"]`).
    pub timeout_processors: BTreeMap<String, TimeoutProcessorBinding>,
    /// The state new items of a process enter, by process name (`Recur01 = "draft"`).
    /// Without an entry: `new` when the process defines it, else the one state no
    /// transition enters (see `oms::parse::LoadOptions`).
    pub initial_states: BTreeMap<String, String>,
    /// The file this configuration was read from, if any (for the start log).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "sqlite://orderflow.db".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            processes: PathBuf::from("processes"),
            strict: false,
            max_body_bytes: 1024 * 1024,
            server: ServerConfig::default(),
            erp: ErpConfig::default(),
            events: BTreeMap::new(),
            worker: WorkerConfig::default(),
            inbox: InboxConfig::default(),
            projector: ProjectorConfig::default(),
            outbound: OutboundConfig::default(),
            effects: EffectsConfig::default(),
            subscriptions: SubscriptionsConfig::default(),
            clients: BTreeMap::new(),
            conditions: BTreeMap::new(),
            commands: BTreeMap::new(),
            timeout_processors: BTreeMap::new(),
            initial_states: BTreeMap::new(),
            file: None,
        }
    }
}

/// Parses a duration given outside configuration (a CLI flag), naming it in the error.
pub fn duration(key: &str, value: &str) -> Result<Duration> {
    duration::parse(value).map_err(|reason| ConfigError::Duration {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    })
}

impl Config {
    /// Loads defaults < `file` (or `./orderflow.toml` when present) < `ORDERFLOW_*` env.
    /// A file given explicitly must exist.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("orderflow.toml").exists() => {
                figment = figment.merge(Toml::file_exact("orderflow.toml"));
            }
            None => {}
        }
        // Every other ORDERFLOW_* variable is configuration, so a misspelt one is an
        // error; these few are read by the tests, not by the service.
        let env = Env::prefixed("ORDERFLOW_")
            .ignore(&NOT_CONFIG_ENV)
            .split("__");
        figment = figment.merge(env);
        let mut config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        config.file = match file {
            Some(path) => Some(path.to_owned()),
            None => Some(PathBuf::from("orderflow.toml")).filter(|p| p.exists()),
        };
        Ok(config)
    }

    /// `--inbox-url`: `amqp://` or `amqps://` selects the RabbitMQ transport with that URL,
    /// `redis://` or `rediss://` the Redis transport.
    pub fn set_inbox_url(&mut self, url: &str) -> Result<()> {
        if url.starts_with("amqp://") || url.starts_with("amqps://") {
            self.inbox.transport = TransportKind::Rabbitmq;
            self.inbox.rabbitmq.url = url.to_owned();
            return self.validate();
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            self.inbox.transport = TransportKind::Redis;
            self.inbox.redis.url = url.to_owned();
            return self.validate();
        }
        Err(ConfigError::Inbox(format!(
            "--inbox-url {}: expected amqp://... (RabbitMQ) or redis://... (Redis)",
            mask_url_password(url)
        )))
    }

    fn validate(&self) -> Result<()> {
        for (name, c) in &self.clients {
            if c.rate_limit_per_second == Some(0) {
                return Err(ConfigError::ZeroRateLimit(name.clone()));
            }
        }
        for (name, binding) in &self.commands {
            crate::outbound::effects::HttpTarget::from_binding(binding).map_err(
                |(key, reason)| ConfigError::HttpCommand {
                    name: name.clone(),
                    key,
                    reason,
                },
            )?;
        }
        let subs = &self.subscriptions;
        if subs.retry_schedule.is_empty() {
            return Err(ConfigError::Subscriptions(
                "retry_schedule needs at least one entry (the first attempt)",
            ));
        }
        if subs.concurrency == 0 || subs.batch_size == 0 {
            return Err(ConfigError::Subscriptions(
                "concurrency and batch_size must be at least 1",
            ));
        }
        if subs.lease <= subs.timeout {
            return Err(ConfigError::Subscriptions(
                "lease must be longer than timeout (else a slow attempt is sent twice at once)",
            ));
        }
        let rabbit = &self.inbox.rabbitmq;
        let redis = &self.inbox.redis;
        match self.inbox.transport {
            TransportKind::Database => {}
            TransportKind::Redis if redis.shards == 0 || redis.batch == 0 => {
                return Err(ConfigError::Inbox(
                    "inbox.redis.shards and inbox.redis.batch must be at least 1".into(),
                ));
            }
            TransportKind::Redis if redis.lease < Duration::from_secs(1) => {
                return Err(ConfigError::Inbox(
                    "inbox.redis.lease must be at least 1s".into(),
                ));
            }
            TransportKind::Redis
                if redis
                    .accept_loss
                    .as_deref()
                    .is_some_and(|s| s.trim().is_empty()) =>
            {
                return Err(ConfigError::Inbox(
                    "inbox.redis.accept_loss must say what loss is accepted (or be left out)"
                        .into(),
                ));
            }
            TransportKind::Redis => {}
            TransportKind::Rabbitmq if rabbit.shards == 0 || rabbit.prefetch == 0 => {
                return Err(ConfigError::Inbox(
                    "inbox.rabbitmq.shards and inbox.rabbitmq.prefetch must be at least 1".into(),
                ));
            }
            TransportKind::Rabbitmq if rabbit.in_transit_ttl < Duration::from_secs(1) => {
                return Err(ConfigError::Inbox(
                    "inbox.rabbitmq.in_transit_ttl must be at least 1s".into(),
                ));
            }
            TransportKind::Rabbitmq => {}
        }
        Ok(())
    }

    /// The plugin bindings for [`oms::Registry::bind`].
    pub fn bindings(&self) -> Bindings {
        Bindings {
            conditions: self.conditions.clone(),
            commands: self.commands.clone(),
            timeout_processors: self.timeout_processors.clone(),
        }
    }

    /// How process files are loaded: the configured initial states.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            initial_states: self.initial_states.clone(),
            ..LoadOptions::default()
        }
    }

    /// The configuration as TOML with secrets masked, for `orderflow config`.
    pub fn to_masked_toml(&self) -> String {
        let mut masked = self.clone();
        masked.database_url = mask_url_password(&self.database_url);
        // The batch size its database gets when none is set.
        if let Ok(backend) = crate::store::Backend::of_url(&self.database_url) {
            masked.worker.batch_size = Some(self.worker.batch_size(backend));
        }
        // An HTTP command's headers may carry credentials (`Authorization`).
        for binding in masked.commands.values_mut() {
            if let CommandBinding::Http { headers, .. } = binding {
                for value in headers.values_mut() {
                    *value = "****".into();
                }
            }
        }
        masked.inbox.rabbitmq.url = mask_url_password(&self.inbox.rabbitmq.url);
        masked.inbox.redis.url = mask_url_password(&self.inbox.redis.url);
        toml::to_string_pretty(&masked).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:****@host/db`.
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:****"),
        None => userinfo.to_owned(),
    };
    let mut out = format!("{scheme}://{user}@{host}{tail}");
    // Passwords may also come as a query parameter (`?password=...`).
    if let Some(i) = out.find("password=") {
        let start = i + "password=".len();
        let end = out[start..].find('&').map_or(out.len(), |j| start + j);
        out.replace_range(start..end, "****");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_password_in_url() {
        assert_eq!(
            mask_url_password("postgres://app:s3cret@db:5432/of"),
            "postgres://app:****@db:5432/of"
        );
        assert_eq!(
            mask_url_password("postgres://app@db/of"),
            "postgres://app@db/of"
        );
        assert_eq!(
            mask_url_password("sqlite://orderflow.db"),
            "sqlite://orderflow.db"
        );
    }

    #[test]
    fn a_bad_duration_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orderflow.toml");
        std::fs::write(&path, "[worker]\nlease = \"5 parsecs\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("worker.lease"), "{err}");
        assert!(err.contains("5 parsecs"), "{err}");
        std::fs::write(&path, "[worker]\nlease = 45\nbackoff_max = \"2h\"\n").unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.worker.lease, Duration::from_secs(45));
        assert_eq!(c.worker.backoff_max, Duration::from_secs(7200));
        std::fs::write(&path, "[worker]\nlease = -1\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("negative") && err.contains("worker.lease"),
            "{err}"
        );
        assert_eq!(
            duration("--grace", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert!(
            duration("--grace", "5 parsecs")
                .unwrap_err()
                .to_string()
                .contains("--grace")
        );
    }

    #[test]
    fn defaults_render_and_validate() {
        let c = Config::default();
        c.validate().unwrap();
        let text = c.to_masked_toml();
        assert!(
            text.contains("database_url = \"sqlite://orderflow.db\""),
            "{text}"
        );
        assert!(text.contains("[erp]"), "{text}");
    }

    #[test]
    fn initial_states_and_timeout_processors_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orderflow.toml");
        std::fs::write(
            &path,
            "[initial_states]\nRecur01 = \"draft\"\n\n\
             [timeout_processors.\"OmsTimeout/Initiation\"]\ntype = \"attribute\"\n\
             path = \"created_at\"\noffset = \"30days\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(
            c.load_options().initial_for("Recur01"),
            Some("draft"),
            "{c:?}"
        );
        assert_eq!(c.load_options().initial_for("Other01"), None);
        assert!(
            c.bindings()
                .timeout_processors
                .contains_key("OmsTimeout/Initiation")
        );
        assert!(c.to_masked_toml().contains("[initial_states]"));
    }

    #[test]
    fn inbox_transport_is_chosen_and_its_password_masked() {
        let mut c = Config::default();
        assert_eq!(c.inbox.transport, TransportKind::Database);
        c.set_inbox_url("amqp://app:s3cret@mq:5672/%2f").unwrap();
        assert_eq!(c.inbox.transport, TransportKind::Rabbitmq);
        let text = c.to_masked_toml();
        assert!(text.contains("transport = \"rabbitmq\""), "{text}");
        assert!(text.contains("amqp://app:****@mq:5672/%2f"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        c.set_inbox_url("redis://:r3dispw@cache:6379/2").unwrap();
        assert_eq!(c.inbox.transport, TransportKind::Redis);
        let text = c.to_masked_toml();
        assert!(text.contains("transport = \"redis\""), "{text}");
        assert!(text.contains("redis://:****@cache:6379/2"), "{text}");
        assert!(!text.contains("r3dispw"), "{text}");
        c.inbox.redis.accept_loss = Some(" ".into());
        let err = c.set_inbox_url("redis://cache").unwrap_err().to_string();
        assert!(err.contains("accept_loss"), "{err}");
        let err = c.set_inbox_url("http://x").unwrap_err().to_string();
        assert!(err.contains("amqp://"), "{err}");
    }

    #[test]
    fn a_zero_rate_limit_is_refused() {
        let mut c = Config::default();
        c.clients.insert(
            "erp-sap".into(),
            ClientConfig {
                rate_limit_per_second: Some(0),
            },
        );
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("clients.erp-sap.rate_limit_per_second"),
            "{err}"
        );
    }
}
