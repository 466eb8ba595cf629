//! Configuration: a TOML file (`--config`) overlaid by `TOLLGATE_*`
//! environment variables (env wins), parsed strictly in two steps. The raw
//! form mirrors the file and refuses unknown keys; [`Config`] is what the
//! program uses, with every default filled in and every value checked.
//! Errors name the key or variable at fault and never echo a secret.
//!
//! Besides `TOLLGATE_*`, the platform's provider keys are read from their
//! usual variables (`OPENAI_API_KEY`, …; see [`ProviderConfig`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tollgate_domain::{KnownProvider, ProviderName, SecretString};
use tollgate_store::StoreConfig;
use tollgate_vault::MasterKey;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
pub const DEFAULT_DATA_DIR: &str = "./tollgate-data";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The settings the service runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub redis_url: Option<SecretString>,
    /// The start of every key Tollgate writes in Redis (so that several
    /// deployments can share one Redis).
    pub redis_prefix: String,
    /// The admin token, when the operator sets one; otherwise one is
    /// generated at first start and only its hash is kept.
    pub admin_token: Option<SecretString>,
    /// The vault's master key, when set; otherwise the key file in the data
    /// directory is used, created at first start.
    pub master_key: Option<MasterKey>,
    /// Retired master keys, still allowed to decrypt (during a rotation).
    pub master_keys_old: Vec<MasterKey>,
    /// Upstream providers by name: the built-in ones and any configured.
    pub providers: BTreeMap<String, ProviderConfig>,
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `tollgate=debug`.
    pub log_level: String,
    /// How long a verified key is trusted without asking the store again:
    /// the longest time another instance may still accept a revoked key.
    pub key_cache_ttl: Duration,
    pub key_cache_capacity: usize,
    /// Failed authentications allowed per client IP in one window.
    pub auth_failure_limit: u32,
    pub auth_failure_window: Duration,
    /// Take the client IP from `X-Forwarded-For` (behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// How often last-used times are written to the store.
    pub last_used_flush: Duration,
    /// Raw events older than this many days are deleted (rollups stay).
    pub retention_days: Option<u32>,
    /// How long an unsettled reservation holds quota.
    pub reservation_ttl: Duration,
    /// The size at which the SQLite store's usage journal is emptied (once
    /// everything in it is in the ledger).
    pub usage_journal_max_bytes: u64,
    /// Anonymous demo mode, when enabled.
    pub anonymous: Option<Anonymous>,
    /// Model prices that replace or add to the built-in list.
    pub prices: Vec<(String, tollgate_domain::pricing::Price)>,
    /// The web pages: `/ui` and `/portal`.
    pub web: Web,
    /// The LLM gateway: routing and upstream timeouts.
    pub gateway: GatewayConfig,
    /// Outbound webhooks, e-mail alerts and inbound Stripe events.
    pub hooks: HooksConfig,
}

/// Settings of the admin dashboard and the user portal.
#[derive(Clone, Debug)]
pub struct Web {
    /// How browsers reach this service (`https://tollgate.example.com`), for
    /// the links portal sessions return and for `Secure` cookies; when
    /// unset, the request's own `Host` is used.
    pub public_url: Option<String>,
    /// Where the portal's upgrade button goes (the app's billing page or a
    /// Stripe payment link); `plan` and `user_id` are added to its query.
    pub upgrade_url: Option<String>,
    /// How long a one-time portal link can be opened.
    pub portal_link_ttl: Duration,
    /// How long a signed-in web session lasts.
    pub session_ttl: Duration,
}

/// How the gateway routes models and waits for providers.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Where bare model names on the OpenAI-format routes go.
    pub default_provider: ProviderName,
    /// Model aliases from the file's `[models."name"]` tables.
    pub models: BTreeMap<String, ModelRoute>,
    /// Longest wait for a connection to a provider.
    pub connect_timeout: Duration,
    /// Longest wait for a provider's response headers once the request is sent.
    pub first_byte_timeout: Duration,
    /// Longest silence between two pieces of a provider's response body.
    pub idle_timeout: Duration,
}

/// Where an alias sends a call: a provider and its own model name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRoute {
    pub provider: ProviderName,
    pub model: String,
}

/// `[models."name"]` in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    provider: String,
    model: String,
}

/// Settings of the outbox's sender and of the Stripe endpoint.
#[derive(Clone, Debug)]
pub struct HooksConfig {
    /// E-mail alerts, when an SMTP server is configured.
    pub smtp: Option<SmtpConfig>,
    /// The signing secret of Stripe's webhook endpoint (`whsec_…`); without
    /// it `POST /webhooks/stripe` is refused.
    pub stripe_webhook_secret: Option<SecretString>,
    /// The first retry's wait (doubled each time, at most an hour, jittered).
    pub retry_base: Duration,
    /// How long one webhook attempt may take.
    pub timeout: Duration,
}

/// Where e-mail alerts are sent from.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    /// `smtp://[user:password@]host[:port]` or `smtps://…`; it may hold a
    /// password, so it is never printed.
    pub url: SecretString,
    /// The sender, `alerts@example.com` or `Tollgate <alerts@example.com>`.
    pub from: lettre::message::Mailbox,
}

/// One upstream provider: where it is, and the platform's own key for it.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub name: ProviderName,
    /// The built-in provider, or `None` for an OpenAI-compatible one added
    /// by configuration.
    pub known: Option<KnownProvider>,
    /// The base URL, without a trailing slash (`https://api.openai.com/v1`).
    pub base_url: String,
    /// The platform's key, used for users who bring none. Never printed.
    pub platform_key: Option<SecretString>,
    /// The variable the platform key is read from (`OPENAI_API_KEY`).
    pub api_key_env: String,
}

impl Config {
    /// The provider of this name, if it is built in or configured.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.get(name)
    }
}

