//! The command line: `serve`, `migrate`, `vault rotate` (which work on the
//! store directly), `mock-llm` (the provider stand-in), and the admin
//! commands, which speak to a running Tollgate over its admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use tollgate_server::Config;

use crate::client::{Client, Output};

#[derive(Parser)]
#[command(name = "tollgate", version, about = "API keys, metering, quotas and BYOK in front of LLM providers")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (SQLite in ./tollgate-data unless told otherwise).
    Serve(ServeArgs),
    /// Apply the database migrations and exit.
    Migrate(ServeArgs),
    /// Try Tollgate: the service and a mock provider in one process, with a
    /// plan, a user and a key made for you (temporary data, nothing leaves
    /// the machine).
    Demo,
    /// A stand-in for the OpenAI, Anthropic and Gemini APIs, for tests and benchmarks.
    MockLlm(MockLlmArgs),
    /// Users of the host app.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Plans and their limits.
    #[command(subcommand)]
    Plans(PlansCommand),
    /// Gateway keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Usage and the ledger.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Extra allowance (add-on tokens).
    #[command(subcommand)]
    Grants(GrantsCommand),
    /// Users' own provider keys (BYOK).
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// The vault's master key.
    #[command(subcommand)]
    Vault(VaultCommand),
}

#[derive(Subcommand)]
enum CredentialsCommand {
    /// Store a user's own key for a provider; the secret is read from
    /// standard input (one line), so that it stays out of shell history.
    Set {
        user: String,
        /// openai, anthropic, gemini, groq, github, or a configured name.
        provider: String,
        #[arg(long)]
        label: Option<String>,
        /// Ask the provider whether it accepts the key, and keep the answer.
        #[arg(long)]
        validate: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List a user's provider credentials (never the secrets).
    List {
        user: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a user's credential for a provider.
    Delete {
        user: String,
        provider: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Re-encrypt every credential under the current master key
    /// (TOLLGATE_MASTER_KEY), opening old ones with the keys in
    /// TOLLGATE_MASTER_KEYS_OLD. Works on the database directly, in
    /// batches; run it again to finish an interrupted rotation.
    Rotate {
        #[command(flatten)]
        args: ServeArgs,
        /// Credentials re-encrypted per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        batch_size: i64,
    },
}

#[derive(Subcommand)]
enum UsageCommand {
    /// A user's usage in the current period (or --period YYYY-MM).
    Show {
        user: String,
        #[arg(long)]
        period: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// A user's ledger as CSV, to a file or standard output.
    Export {
        user: String,
        /// RFC 3339 start (default: the start of the current period).
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 end (default: now).
        #[arg(long)]
        to: Option<String>,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum GrantsCommand {
    /// Add allowance for a meter, by default until the end of the period.
    Add {
        user: String,
        #[arg(long, default_value = "tokens")]
        meter: String,
        #[arg(long)]
        amount: i64,
        /// RFC 3339 expiry (default: the end of the current period).
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// A TOML configuration file; TOLLGATE_* variables override it.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct MockLlmArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9999")]
    listen: std::net::SocketAddr,
    /// Wait this long before the first byte of every answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Pace streams at this many tokens per second (default: as fast as possible).
    #[arg(long)]
    tokens_per_second: Option<f64>,
    /// An accepted key; repeat for more (default: any non-empty key).
    #[arg(long = "api-key", value_name = "KEY")]
    api_keys: Vec<String>,
    /// Reply length in tokens when a request gives no max tokens.
    #[arg(long, default_value_t = 16)]
    output_tokens: u32,
    /// Requests kept for GET /_mock/requests (0 records nothing, for benchmarks).
    #[arg(long, default_value_t = 10_000)]
    record_limit: usize,
}

/// Where the admin commands find Tollgate, and how they print.
#[derive(Args)]
struct Remote {
    /// Tollgate's base URL.
    #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8787", global = true)]
    url: String,
    /// Print the JSON the API returned, for scripts.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a user.
    Create {
        /// The app's own id for the user.
        id: String,
        #[arg(long, default_value = "free")]
        plan: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        stripe_customer_id: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List users.
    List {
        #[arg(long)]
        plan: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one user.
    Show {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum PlansCommand {
    /// List plans.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Create a plan.
    Create {
        slug: String,
        #[arg(long)]
        name: Option<String>,
        /// month, anchored or lifetime.
        #[arg(long, default_value = "month")]
        period: String,
        /// A limit, as METER=N (or METER=unlimited); repeat for more meters.
        #[arg(long = "limit", value_name = "METER=N")]
        limits: Vec<String>,
        #[arg(long)]
        rpm: Option<i64>,
        #[arg(long)]
        tpm: Option<i64>,
        #[arg(long)]
        price_cents: Option<i64>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Issue a key for a user; the secret is printed this once.
    Create {
        user: String,
        #[arg(long)]
        name: Option<String>,
        /// A scope; repeat for more (default: proxy, usage:read).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// RFC 3339 time after which the key stops working.
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List a user's keys (never the secrets).
    List {
        user: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a key at once.
    Revoke {
        key_id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Issue a successor; the old key works for --grace-seconds more.
    Rotate {
        key_id: String,
        #[arg(long, default_value_t = 0)]
        grace_seconds: i64,
        #[command(flatten)]
        remote: Remote,
    },
}

impl Cli {
    pub async fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Serve(args) => serve(args).await,
            Command::Migrate(args) => migrate(args).await,
            Command::Demo => crate::demo::run(shutdown_signal()).await,
            Command::MockLlm(args) => mock_llm(args).await,
            Command::Users(c) => c.run().await,
            Command::Plans(c) => c.run().await,
            Command::Keys(c) => c.run().await,
            Command::Usage(c) => c.run().await,
            Command::Grants(c) => c.run().await,
            Command::Credentials(c) => c.run().await,
            Command::Vault(c) => c.run().await,
        };
        // What was logged comes out before the verdict.
        tollgate_server::logging::flush();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let config = Config::load(args.config.as_deref())?;
    tollgate_server::logging::init(&config)?;
    Ok(config)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    let server = tollgate_server::start(config).await?;
    if let Some(token) = &server.generated_admin_token {
        // Shown once, on the terminal only: the store keeps just its hash.
        println!("Admin token (shown once; only its hash is stored, keep it now):\n  {}", token.expose());
    }
    println!("Tollgate is listening on http://{}", server.addr);
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests in flight");
    server.shutdown().await
}

async fn mock_llm(args: MockLlmArgs) -> anyhow::Result<()> {
    if let Some(tps) = args.tokens_per_second {
        anyhow::ensure!(tps.is_finite() && tps > 0.0, "--tokens-per-second: {tps} is not a positive number");
    }
    let config = tollgate_mock::MockConfig {
        listen: args.listen,
        api_keys: args.api_keys,
        latency: std::time::Duration::from_millis(args.latency_ms),
        tokens_per_second: args.tokens_per_second,
        output_tokens: args.output_tokens,
        record_limit: args.record_limit,
        ..tollgate_mock::MockConfig::default()
    };
    let mock = tollgate_mock::start(config).await?;
    println!("mock-llm listening on {}", mock.base_url());
    shutdown_signal().await;
    mock.shutdown().await
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn migrate(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    let store = tollgate_server::app::open_store(&config).await?;
    println!("migrations applied ({})", store.backend());
    store.close().await;
    Ok(())
}

fn client(remote: &Remote) -> anyhow::Result<(Client, Output)> {
    let output = if remote.json { Output::Json } else { Output::Table };
    Ok((Client::new(&remote.url)?, output))
}

const CREDENTIAL_COLUMNS: &[&str] = &["provider", "label", "last4", "created_at", "updated_at", "last_used_at"];

impl CredentialsCommand {
    async fn run(self) -> anyhow::Result<()> {
        match self {
            CredentialsCommand::Set { user, provider, label, validate, remote } => {
                let (c, out) = client(&remote)?;
                let secret = read_secret(&provider)?;
                let mut path =
                    format!("/admin/v1/users/{}/credentials/{}", Client::segment(&user), Client::segment(&provider));
                if validate {
                    path.push_str("?validate=true");
                }
                let stored = c.put(&path, &json!({ "secret": secret.as_str(), "label": label })).await?;
                let mut columns = CREDENTIAL_COLUMNS.to_vec();
                if validate {
                    columns.push("validation");
                }
                out.record(&validation_outcome(out, stored), &columns);
            }
            CredentialsCommand::List { user, remote } => {
                let (c, out) = client(&remote)?;
                let path = format!("/admin/v1/users/{}/credentials", Client::segment(&user));
                let mut columns = CREDENTIAL_COLUMNS.to_vec();
                columns.push("validation");
                let mut listed = c.get(&path).await?;
                if let Some(items) = listed["credentials"].as_array_mut() {
                    for item in items {
                        *item = validation_outcome(out, item.take());
                    }
                }
                out.list(&listed, "credentials", &columns);
            }
            CredentialsCommand::Delete { user, provider, remote } => {
                let (c, out) = client(&remote)?;
                let path =
                    format!("/admin/v1/users/{}/credentials/{}", Client::segment(&user), Client::segment(&provider));
                c.delete(&path).await?;
                out.done(
                    &format!("deleted the {provider} credential of {user}"),
                    json!({ "user_id": user, "provider": provider, "deleted": true }),
                );
            }
        }
        Ok(())
    }
}

/// In a table, a credential's validation is its outcome alone (the JSON
/// output keeps the time and message).
fn validation_outcome(out: Output, mut credential: Value) -> Value {
    if matches!(out, Output::Table) {
        credential["validation"] = credential["validation"]["outcome"].clone();
    }
    credential
}

/// One line of standard input, without its line break.
fn read_secret(provider: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("paste the {provider} key and press Enter:");
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin().read_line(&mut line).context("cannot read the secret from standard input")?;
    let secret = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    if secret.is_empty() {
        anyhow::bail!("no secret on standard input: pipe it in, e.g. `printenv MY_KEY | tollgate credentials set …`");
    }
    Ok(secret)
}

impl VaultCommand {
    async fn run(self) -> anyhow::Result<()> {
        let VaultCommand::Rotate { args, batch_size } = self;
        let config = load_config(&args)?;
        let (keyring, new_key) = tollgate_server::app::load_keyring(&config)?;
        if new_key.is_some() {
            anyhow::bail!(
                "no master key: set TOLLGATE_MASTER_KEY to the new key (and TOLLGATE_MASTER_KEYS_OLD to the old \
                 ones), or run this where the data directory holds master.key"
            );
        }
        let store = tollgate_server::app::open_store(&config).await?;
        let total = store.count_credentials_not_under(keyring.current_id()).await?
            + store.count_webhooks_not_under(keyring.current_id()).await?;
        let bar = if total > 0 { indicatif::ProgressBar::new(total as u64) } else { indicatif::ProgressBar::hidden() };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} secrets ({eta} left)")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let report = tollgate_server::vault::rotate(&store, &keyring, batch_size, |done| bar.set_position(done)).await;
        bar.finish_and_clear();
        store.close().await;
        let report = report?;
        let current = keyring.current_id();
        println!(
            "re-encrypted {} of {} credentials under master key {current}{}",
            report.resealed,
            report.total,
            if report.changed_meanwhile > 0 {
                format!(" ({} changed meanwhile and were left as they are)", report.changed_meanwhile)
            } else {
                String::new()
            }
        );
        println!(
            "re-encrypted {} of {} webhook signing secrets under master key {current}",
            report.webhooks_resealed, report.webhooks_total
        );
        if !report.failed.is_empty() {
            for failure in &report.failed {
                eprintln!("  {failure}");
            }
            anyhow::bail!(
                "{} secrets could not be opened; list the key they were encrypted with in TOLLGATE_MASTER_KEYS_OLD and run `tollgate vault rotate` again",
                report.failed.len()
            );
        }
        if report.left > 0 {
            anyhow::bail!(
                "{} secrets are still encrypted under an old master key (changed meanwhile, or sealed meanwhile by an \
                 instance without the new key): keep the old keys, make sure every instance runs with the new \
                 TOLLGATE_MASTER_KEY, and run `tollgate vault rotate` again",
                report.left
            );
        }
        println!(
            "every credential and webhook secret is encrypted under master key {current}; the old keys are no longer \
             needed"
        );
        Ok(())
    }
}

const USER_COLUMNS: &[&str] = &["id", "plan", "status", "email", "created_at"];
const KEY_COLUMNS: &[&str] =
    &["id", "name", "prefix", "scopes", "created_at", "last_used_at", "expires_at", "revoked_at"];

impl UsersCommand {
    async fn run(self) -> anyhow::Result<()> {
        match self {
            UsersCommand::Create { id, plan, email, stripe_customer_id, remote } => {
                let (c, out) = client(&remote)?;
                let body = json!({ "id": id, "plan": plan, "email": email, "stripe_customer_id": stripe_customer_id });
                out.record(&c.post("/admin/v1/users", &body).await?, USER_COLUMNS);
            }
            UsersCommand::List { plan, remote } => {
                let (c, out) = client(&remote)?;
                let mut users = Vec::new();
                let mut cursor: Option<String> = None;
                loop {
                    let mut query = vec![("limit", "1000".to_owned())];
                    query.extend(plan.clone().map(|p| ("plan", p)));
                    query.extend(cursor.take().map(|c| ("cursor", c)));
                    let page = c.get_query("/admin/v1/users", &query).await?;
                    users.extend(page["users"].as_array().cloned().unwrap_or_default());
                    match page["next_cursor"].as_str() {
                        Some(next) => cursor = Some(next.to_owned()),
                        None => break,
                    }
                }
                out.list(&json!({ "users": users }), "users", USER_COLUMNS);
            }
            UsersCommand::Show { id, remote } => {
                let (c, out) = client(&remote)?;
                out.record(&c.get(&format!("/admin/v1/users/{}", Client::segment(&id))).await?, USER_COLUMNS);
            }
        }
        Ok(())
    }
}

impl PlansCommand {
    async fn run(self) -> anyhow::Result<()> {
        let columns = &["slug", "name", "period", "limits", "rpm", "tpm", "price_cents"];
        match self {
            PlansCommand::List { remote } => {
                let (c, out) = client(&remote)?;
                out.list(&c.get("/admin/v1/plans").await?, "plans", columns);
            }
            PlansCommand::Create { slug, name, period, limits, rpm, tpm, price_cents, remote } => {
                let (c, out) = client(&remote)?;
                let mut map = serde_json::Map::new();
                for limit in &limits {
                    let (meter, amount) = limit
                        .split_once('=')
                        .with_context(|| format!("--limit {limit:?}: write METER=N or METER=unlimited"))?;
                    let amount = match amount {
                        "unlimited" | "null" => Value::Null,
                        n => json!(
                            n.parse::<i64>().with_context(|| format!("--limit {limit:?}: {n:?} is not a number"))?
                        ),
                    };
                    map.insert(meter.to_owned(), amount);
                }
                let mut body = json!({ "slug": slug, "period": period, "limits": map, "rpm": rpm, "tpm": tpm });
                if let Some(name) = name {
                    body["name"] = json!(name);
                }
                if let Some(price) = price_cents {
                    body["price_cents"] = json!(price);
                }
                out.record(&c.post("/admin/v1/plans", &body).await?, columns);
            }
        }
        Ok(())
    }
}

impl KeysCommand {
    async fn run(self) -> anyhow::Result<()> {
        match self {
            KeysCommand::Create { user, name, scopes, expires_at, remote } => {
                let (c, out) = client(&remote)?;
                let mut body = json!({ "name": name, "expires_at": expires_at });
                if !scopes.is_empty() {
                    body["scopes"] = json!(scopes);
                }
                let path = format!("/admin/v1/users/{}/keys", Client::segment(&user));
                out.new_key(&c.post(&path, &body).await?);
            }
            KeysCommand::List { user, remote } => {
                let (c, out) = client(&remote)?;
                let path = format!("/admin/v1/users/{}/keys", Client::segment(&user));
                out.list(&c.get(&path).await?, "keys", KEY_COLUMNS);
            }
            KeysCommand::Revoke { key_id, remote } => {
                let (c, out) = client(&remote)?;
                c.delete(&format!("/admin/v1/keys/{}", Client::segment(&key_id))).await?;
                out.done(&format!("revoked {key_id}"), json!({ "id": key_id, "revoked": true }));
            }
            KeysCommand::Rotate { key_id, grace_seconds, remote } => {
                let (c, out) = client(&remote)?;
                let path = format!("/admin/v1/keys/{}/rotate", Client::segment(&key_id));
                out.new_key(&c.post(&path, &json!({ "grace_seconds": grace_seconds })).await?);
            }
        }
        Ok(())
    }
}

impl UsageCommand {
    async fn run(self) -> anyhow::Result<()> {
        match self {
            UsageCommand::Show { user, period, remote } => {
                let (c, out) = client(&remote)?;
                let mut path = format!("/admin/v1/users/{}/usage", Client::segment(&user));
                if let Some(period) = period {
                    path = format!("{path}?period={}", Client::segment(&period));
                }
                let usage = c.get(&path).await?;
                let rows: Vec<Value> = usage["meters"]
                    .as_object()
                    .map(|m| m.iter().map(|(name, v)| json!({ "meter": name, "used": v["used"], "limit": v["limit"], "remaining": v["remaining"], "reserved": v["reserved"] })).collect())
                    .unwrap_or_default();
                let header = format!(
                    "user {}  plan {}  period {} .. {}",
                    crate::client::cell(&usage["user_id"]),
                    crate::client::cell(&usage["plan"]),
                    crate::client::cell(&usage["period"]["start"]),
                    crate::client::cell(&usage["period"]["end"])
                );
                out.titled_list(&usage, &header, &rows, &["meter", "used", "limit", "remaining", "reserved"]);
            }
            UsageCommand::Export { user, from, to, output, remote } => {
                let (c, _) = client(&remote)?;
                let mut query = Vec::new();
                query.extend(from.map(|f| ("from", f)));
                query.extend(to.map(|t| ("to", t)));
                let path = format!("/admin/v1/users/{}/usage/events", Client::segment(&user));
                let mut first = query.clone();
                first.push(("limit", "1".into()));
                let total = c.get_query(&path, &first).await?["total"].as_u64().unwrap_or(0);
                let mut sink: Box<dyn std::io::Write> = match &output {
                    Some(path) => Box::new(std::io::BufWriter::new(
                        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
                    )),
                    None => Box::new(std::io::stdout().lock()),
                };
                // A progress bar on the terminal for large exports to a file.
                let bar = if output.is_some() && total > 1000 {
                    indicatif::ProgressBar::new(total)
                } else {
                    indicatif::ProgressBar::hidden()
                };
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events ({eta} left)")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                let written = c
                    .get_csv(&path, &query, |chunk| {
                        sink.write_all(chunk)?;
                        bar.inc(chunk.iter().filter(|b| **b == b'\n').count() as u64);
                        Ok(())
                    })
                    .await?;
                sink.flush()?;
                bar.finish_and_clear();
                if let Some(path) = output {
                    eprintln!("wrote {} events to {}", written.saturating_sub(1), path.display());
                }
            }
        }
        Ok(())
    }
}

impl GrantsCommand {
    async fn run(self) -> anyhow::Result<()> {
        let GrantsCommand::Add { user, meter, amount, expires_at, remote } = self;
        let (c, out) = client(&remote)?;
        let path = format!("/admin/v1/users/{}/grants", Client::segment(&user));
        let grant = c.post(&path, &json!({ "meter": meter, "amount": amount, "expires_at": expires_at })).await?;
        out.record(&grant, &["id", "user_id", "meter", "amount", "starts_at", "expires_at"]);
        Ok(())
    }
}
