//! `tollgate demo`: the service and the mock provider in one process, on a
//! fresh temporary SQLite database, with a plan, a user and a key made for
//! the visitor, and ready-to-paste commands. Nothing leaves the machine:
//! every provider's base URL points at the mock, whose platform keys are
//! made up. The temporary data is removed at exit.

use std::path::Path;

use anyhow::Context;
use serde_json::json;
use tollgate_domain::base62;
use tollgate_server::Config;

use crate::client::Client;

/// The plan, user and key the demo makes.
const PLAN: &str = "starter";
const USER: &str = "demo-user";

/// Runs the demo until `shutdown` (Ctrl-C or SIGTERM). The service listens
/// on `TOLLGATE_LISTEN` (default 127.0.0.1:8787).
pub async fn run(shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let mock = tollgate_mock::start(tollgate_mock::MockConfig {
        tokens_per_second: Some(30.0),
        ..tollgate_mock::MockConfig::default()
    })
    .await
    .context("failed to start the mock provider")?;
    let data_dir = std::env::temp_dir().join(format!("tollgate-demo-{}-{}", std::process::id(), base62::random(6)));
    let admin_token = format!("tga_demo_{}", base62::random(32));
    let result = serve(&mock, &data_dir, &admin_token, shutdown).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    let stopped = mock.shutdown().await;
    result.and(stopped)
}

/// The demo's settings: the caller's `TOLLGATE_LISTEN` and log settings, a
/// temporary data directory, and every provider at the mock.
fn config(mock: &tollgate_mock::MockServer, data_dir: &Path, admin_token: &str) -> anyhow::Result<Config> {
    let kept = ["TOLLGATE_LISTEN", "TOLLGATE_LOG", "TOLLGATE_LOG_FORMAT"];
    let mut env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| kept.contains(&k.as_str())).collect();
    let (openai, groq, base) = (mock.openai_base_url(), mock.groq_base_url(), mock.base_url());
    for (k, v) in [
        ("TOLLGATE_DATA_DIR", data_dir.display().to_string()),
        ("TOLLGATE_ADMIN_TOKEN", admin_token.to_owned()),
        ("TOLLGATE_OPENAI_BASE_URL", openai),
        ("TOLLGATE_GROQ_BASE_URL", groq),
        ("TOLLGATE_ANTHROPIC_BASE_URL", base.clone()),
        ("TOLLGATE_GEMINI_BASE_URL", base),
        ("OPENAI_API_KEY", "sk-demo-platform-openai".to_owned()),
        ("ANTHROPIC_API_KEY", "sk-ant-demo-platform".to_owned()),
        ("GEMINI_API_KEY", "AIzaDemoPlatformGemini".to_owned()),
        ("GROQ_API_KEY", "gsk_demo_platform_groq".to_owned()),
    ] {
        env.push((k.to_owned(), v));
    }
    Ok(Config::from_sources(None, &env)?)
}

async fn serve(
    mock: &tollgate_mock::MockServer,
    data_dir: &Path,
    admin_token: &str,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = config(mock, data_dir, admin_token)?;
    tollgate_server::logging::init(&config)?;
    let server = tollgate_server::start(config).await?;
    let url = format!("http://{}", server.addr);
    let key = match seed(&url, admin_token).await {
        Ok(key) => key,
        Err(e) => {
            server.shutdown().await?;
            return Err(e);
        }
    };
    println!("{}", instructions(&url, &mock.base_url(), admin_token, &key, data_dir));
    shutdown.await;
    server.shutdown().await
}

/// The demo's plan, user and key (whose secret is returned).
async fn seed(url: &str, admin_token: &str) -> anyhow::Result<String> {
    let admin = Client::with_token(url, admin_token);
    let plan = json!({
        "slug": PLAN, "name": "Starter (demo)", "period": "month",
        "limits": {"tokens": 100_000, "requests": 1_000}, "rpm": 60, "tpm": 100_000,
    });
    admin.post("/admin/v1/plans", &plan).await.context("failed to create the demo plan")?;
    let user = json!({"id": USER, "plan": PLAN, "email": "demo@example.com"});
    admin.post("/admin/v1/users", &user).await.context("failed to create the demo user")?;
    let scopes = ["proxy", "usage:read", "keys:manage", "credentials:manage"];
    let key = admin
        .post(&format!("/admin/v1/users/{USER}/keys"), &json!({"name": "demo", "scopes": scopes}))
        .await
        .context("failed to create the demo key")?;
    key["key"].as_str().map(str::to_owned).context("the new key's secret was not returned")
}

fn instructions(url: &str, mock: &str, admin_token: &str, key: &str, data_dir: &Path) -> String {
    format!(
        r#"Tollgate demo: the gateway at {url}, in front of a built-in mock provider ({mock}).
Nothing leaves this machine: every provider's base URL points at the mock.

Admin token: {admin_token}
User "{USER}" on plan "{PLAN}" (100,000 tokens and 1,000 requests a month, 60 requests a minute), key:
  {key}

Call the gateway as you would call OpenAI:
  curl -s {url}/v1/chat/completions \
    -H "Authorization: Bearer {key}" \
    -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Hello, toll gate!"}}]}}'

With the OpenAI Python SDK (pip install openai), only the base URL and the key change:
  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="{key}")
  reply = client.chat.completions.create(
      model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hello, toll gate!"}}])
  print(reply.choices[0].message.content, reply.usage)

What it cost the user:
  curl -s {url}/v1/me/usage -H "Authorization: Bearer {key}"

Dashboard: {url}/ui (log in with the admin token)

Ctrl-C stops the demo; its data ({}) is removed."#,
        data_dir.display()
    )
}