/// `[providers.<name>]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    base_url: Option<String>,
    /// The variable holding the platform key (default `<NAME>_API_KEY`).
    api_key_env: Option<String>,
}

/// `together-ai` → `TOGETHER_AI`, as the provider appears in variable names.
fn env_name(provider: &str) -> String {
    provider.to_ascii_uppercase().replace('-', "_")
}

/// Requests without a key, on a small quota metered per client address.
#[derive(Clone, Debug)]
pub struct Anonymous {
    pub plan: tollgate_domain::PlanSlug,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnonymous {
    enabled: Option<bool>,
    plan: Option<String>,
}

/// US dollars per million tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input: f64,
    cached_input: Option<f64>,
    output: f64,
}

/// The file's shape. Every field is optional; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    admin_token: Option<String>,
    master_key: Option<String>,
    /// Retired master keys, comma-separated.
    master_keys_old: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    key_cache_ttl_seconds: Option<u64>,
    key_cache_capacity: Option<usize>,
    auth_failure_limit: Option<u32>,
    auth_failure_window_seconds: Option<u64>,
    trust_forwarded_for: Option<bool>,
    last_used_flush_seconds: Option<u64>,
    retention_days: Option<u32>,
    sqlite_synchronous: Option<String>,
    usage_journal_max_bytes: Option<u64>,
    reservation_ttl_seconds: Option<u64>,
    public_url: Option<String>,
    upgrade_url: Option<String>,
    portal_link_ttl_seconds: Option<u64>,
    session_ttl_seconds: Option<u64>,
    smtp_url: Option<String>,
    smtp_from: Option<String>,
    stripe_webhook_secret: Option<String>,
    webhook_retry_base_ms: Option<u64>,
    webhook_timeout_seconds: Option<u64>,
    #[serde(default)]
    anonymous: RawAnonymous,
    #[serde(default)]
    prices: std::collections::BTreeMap<String, RawPrice>,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    default_provider: Option<String>,
    upstream_connect_timeout_seconds: Option<u64>,
    upstream_first_byte_timeout_seconds: Option<u64>,
    upstream_idle_timeout_seconds: Option<u64>,
    #[serde(default)]
    models: BTreeMap<String, RawModel>,
    /// Platform keys found in the environment, by variable name.
    #[serde(skip)]
    platform_keys: BTreeMap<String, SecretString>,
}

/// A configuration that cannot be used; the message names what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

fn err(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

/// Variables read by the CLI rather than by `serve`, accepted here so that a
/// shell which sets them can still start the server.
const CLIENT_VARIABLES: &[&str] = &["TOLLGATE_URL", "TOLLGATE_CONFIG"];

/// Variables of nested settings.
const NESTED_VARIABLES: &[&str] = &["TOLLGATE_ANONYMOUS_ENABLED", "TOLLGATE_ANONYMOUS_PLAN"];

macro_rules! variables {
    ($($field:ident => $var:literal),* $(,)?) => {
        /// Each file key with the variable that overrides it.
        const VARIABLES: &[(&str, &str)] = &[$((stringify!($field), $var)),*];

        impl RawConfig {
            fn overlay_env(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
                for (name, value) in env {
                    match name.as_str() {
                        $($var => self.$field = Some(parse_env($var, value)?),)*
                        "TOLLGATE_ANONYMOUS_ENABLED" => self.anonymous.enabled = Some(parse_env(name, value)?),
                        "TOLLGATE_ANONYMOUS_PLAN" => self.anonymous.plan = Some(parse_env(name, value)?),
                        _ => self.overlay_provider_variable(name, value),
                    }
                }
                self.read_platform_keys(env);
                Ok(())
            }
        }
    };
}

variables! {
    listen => "TOLLGATE_LISTEN",
    data_dir => "TOLLGATE_DATA_DIR",
    database_url => "TOLLGATE_DATABASE_URL",
    redis_url => "TOLLGATE_REDIS_URL",
    redis_prefix => "TOLLGATE_REDIS_PREFIX",
    admin_token => "TOLLGATE_ADMIN_TOKEN",
    master_key => "TOLLGATE_MASTER_KEY",
    master_keys_old => "TOLLGATE_MASTER_KEYS_OLD",
    log_format => "TOLLGATE_LOG_FORMAT",
    log_level => "TOLLGATE_LOG",
    key_cache_ttl_seconds => "TOLLGATE_KEY_CACHE_TTL_SECONDS",
    key_cache_capacity => "TOLLGATE_KEY_CACHE_CAPACITY",
    auth_failure_limit => "TOLLGATE_AUTH_FAILURE_LIMIT",
    auth_failure_window_seconds => "TOLLGATE_AUTH_FAILURE_WINDOW_SECONDS",
    trust_forwarded_for => "TOLLGATE_TRUST_FORWARDED_FOR",
    last_used_flush_seconds => "TOLLGATE_LAST_USED_FLUSH_SECONDS",
    default_provider => "TOLLGATE_DEFAULT_PROVIDER",
    upstream_connect_timeout_seconds => "TOLLGATE_UPSTREAM_CONNECT_TIMEOUT_SECONDS",
    upstream_first_byte_timeout_seconds => "TOLLGATE_UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS",
    upstream_idle_timeout_seconds => "TOLLGATE_UPSTREAM_IDLE_TIMEOUT_SECONDS",
    retention_days => "TOLLGATE_RETENTION_DAYS",
    sqlite_synchronous => "TOLLGATE_SQLITE_SYNCHRONOUS",
    usage_journal_max_bytes => "TOLLGATE_USAGE_JOURNAL_MAX_BYTES",
    reservation_ttl_seconds => "TOLLGATE_RESERVATION_TTL_SECONDS",
    public_url => "TOLLGATE_PUBLIC_URL",
    upgrade_url => "TOLLGATE_UPGRADE_URL",
    portal_link_ttl_seconds => "TOLLGATE_PORTAL_LINK_TTL_SECONDS",
    session_ttl_seconds => "TOLLGATE_SESSION_TTL_SECONDS",
    smtp_url => "TOLLGATE_SMTP_URL",
    smtp_from => "TOLLGATE_SMTP_FROM",
    stripe_webhook_secret => "TOLLGATE_STRIPE_WEBHOOK_SECRET",
    webhook_retry_base_ms => "TOLLGATE_WEBHOOK_RETRY_BASE_MS",
    webhook_timeout_seconds => "TOLLGATE_WEBHOOK_TIMEOUT_SECONDS",
}

/// A variable's value as the field's type. Secrets are never echoed.
fn parse_env<T: EnvValue>(name: &str, value: &str) -> Result<T, ConfigError> {
    T::from_env(value).ok_or_else(|| {
        let hidden = ["TOKEN", "KEY", "SECRET", "URL"].iter().any(|w| name.contains(w));
        let shown = if hidden { "its value".to_owned() } else { format!("{value:?}") };
        err(format!("{name}: {shown} is not {}", T::EXPECTED))
    })
}

trait EnvValue: Sized {
    const EXPECTED: &'static str;
    fn from_env(value: &str) -> Option<Self>;
}

impl EnvValue for String {
    const EXPECTED: &'static str = "a string";
    fn from_env(value: &str) -> Option<Self> {
        Some(value.to_owned())
    }
}

impl EnvValue for PathBuf {
    const EXPECTED: &'static str = "a path";
    fn from_env(value: &str) -> Option<Self> {
        (!value.is_empty()).then(|| PathBuf::from(value))
    }
}

impl EnvValue for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_env(value: &str) -> Option<Self> {
        match value {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        }
    }
}

macro_rules! number_env_value {
    ($($t:ty),*) => {$(
        impl EnvValue for $t {
            const EXPECTED: &'static str = "a whole number";
            fn from_env(value: &str) -> Option<Self> {
                value.parse().ok()
            }
        }
    )*};
}
number_env_value!(u32, u64, usize);

impl Config {
    /// Reads the file (if any) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> =
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
        Config::from_sources(file, &env)
    }

    /// Builds the configuration from a file and environment variables:
    /// every `TOLLGATE_*` one must be known; of the others only the
    /// providers' key variables are read.
    pub fn from_sources(file: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| err(format!("cannot read the config file {}: {e}", path.display())))?;
                parse_file(&text).map_err(|e| err(format!("in {}: {}", path.display(), e.0)))?
            }
            None => RawConfig::default(),
        };
        for (name, _) in env.iter().filter(|(name, _)| name.starts_with("TOLLGATE_")) {
            let known = VARIABLES.iter().any(|(_, var)| var == name)
                || CLIENT_VARIABLES.contains(&name.as_str())
                || NESTED_VARIABLES.contains(&name.as_str())
                || is_provider_variable(name);
            if !known {
                return Err(err(format!(
                    "unknown environment variable {name}; known ones are {}",
                    VARIABLES.iter().map(|(_, v)| *v).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        raw.overlay_env(env)?;
        raw.build()
    }
}

/// `TOLLGATE_<PROVIDER>_BASE_URL`: the provider part, if it is one.
fn provider_of_variable(name: &str) -> Option<&str> {
    name.strip_prefix("TOLLGATE_").and_then(|rest| rest.strip_suffix("_BASE_URL")).filter(|p| !p.is_empty())
}

fn is_provider_variable(name: &str) -> bool {
    provider_of_variable(name).is_some()
}

impl RawConfig {
    /// `TOLLGATE_<PROVIDER>_BASE_URL` replaces a provider's base URL, or
    /// adds an OpenAI-compatible provider of that name (lowercased).
    fn overlay_provider_variable(&mut self, name: &str, value: &str) {
        let Some(upper) = provider_of_variable(name) else { return };
        let known = KnownProvider::ALL.iter().map(|k| k.name().to_owned());
        let provider = known
            .chain(self.providers.keys().cloned())
            .find(|p| env_name(p) == upper)
            .unwrap_or_else(|| upper.to_ascii_lowercase());
        self.providers.entry(provider).or_default().base_url = Some(value.to_owned());
    }

    /// Picks the platform keys of the built-in and configured providers
    /// out of the environment.
    fn read_platform_keys(&mut self, env: &[(String, String)]) {
        let wanted: Vec<String> = KnownProvider::ALL
            .iter()
            .map(|k| k.name().to_owned())
            .chain(self.providers.keys().cloned())
            .map(|p| self.api_key_env(&p))
            .collect();
        for (name, value) in env {
            if wanted.contains(name) && !value.trim().is_empty() {
                self.platform_keys.insert(name.clone(), SecretString::new(value.trim()));
            }
        }
    }

    fn api_key_env(&self, provider: &str) -> String {
        self.providers
            .get(provider)
            .and_then(|p| p.api_key_env.clone())
            .unwrap_or_else(|| format!("{}_API_KEY", env_name(provider)))
    }

    /// The built-in providers with the file's and the environment's
    /// changes, and the providers they add.
    fn build_providers(&mut self) -> Result<BTreeMap<String, ProviderConfig>, ConfigError> {
        let mut names: Vec<String> = KnownProvider::ALL.iter().map(|k| k.name().to_owned()).collect();
        names.extend(self.providers.keys().filter(|p| !names.contains(p)).cloned().collect::<Vec<_>>());
        let mut providers = BTreeMap::new();
        for raw_name in names {
            let what = format!("`providers.{raw_name}`");
            let name = ProviderName::parse(&raw_name).map_err(|e| err(format!("{what}: {e}")))?;
            let known = name.known();
            let raw = self.providers.get(&raw_name);
            let variable = format!("TOLLGATE_{}_BASE_URL", env_name(&raw_name));
            let base_url = match (raw.and_then(|r| r.base_url.as_deref()), known) {
                (Some(url), _) => url.trim().trim_end_matches('/').to_owned(),
                (None, Some(k)) => k.default_base_url().to_owned(),
                (None, None) => return Err(err(format!("{what} ({variable}): a provider needs a base_url"))),
            };
            let parsed = reqwest::Url::parse(&base_url).ok();
            if !parsed.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some()) {
                return Err(err(format!("{what}.base_url ({variable}): not an http:// or https:// URL")));
            }
            let api_key_env = self.api_key_env(&raw_name);
            if api_key_env.is_empty() || api_key_env.starts_with("TOLLGATE_") {
                return Err(err(format!("{what}.api_key_env: the name of a variable outside TOLLGATE_*")));
            }
            let platform_key = self.platform_keys.remove(&api_key_env);
            providers.insert(raw_name, ProviderConfig { name, known, base_url, platform_key, api_key_env });
        }
        Ok(providers)
    }
}

/// Providers that speak OpenAI's API: every one but Anthropic, Gemini and
/// GitHub (whose base URL is its REST API).
pub fn speaks_openai(provider: &ProviderConfig) -> bool {
    !matches!(provider.known, Some(KnownProvider::Anthropic | KnownProvider::Gemini | KnownProvider::GitHub))
}

fn default_provider(
    raw: Option<&str>,
    providers: &BTreeMap<String, ProviderConfig>,
) -> Result<ProviderName, ConfigError> {
    let name = raw.unwrap_or("openai").trim();
    let what = name_of("default_provider");
    match providers.get(name) {
        Some(p) if speaks_openai(p) => Ok(p.name.clone()),
        Some(_) => {
            Err(err(format!("{what}: {name:?} does not speak the OpenAI API; name openai, groq or an added provider")))
        }
        None => Err(err(format!("{what}: {name:?} is not a configured provider"))),
    }
}

fn model_routes(
    raw: BTreeMap<String, RawModel>,
    providers: &BTreeMap<String, ProviderConfig>,
) -> Result<BTreeMap<String, ModelRoute>, ConfigError> {
    let mut routes = BTreeMap::new();
    for (alias, route) in raw {
        let what = format!("models.{alias}");
        if alias.trim().is_empty() || alias.len() > 200 {
            return Err(err(format!("`{what}`: a model alias is 1 to 200 characters")));
        }
        let Some(provider) = providers.get(route.provider.trim()) else {
            return Err(err(format!("`{what}.provider`: {:?} is not a configured provider", route.provider)));
        };
        if matches!(provider.known, Some(KnownProvider::GitHub)) {
            return Err(err(format!("`{what}.provider`: github is not an LLM provider")));
        }
        let model = route.model.trim();
        if model.is_empty() || model.len() > 200 {
            return Err(err(format!("`{what}.model`: the provider's model name, 1 to 200 characters")));
        }
        routes.insert(alias, ModelRoute { provider: provider.name.clone(), model: model.to_owned() });
    }
    Ok(routes)
}

impl RawConfig {
    fn build_hooks(&mut self) -> Result<HooksConfig, ConfigError> {
        let smtp = match (self.smtp_url.take().filter(|u| !u.trim().is_empty()), self.smtp_from.take()) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(err(format!(
                    "{} and {} go together: set both for e-mail alerts, or neither",
                    name_of("smtp_url"),
                    name_of("smtp_from")
                )));
            }
            (Some(url), Some(from)) => {
                let url = url.trim().to_owned();
                let parsed = reqwest::Url::parse(&url).ok();
                if !parsed.as_ref().is_some_and(|u| matches!(u.scheme(), "smtp" | "smtps") && u.host().is_some()) {
                    return Err(err(format!(
                        "{}: use smtp://[user:password@]host[:port] or smtps://…",
                        name_of("smtp_url")
                    )));
                }
                let from = from.trim().parse::<lettre::message::Mailbox>().map_err(|_| {
                    err(format!(
                        "{}: an address such as alerts@example.com or \"Tollgate <alerts@example.com>\"",
                        name_of("smtp_from")
                    ))
                })?;
                Some(SmtpConfig { url: SecretString::new(url), from })
            }
        };
        let stripe_webhook_secret = match self.stripe_webhook_secret.take() {
            None => None,
            Some(s) if s.trim().is_empty() => None,
            Some(s) if s.trim().len() < 16 => {
                return Err(err(format!(
                    "{}: the endpoint's signing secret from Stripe (whsec_…)",
                    name_of("stripe_webhook_secret")
                )));
            }
            Some(s) => Some(SecretString::new(s.trim())),
        };
        let retry_base_ms = match self.webhook_retry_base_ms {
            Some(0) => return Err(err(format!("{}: must be greater than 0", name_of("webhook_retry_base_ms")))),
            Some(v) => v,
            None => 10_000,
        };
        let timeout = match self.webhook_timeout_seconds {
            Some(0) => return Err(err(format!("{}: must be greater than 0", name_of("webhook_timeout_seconds")))),
            Some(v) if v > 300 => return Err(err(format!("{}: at most 300", name_of("webhook_timeout_seconds")))),
            Some(v) => v,
            None => 10,
        };
        Ok(HooksConfig {
            smtp,
            stripe_webhook_secret,
            retry_base: Duration::from_millis(retry_base_ms),
            timeout: Duration::from_secs(timeout),
        })
    }
}

fn parse_file(text: &str) -> Result<RawConfig, ConfigError> {
    // toml's own rendering repeats the offending line, which may hold a
    // secret: report the line number, the key on it and the message instead.
    toml::from_str(text).map_err(|e| {
        let message = crate::error::without_values(e.message());
        match e.span() {
            Some(span) => {
                let start = span.start.min(text.len());
                let line_no = text[..start].matches('\n').count() + 1;
                let line = text.lines().nth(line_no - 1).unwrap_or("");
                match line.split_once('=') {
                    Some((key, _)) => err(format!("`{}` (line {line_no}): {message}", key.trim())),
                    None => err(format!("line {line_no}: {message}")),
                }
            }
            None => err(message),
        }
    })
}

/// The base64 master keys of a comma-separated list, in order.
fn master_keys(list: Option<&str>, field: &str) -> Result<Vec<MasterKey>, ConfigError> {
    let texts: Vec<&str> = list.unwrap_or("").split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
    let one = texts.len() == 1;
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            MasterKey::from_base64(text).map_err(|e| match one {
                true => err(format!("{}: {e}", name_of(field))),
                false => err(format!("{}: key {} of {}: {e}", name_of(field), i + 1, texts.len())),
            })
        })
        .collect()
}

fn name_of(field: &str) -> String {
    let var = VARIABLES.iter().find(|(f, _)| *f == field).map(|(_, v)| *v).unwrap_or("?");
    format!("`{field}` ({var})")
}

impl RawConfig {
    fn build(mut self) -> Result<Config, ConfigError> {
        let providers = self.build_providers()?;
        let hooks = self.build_hooks()?;
        // The master key may list older ones after it, as MASTER_KEYS_OLD does:
        // the first seals, every one opens.
        let mut master_keys_old = master_keys(self.master_key.as_deref(), "master_key")?;
        let master_key = (!master_keys_old.is_empty()).then(|| master_keys_old.remove(0));
        master_keys_old.extend(master_keys(self.master_keys_old.as_deref(), "master_keys_old")?);
        let listen_raw = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_raw.parse().map_err(|_| {
            err(format!("{}: {listen_raw:?} is not an address such as 127.0.0.1:8787", name_of("listen")))
        })?;
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let fsync_each_commit = match self.sqlite_synchronous.as_deref() {
            None | Some("normal") => false,
            Some("full") => true,
            Some(other) => {
                return Err(err(format!("{}: {other:?} is not \"normal\" or \"full\"", name_of("sqlite_synchronous"))));
            }
        };
        let store = match self.database_url.as_deref() {
            None | Some("") => StoreConfig::Sqlite { path: data_dir.join("tollgate.db"), fsync_each_commit },
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                StoreConfig::Postgres { url: url.to_owned() }
            }
            Some(url) if url.starts_with("sqlite:") => {
                let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
                StoreConfig::Sqlite { path: PathBuf::from(path), fsync_each_commit }
            }
            Some(_) => {
                return Err(err(format!("{}: use postgres://… or sqlite:PATH", name_of("database_url"))));
            }
        };
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(err(format!("{}: use redis://host:port", name_of("redis_url"))));
        }
        let log_format = match self.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(err(format!("{}: {other:?} is not \"text\" or \"json\"", name_of("log_format"))));
            }
        };
        let admin_token = match self.admin_token {
            Some(t) if t.trim().len() < 16 => {
                return Err(err(format!("{}: the admin token must be at least 16 characters", name_of("admin_token"))));
            }
            other => other.map(SecretString::new),
        };
        let positive = |field: &str, value: Option<u64>, default: u64| match value {
            Some(0) => Err(err(format!("{}: must be greater than 0", name_of(field)))),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let anonymous = match (self.anonymous.enabled.unwrap_or(false), self.anonymous.plan) {
            (false, _) => None,
            (true, plan) => {
                let plan = plan.unwrap_or_else(|| "demo".into());
                let plan = tollgate_domain::PlanSlug::parse(&plan)
                    .map_err(|e| err(format!("`anonymous.plan` (TOLLGATE_ANONYMOUS_PLAN): {e}")))?;
                Some(Anonymous { plan })
            }
        };
        let mut prices = Vec::new();
        for (model, p) in self.prices {
            let ok = |v: f64| v.is_finite() && (0.0..=1_000_000.0).contains(&v);
            if !ok(p.input) || !ok(p.output) || !p.cached_input.is_none_or(ok) {
                return Err(err(format!("`prices.{model}`: dollars per million tokens, 0 or more")));
            }
            let price = tollgate_domain::pricing::Price::dollars(p.input, p.cached_input.unwrap_or(p.input), p.output);
            prices.push((model, price));
        }
        let gateway = GatewayConfig {
            default_provider: default_provider(self.default_provider.as_deref(), &providers)?,
            models: model_routes(std::mem::take(&mut self.models), &providers)?,
            connect_timeout: Duration::from_secs(positive(
                "upstream_connect_timeout_seconds",
                self.upstream_connect_timeout_seconds,
                10,
            )?),
            first_byte_timeout: Duration::from_secs(positive(
                "upstream_first_byte_timeout_seconds",
                self.upstream_first_byte_timeout_seconds,
                300,
            )?),
            idle_timeout: Duration::from_secs(positive(
                "upstream_idle_timeout_seconds",
                self.upstream_idle_timeout_seconds,
                120,
            )?),
        };
        if self.retention_days == Some(0) {
            return Err(err(format!(
                "{}: must be greater than 0 (leave it out to keep events forever)",
                name_of("retention_days")
            )));
        }
        let url = |field: &str, value: Option<String>| match value.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) if (v.starts_with("https://") || v.starts_with("http://")) && !v.contains(char::is_whitespace) => {
                Ok(Some(v.trim_end_matches('/').to_owned()))
            }
            Some(_) => Err(err(format!("{}: an http:// or https:// URL", name_of(field)))),
        };
        let web = Web {
            public_url: url("public_url", self.public_url)?,
            upgrade_url: url("upgrade_url", self.upgrade_url)?,
            portal_link_ttl: Duration::from_secs(positive(
                "portal_link_ttl_seconds",
                self.portal_link_ttl_seconds,
                300,
            )?),
            session_ttl: Duration::from_secs(positive("session_ttl_seconds", self.session_ttl_seconds, 8 * 3600)?),
        };
        Ok(Config {
            web,
            hooks,
            retention_days: self.retention_days,
            usage_journal_max_bytes: positive(
                "usage_journal_max_bytes",
                self.usage_journal_max_bytes,
                crate::metering::JOURNAL_FULL,
            )?,
            reservation_ttl: Duration::from_secs(positive(
                "reservation_ttl_seconds",
                self.reservation_ttl_seconds,
                600,
            )?),
            anonymous,
            prices,
            gateway,
            listen,
            data_dir,
            store,
            redis_url: self.redis_url.map(SecretString::new),
            redis_prefix: match self.redis_prefix {
                None => "tollgate:".to_owned(),
                Some(p) if !p.is_empty() && p.len() <= 100 && !p.chars().any(char::is_whitespace) => p,
                Some(_) => return Err(err(format!("{}: 1 to 100 characters, no spaces", name_of("redis_prefix")))),
            },
            admin_token,
            master_key,
            master_keys_old,
            providers,
            log_format,
            log_level: self.log_level.unwrap_or_else(|| "info".to_owned()),
            key_cache_ttl: Duration::from_secs(self.key_cache_ttl_seconds.unwrap_or(5)),
            key_cache_capacity: positive("key_cache_capacity", self.key_cache_capacity.map(|c| c as u64), 100_000)?
                as usize,
            auth_failure_limit: positive("auth_failure_limit", self.auth_failure_limit.map(u64::from), 20)? as u32,
            auth_failure_window: Duration::from_secs(positive(
                "auth_failure_window_seconds",
                self.auth_failure_window_seconds,
                60,
            )?),
            trust_forwarded_for: self.trust_forwarded_for.unwrap_or(false),
            last_used_flush: Duration::from_secs(positive(
                "last_used_flush_seconds",
                self.last_used_flush_seconds,
                10,
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn from_toml(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut raw = parse_file(text)?;
        raw.overlay_env(&env(vars))?;
        raw.build()
    }

    #[test]
    fn nothing_set_means_sqlite_in_the_default_data_dir() {
        let config = from_toml("", &[]).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert!(
            matches!(config.store, StoreConfig::Sqlite { ref path, fsync_each_commit: false } if path.ends_with("tollgate-data/tollgate.db"))
        );
        assert_eq!(config.key_cache_ttl, Duration::from_secs(5));
        assert_eq!(config.usage_journal_max_bytes, 16 << 20);
    }

    #[test]
    fn sqlite_syncs_every_commit_only_when_asked() {
        let full = from_toml("sqlite_synchronous = \"full\"", &[]).unwrap();
        assert!(matches!(full.store, StoreConfig::Sqlite { fsync_each_commit: true, .. }));
        let normal = from_toml("", &[("TOLLGATE_SQLITE_SYNCHRONOUS", "normal")]).unwrap();
        assert!(matches!(normal.store, StoreConfig::Sqlite { fsync_each_commit: false, .. }));
    }

    #[test]
    fn env_wins_over_the_file() {
        let config = from_toml("listen = \"127.0.0.1:1\"", &[("TOLLGATE_LISTEN", "127.0.0.1:2")]).unwrap();
        assert_eq!(config.listen.port(), 2);
    }

    #[test]
    fn errors_name_the_key_at_fault() {
        let check = |text: &str, vars: &[(&str, &str)], expected: &str| {
            let message = from_toml(text, vars).unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} should contain {expected:?}");
        };
        check("lissen = \"x\"", &[], "lissen");
        check("listen = 5", &[], "listen");
        check("listen = \"nowhere\"", &[], "listen");
        check("", &[("TOLLGATE_KEY_CACHE_TTL_SECONDS", "soon")], "TOLLGATE_KEY_CACHE_TTL_SECONDS");
        check("", &[("TOLLGATE_USAGE_JOURNAL_MAX_BYTES", "0")], "TOLLGATE_USAGE_JOURNAL_MAX_BYTES");
        check("usage_journal_max_bytes = -1", &[], "usage_journal_max_bytes");
        check("database_url = \"mysql://x\"", &[], "TOLLGATE_DATABASE_URL");
        check("log_format = \"xml\"", &[], "log_format");
        check("", &[("TOLLGATE_SQLITE_SYNCHRONOUS", "sometimes")], "TOLLGATE_SQLITE_SYNCHRONOUS");
        check("", &[("TOLLGATE_ADMIN_TOKEN", "short")], "TOLLGATE_ADMIN_TOKEN");
        check("upgrade_url = \"ftp://x\"", &[], "TOLLGATE_UPGRADE_URL");
        check("", &[("TOLLGATE_PUBLIC_URL", "tollgate.example.com")], "TOLLGATE_PUBLIC_URL");
        check("", &[("TOLLGATE_PORTAL_LINK_TTL_SECONDS", "0")], "TOLLGATE_PORTAL_LINK_TTL_SECONDS");
    }

    #[test]
    fn unknown_variables_are_refused_but_provider_urls_pass() {
        let path = None;
        let e = Config::from_sources(path, &env(&[("TOLLGATE_DATABSE_URL", "x")])).unwrap_err();
        assert!(e.to_string().contains("TOLLGATE_DATABSE_URL"));
        assert!(Config::from_sources(path, &env(&[("TOLLGATE_OPENAI_BASE_URL", "http://x")])).is_ok());
    }

    #[test]
    fn prices_and_anonymous_mode_come_from_the_file() {
        let text = "[anonymous]\nenabled = true\n\n[prices.\"my-model\"]\ninput = 1.5\noutput = 3\n";
        let config = from_toml(text, &[]).unwrap();
        assert_eq!(config.anonymous.unwrap().plan.as_str(), "demo");
        let (model, price) = &config.prices[0];
        assert_eq!(model, "my-model");
        assert_eq!((price.input, price.cached_input, price.output), (1_500_000, 1_500_000, 3_000_000));
        let e = from_toml("[prices.x]\ninput = -1\noutput = 1\n", &[]).unwrap_err().to_string();
        assert!(e.contains("prices.x"), "{e}");
        let e = from_toml("[prices.x]\ninput = 1\n", &[]).unwrap_err().to_string();
        assert!(e.contains("output"), "{e}");
    }

    #[test]
    fn known_providers_have_their_sdks_base_urls_and_read_platform_keys_from_the_usual_variables() {
        let config = from_toml("", &[("OPENAI_API_KEY", "sk-platform-0001"), ("GROQ_API_KEY", " ")]).unwrap();
        let check = |name: &str, url: &str| {
            let p = config.provider(name).unwrap_or_else(|| panic!("{name} is built in"));
            assert_eq!(p.base_url, url);
            assert_eq!(p.known.map(KnownProvider::name), Some(name));
        };
        check("openai", "https://api.openai.com/v1");
        check("groq", "https://api.groq.com/openai/v1");
        check("anthropic", "https://api.anthropic.com");
        check("gemini", "https://generativelanguage.googleapis.com");
        check("github", "https://api.github.com");
        assert_eq!(config.provider("openai").unwrap().platform_key.as_ref().unwrap().expose(), "sk-platform-0001");
        assert_eq!(config.provider("openai").unwrap().api_key_env, "OPENAI_API_KEY");
        assert!(config.provider("groq").unwrap().platform_key.is_none(), "a blank variable is no key");
        assert!(config.provider("anthropic").unwrap().platform_key.is_none());
        assert!(config.provider("together").is_none());
        assert!(!format!("{config:?}").contains("sk-platform-0001"), "the platform key is never printed");
    }

    #[test]
    fn base_urls_are_replaced_and_new_providers_added_by_env_and_file() {
        let text =
            "[providers.together-ai]\nbase_url = \"https://api.together.xyz/v1\"\napi_key_env = \"TOGETHER_KEY\"\n";
        let vars = [
            ("TOLLGATE_GROQ_BASE_URL", "http://127.0.0.1:9/openai/v1/"),
            ("TOLLGATE_MY_LLM_BASE_URL", "http://127.0.0.1:8/v1"),
            ("MY_LLM_API_KEY", "my-llm-platform-key"),
            ("TOLLGATE_TOGETHER_AI_BASE_URL", "http://127.0.0.1:7/v1"),
            ("TOGETHER_KEY", "together-platform-key"),
            ("TOGETHER_AI_API_KEY", "not-this-one"),
        ];
        let config = from_toml(text, &vars).unwrap();
        assert_eq!(config.provider("groq").unwrap().base_url, "http://127.0.0.1:9/openai/v1");
        let mine = config.provider("my_llm").expect("a provider added by its variable");
        assert_eq!((mine.base_url.as_str(), mine.known), ("http://127.0.0.1:8/v1", None));
        assert_eq!(mine.platform_key.as_ref().unwrap().expose(), "my-llm-platform-key");
        let together = config.provider("together-ai").unwrap();
        assert_eq!(together.base_url, "http://127.0.0.1:7/v1", "the variable wins over the file");
        assert_eq!(together.platform_key.as_ref().unwrap().expose(), "together-platform-key");
    }

    #[test]
    fn provider_settings_are_checked() {
        let check = |text: &str, vars: &[(&str, &str)], expected: &str| {
            let message = from_toml(text, vars).unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} should contain {expected:?}");
        };
        check("[providers.custom]\napi_key_env = \"X\"\n", &[], "providers.custom");
        check("[providers.openai]\ntoken = \"x\"\n", &[], "token");
        check("[providers.Bad]\nbase_url = \"http://x\"\n", &[], "providers.Bad");
        check("", &[("TOLLGATE_OPENAI_BASE_URL", "ftp://example.com")], "TOLLGATE_OPENAI_BASE_URL");
        check("", &[("TOLLGATE_OPENAI_BASE_URL", "not a url")], "TOLLGATE_OPENAI_BASE_URL");
        check("[providers.openai]\napi_key_env = \"TOLLGATE_ADMIN_TOKEN\"\n", &[], "api_key_env");
    }

    #[test]
    fn master_keys_are_parsed_and_retired_ones_listed_with_commas() {
        let (a, b) = (MasterKey::generate(), MasterKey::generate());
        let old = format!("{}, {}", a.to_base64().as_str(), b.to_base64().as_str());
        let config = from_toml("", &[("TOLLGATE_MASTER_KEYS_OLD", &old)]).unwrap();
        let ids: Vec<_> = config.master_keys_old.iter().map(|k| k.id().clone()).collect();
        assert_eq!(ids, [a.id().clone(), b.id().clone()]);
        let bad = format!("{},bm90IDMyIGJ5dGVz", a.to_base64().as_str());
        let e = from_toml("", &[("TOLLGATE_MASTER_KEYS_OLD", &bad)]).unwrap_err().to_string();
        assert!(e.contains("TOLLGATE_MASTER_KEYS_OLD") && e.contains("key 2 of 2"), "{e}");
        assert!(!e.contains("bm90") && !e.contains(a.to_base64().as_str()), "{e}");
        let e = from_toml("", &[("TOLLGATE_MASTER_KEY", "bm90IDMyIGJ5dGVz")]).unwrap_err().to_string();
        assert!(e.contains("TOLLGATE_MASTER_KEY") && !e.contains("bm90"), "{e}");
        let current = MasterKey::generate();
        let config = from_toml("", &[("TOLLGATE_MASTER_KEY", current.to_base64().as_str())]).unwrap();
        assert!(!format!("{config:?}").contains(current.to_base64().as_str()));
        assert!(config.master_keys_old.is_empty());
        // The master key may list the older ones after it: they open, it seals.
        let listed = format!("{},{}", current.to_base64().as_str(), a.to_base64().as_str());
        let config =
            from_toml("", &[("TOLLGATE_MASTER_KEY", &listed), ("TOLLGATE_MASTER_KEYS_OLD", b.to_base64().as_str())]);
        let config = config.unwrap();
        assert_eq!(config.master_key.as_ref().map(|k| k.id().clone()), Some(current.id().clone()));
        let ids: Vec<_> = config.master_keys_old.iter().map(|k| k.id().clone()).collect();
        assert_eq!(ids, [a.id().clone(), b.id().clone()]);
        let e = from_toml("", &[("TOLLGATE_MASTER_KEY", &bad)]).unwrap_err().to_string();
        assert!(e.contains("TOLLGATE_MASTER_KEY") && e.contains("key 2 of 2") && !e.contains("bm90"), "{e}");
    }

    #[test]
    fn model_aliases_default_provider_and_upstream_timeouts_are_read_and_checked() {
        let text = "[models.fast]\nprovider = \"groq\"\nmodel = \"llama-3.1-8b-instant\"\n\n\
                    [models.\"smart\"]\nprovider = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\n";
        let vars = [("TOLLGATE_DEFAULT_PROVIDER", "groq"), ("TOLLGATE_UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS", "7")];
        let config = from_toml(text, &vars).unwrap();
        let g = &config.gateway;
        assert_eq!(g.default_provider.as_str(), "groq");
        assert_eq!(
            g.models["fast"],
            ModelRoute { provider: ProviderName::parse("groq").unwrap(), model: "llama-3.1-8b-instant".into() }
        );
        assert_eq!(g.models["smart"].provider.as_str(), "anthropic");
        assert_eq!(
            (g.connect_timeout, g.first_byte_timeout, g.idle_timeout),
            (Duration::from_secs(10), Duration::from_secs(7), Duration::from_secs(120))
        );
        assert_eq!(from_toml("", &[]).unwrap().gateway.default_provider.as_str(), "openai");

        let check = |text: &str, vars: &[(&str, &str)], expected: &str| {
            let message = from_toml(text, vars).unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} should contain {expected:?}");
        };
        check("[models.x]\nprovider = \"nowhere\"\nmodel = \"m\"\n", &[], "models.x.provider");
        check("[models.x]\nprovider = \"openai\"\nmodel = \" \"\n", &[], "models.x.model");
        check("[models.x]\nprovider = \"openai\"\n", &[], "model");
        check("[models.x]\nprovider = \"openai\"\nmodel = \"m\"\nprice = 1\n", &[], "price");
        check("", &[("TOLLGATE_DEFAULT_PROVIDER", "anthropic")], "TOLLGATE_DEFAULT_PROVIDER");
        check("", &[("TOLLGATE_DEFAULT_PROVIDER", "nobody")], "TOLLGATE_DEFAULT_PROVIDER");
        check("", &[("TOLLGATE_UPSTREAM_IDLE_TIMEOUT_SECONDS", "0")], "TOLLGATE_UPSTREAM_IDLE_TIMEOUT_SECONDS");
    }

    #[test]
    fn only_tollgate_variables_are_held_to_the_known_list() {
        let vars = env(&[("HOME", "/root"), ("OPENAI_API_KEY", "sk-x-123456"), ("TOLLGATE_MASTER_KEYS_OLD", "")]);
        assert!(Config::from_sources(None, &vars).is_ok());
    }

    #[test]
    fn hooks_settings_are_read_and_checked() {
        let config = from_toml("", &[]).unwrap();
        assert!(config.hooks.smtp.is_none() && config.hooks.stripe_webhook_secret.is_none());
        assert_eq!(config.hooks.retry_base, Duration::from_secs(10));
        let vars = [
            ("TOLLGATE_SMTP_URL", "smtp://mailer:hunter2-password@127.0.0.1:2525"),
            ("TOLLGATE_SMTP_FROM", "Tollgate <alerts@example.com>"),
            ("TOLLGATE_STRIPE_WEBHOOK_SECRET", "whsec_stripe-signing-secret"),
            ("TOLLGATE_WEBHOOK_RETRY_BASE_MS", "50"),
        ];
        let config = from_toml("", &vars).unwrap();
        let smtp = config.hooks.smtp.as_ref().unwrap();
        assert_eq!(smtp.from.email.to_string(), "alerts@example.com");
        assert_eq!(config.hooks.retry_base, Duration::from_millis(50));
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2-password") && !printed.contains("stripe-signing-secret"), "{printed}");
        let check = |vars: &[(&str, &str)], expected: &str| {
            let message = from_toml("", vars).unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} should contain {expected:?}");
            assert!(!message.contains("hunter2"), "{message}");
        };
        check(&[("TOLLGATE_SMTP_URL", "smtp://127.0.0.1:25")], "TOLLGATE_SMTP_FROM");
        check(&[("TOLLGATE_SMTP_URL", "http://u:hunter2@x"), ("TOLLGATE_SMTP_FROM", "a@b.c")], "TOLLGATE_SMTP_URL");
        check(&[("TOLLGATE_SMTP_URL", "smtp://x"), ("TOLLGATE_SMTP_FROM", "not an address")], "TOLLGATE_SMTP_FROM");
        check(&[("TOLLGATE_STRIPE_WEBHOOK_SECRET", "hunter2")], "TOLLGATE_STRIPE_WEBHOOK_SECRET");
        check(&[("TOLLGATE_WEBHOOK_RETRY_BASE_MS", "0")], "TOLLGATE_WEBHOOK_RETRY_BASE_MS");
        check(&[("TOLLGATE_WEBHOOK_TIMEOUT_SECONDS", "soon")], "TOLLGATE_WEBHOOK_TIMEOUT_SECONDS");
    }

    #[test]
    fn secrets_are_not_echoed_in_errors() {
        let e = from_toml("", &[("TOLLGATE_ADMIN_TOKEN", "tiny-secret")]).unwrap_err().to_string();
        assert!(!e.contains("tiny-secret"));
        let e = from_toml("admin_token = 12345678901234567890", &[]).unwrap_err().to_string();
        assert!(!e.contains("12345678901234567890"), "{e}");
    }
}
