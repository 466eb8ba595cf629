//! The web pages (issue 6): the admin dashboard (`/ui`) and the user portal
//! (`/portal`). In headless Chromium (Debian's `chromium` driven by
//! `playwright-core`; the scripts are in `tests/browser/`) for what a person
//! sees, and over plain HTTP for what a browser hides: cookie attributes,
//! headers, CSRF refusals, single use across instances, and what the store
//! and the logs keep.
//!
//! Screenshots go to `test-output/screenshots/<store>/`.

use std::path::{Path, PathBuf};

use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_stores;
use crate::common::{ADMIN_TOKEN, Api, Backend, BinApp, TestApp, TestDb, eventually, mock_llm};

both_stores!(
    portal_meter_shows_numbers_and_colour_at_20_80_and_100_percent,
    a_key_made_in_the_portal_is_shown_once_and_can_be_revoked,
    admin_changes_to_plan_and_grants_show_in_the_portal,
    a_portal_link_works_once_even_across_instances,
    admin_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_it,
    forms_without_their_session_token_are_refused,
    a_portal_sign_in_with_a_key_lasts_as_long_as_the_key,
    no_session_id_link_or_token_reaches_the_store_or_the_logs,
    own_provider_keys_are_added_replaced_and_removed_in_the_portal_and_seen_by_the_admin,
    provider_key_forms_need_their_session_token_and_the_right_scope,
    a_secret_typed_into_the_portal_never_reaches_the_store_or_the_logs,
    the_audit_log_page_filters_by_user_action_and_day_and_pages_back,
);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace")
}

fn store_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// Runs `tests/browser/<script>.mjs` against `api`, one browser at a time;
/// fails loudly when chromium or the npm packages are missing. Returns what
/// the script printed.
pub(crate) async fn browser(script: &str, backend: Backend, api: &Api, env: &[(&str, String)]) -> String {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let dir = workspace().join("tests/browser");
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is missing at /usr/bin/chromium: scripts/test.sh installs it (apt-get install chromium)"
    );
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "tests/browser/node_modules is missing: scripts/test.sh runs `npm ci` there"
    );
    let shots = workspace().join("test-output/screenshots").join(store_name(backend));
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tokio::process::Command::new("node")
        .arg(format!("{script}.mjs"))
        .current_dir(&dir)
        .env("TG_BASE", &api.base)
        .env("TG_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TG_SCREENSHOTS", &shots)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs (it is installed with npm)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser test {script} failed:\n{text}");
    println!("{text}");
    text
}

async fn create_plan(api: &Api, slug: &str, name: &str, tokens: i64) {
    let body =
        json!({ "slug": slug, "name": name, "period": "month", "limits": { "tokens": tokens, "requests": null } });
    api.admin(Method::POST, "/admin/v1/plans", Some(body)).await.expect(201);
}

/// Records `tokens` (three quarters input, a quarter output) through the
/// metering API, as the app's backend would.
async fn record(api: &Api, user: &str, id: &str, tokens: i64) {
    let event = json!({ "id": id, "user_id": user, "feature": "analyze", "provider": "openai", "model": "gpt-4o-mini",
                        "input_tokens": tokens - tokens / 4, "output_tokens": tokens / 4, "requests": 1 });
    let reply = api.admin(Method::POST, "/v1/usage/events", Some(json!({ "events": [event] }))).await.expect(200);
    assert_eq!(reply["accepted"], 1, "{reply}");
}

async fn portal_link(api: &Api, user: &str) -> Value {
    let path = format!("/admin/v1/users/{}/portal-sessions", urlencoded(user));
    api.admin(Method::POST, &path, None).await.expect(201)
}

fn urlencoded(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

// ---- in the browser ----

async fn portal_meter_shows_numbers_and_colour_at_20_80_and_100_percent(backend: Backend) {
    let upgrade = "https://app.example/billing";
    let app = TestApp::spawn_with(backend, &[("TOLLGATE_UPGRADE_URL", upgrade)]).await;
    create_plan(&app.api, "small", "Small", 1000).await;
    create_plan(&app.api, "large", "Large", 100_000).await;
    let mut cases = Vec::new();
    for (name, used, remaining, level, alert) in
        [("20", 200, "800", "green", false), ("80", 800, "200", "amber", true), ("100", 1000, "0", "red", true)]
    {
        let user = format!("u_{name}");
        app.api.create_user(&user, "small").await;
        record(&app.api, &user, &format!("evt_{name}"), used).await;
        let link = portal_link(&app.api, &user).await;
        cases.push(json!({
            "name": name, "url": link["url"], "plan": "Small", "level": level, "alert": alert,
            "used": if used == 1000 { "1,000".to_owned() } else { used.to_string() }, "usedNumber": used,
            "limit": "1,000", "limitNumber": 1000, "remaining": remaining, "percent": used / 10,
        }));
    }
    let env = [("TG_CASES", Value::Array(cases).to_string()), ("TG_UPGRADE_URL", upgrade.to_owned())];
    browser("portal_meters", backend, &app.api, &env).await;
}

async fn a_key_made_in_the_portal_is_shown_once_and_can_be_revoked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_keys", "free").await;
    let link = portal_link(&app.api, "u_keys").await;
    browser("portal_keys", backend, &app.api, &[("TG_PORTAL_URL", link["url"].as_str().unwrap().to_owned())]).await;
    let keys = app.api.admin(Method::GET, "/admin/v1/users/u_keys/keys", None).await.expect(200);
    assert_eq!(keys["keys"][0]["name"], "laptop");
    assert!(keys["keys"][0]["revoked_at"].is_string(), "{keys}");
}

async fn admin_changes_to_plan_and_grants_show_in_the_portal(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    create_plan(&app.api, "small", "Small", 1000).await;
    create_plan(&app.api, "large", "Large", 10_000).await;
    for (user, plan, used) in [("u_low", "small", 200), ("u_high", "small", 800), ("u_none", "large", 0)] {
        app.api.create_user(user, plan).await;
        if used > 0 {
            record(&app.api, user, &format!("evt_{user}"), used).await;
        }
    }
    let link = portal_link(&app.api, "u_low").await;
    let env = [
        ("TG_USER", "u_low".to_owned()),
        ("TG_OVERVIEW_ORDER", json!(["u_high", "u_low", "u_none"]).to_string()),
        ("TG_PLAN", "large".to_owned()),
        ("TG_PLAN_NAME", "Large".to_owned()),
        ("TG_EXPECT_LIMIT", "15,000".to_owned()),
        ("TG_PORTAL_URL", link["url"].as_str().unwrap().to_owned()),
    ];
    browser("admin_changes", backend, &app.api, &env).await;
    let usage = app.api.admin(Method::GET, "/admin/v1/users/u_low/usage", None).await.expect(200);
    assert_eq!(usage["plan"], "large");
    assert_eq!(usage["meters"]["tokens"]["limit"], 15_000, "{usage}");
    assert_eq!(usage["meters"]["tokens"]["used"], 200, "the plan change kept the usage: {usage}");
    let team = app.api.admin(Method::GET, "/admin/v1/plans/team", None).await.expect(200);
    assert_eq!(team["payment_link"], "https://buy.stripe.com/test_team");
    assert_eq!(
        (team["limits"]["tokens"].as_i64(), team["rpm"].as_i64(), team["price_cents"].as_i64()),
        (Some(50_000), Some(60), Some(4900))
    );
}

async fn a_portal_link_works_once_even_across_instances(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_once", "free").await;
    let link = portal_link(&app.api, "u_once").await;
    browser("portal_link_once", backend, &app.api, &[("TG_PORTAL_URL", link["url"].as_str().unwrap().to_owned())])
        .await;

    // Opened on one instance, refused on another.
    let (sibling, _server) = app.sibling(&[]).await;
    let link = portal_link(&app.api, "u_once").await;
    let path = link["path"].as_str().unwrap();
    let first = get(&sibling, path, None).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(first.headers()[LOCATION], "/portal");
    let cookie = session_cookie(first.headers(), "tollgate_portal");
    assert_eq!(get(&app.api, path, None).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(get(&sibling, path, None).await.status(), StatusCode::FORBIDDEN);
    // The session it opened works on both.
    assert_eq!(get(&app.api, "/portal", Some(&cookie)).await.status(), StatusCode::OK);
    assert_eq!(get(&sibling, "/portal", Some(&cookie)).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_session_is_sent_to_sign_in() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for (path, login) in [("/ui", "/ui/login"), ("/ui/users/u_1", "/ui/login"), ("/portal", "/portal/login")] {
        let response = get(&app.api, path, None).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(response.headers()[LOCATION], login, "{path}");
    }
    browser("no_session", Backend::Sqlite, &app.api, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_sign_ins_are_slowed_down_with_a_retry_after() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("TOLLGATE_AUTH_FAILURE_LIMIT", "3")]).await;
    for area in ["ui", "ui", "portal"] {
        assert_eq!(sign_in(&app.api, area, "not-the-admin-token-at-all").await.status(), StatusCode::UNAUTHORIZED);
    }
    for area in ["ui", "portal"] {
        let blocked = sign_in(&app.api, area, ADMIN_TOKEN).await;
        assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS, "{area}");
        let retry: u64 = blocked.headers()[RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!(retry >= 1, "{area}");
        assert!(blocked.text().await.unwrap().contains("<form"), "the sign-in page again");
    }
}

// ---- over HTTP ----

async fn get(api: &Api, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut request = client.get(format!("{}{path}", api.base));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.expect("the server answers")
}

async fn post_form(api: &Api, path: &str, cookie: &str, form: &[(&str, &str)]) -> reqwest::Response {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let body: String =
        form.iter().map(|(k, v)| format!("{}={}", urlencoded(k), urlencoded(v))).collect::<Vec<_>>().join("&");
    client
        .post(format!("{}{path}", api.base))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("the server answers")
}

/// `name=value` of the cookie `name` that a response sets.
fn session_cookie(headers: &HeaderMap, name: &str) -> String {
    let line = set_cookie_line(headers, name);
    line.split(';').next().unwrap().to_owned()
}

fn set_cookie_line(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no cookie {name} in {headers:?}"))
}

/// The value of the first hidden `csrf` field of a page.
fn csrf_of(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a form with a csrf field") + 19;
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// Signs in at `/ui/login` (or `/portal/login`) with `token`; returns the
/// reply to the form.
async fn sign_in(api: &Api, area: &str, token: &str) -> reqwest::Response {
    let page = get(api, &format!("/{area}/login"), None).await;
    let signin = session_cookie(page.headers(), "tollgate_signin");
    let csrf = csrf_of(&page.text().await.unwrap());
    post_form(api, &format!("/{area}/login"), &signin, &[("csrf", &csrf), ("token", token)]).await
}

/// An admin session's cookie and its CSRF token.
async fn admin_session(api: &Api) -> (String, String) {
    let reply = sign_in(api, "ui", ADMIN_TOKEN).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let cookie = session_cookie(reply.headers(), "tollgate_ui");
    let html = get(api, "/ui", Some(&cookie)).await.text().await.unwrap();
    (cookie, csrf_of(&html))
}

async fn admin_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let page = get(&app.api, "/ui/login", None).await;
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    for part in ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(html.matches("<script").count() == html.matches("<script src=").count(), "no inline script: {html}");

    let wrong = sign_in(&app.api, "ui", "not-the-admin-token-at-all").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.text().await.unwrap().contains("That is not the admin token."));

    let reply = sign_in(&app.api, "ui", ADMIN_TOKEN).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert_eq!(reply.headers()[LOCATION], "/ui");
    let line = set_cookie_line(reply.headers(), "tollgate_ui");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(line.contains(attribute), "{line}");
    }
    assert!(!line.contains("Secure"), "plain http: no Secure attribute: {line}");
    let cookie = session_cookie(reply.headers(), "tollgate_ui");
    let overview = get(&app.api, "/ui", Some(&cookie)).await;
    assert_eq!(overview.status(), StatusCode::OK);
    let csrf = csrf_of(&overview.text().await.unwrap());
    let out = post_form(&app.api, "/ui/logout", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(out.headers()[LOCATION], "/ui/login");
    assert!(set_cookie_line(out.headers(), "tollgate_ui").contains("Max-Age=0"));
    let after = get(&app.api, "/ui", Some(&cookie)).await;
    assert_eq!((after.status(), after.headers()[LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, "/ui/login"));

    // Behind https (said by the public URL), the cookie is Secure.
    let (sibling, _server) = app.sibling(&[("TOLLGATE_PUBLIC_URL", "https://tollgate.example.com")]).await;
    let reply = sign_in(&sibling, "ui", ADMIN_TOKEN).await;
    assert!(set_cookie_line(reply.headers(), "tollgate_ui").contains("; Secure"));
    app.api.create_user("u_s", "free").await;
    let link = portal_link(&sibling, "u_s").await;
    assert!(link["url"].as_str().unwrap().starts_with("https://tollgate.example.com/portal/session/"), "{link}");
}

async fn forms_without_their_session_token_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_csrf", "free").await;
    record(&app.api, "u_csrf", "evt_csrf", 40).await;
    let (cookie, csrf) = admin_session(&app.api).await;
    for form in [vec![], vec![("csrf", "forged")], vec![("csrf", &csrf[..csrf.len() - 1])]] {
        let reply = post_form(&app.api, "/ui/users/u_csrf/reset", &cookie, &form).await;
        assert_eq!(reply.status(), StatusCode::FORBIDDEN, "{form:?}");
    }
    let reply =
        post_form(&app.api, "/ui/users/u_csrf/grants", &cookie, &[("csrf", "x"), ("meter", "tokens"), ("amount", "9")])
            .await;
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    let usage = app.api.admin(Method::GET, "/admin/v1/users/u_csrf/usage", None).await.expect(200);
    assert_eq!(usage["meters"]["tokens"]["used"], 40, "nothing was reset: {usage}");
    assert_eq!(
        app.api.admin(Method::GET, "/admin/v1/users/u_csrf/grants", None).await.expect(200)["grants"],
        json!([])
    );
    // Another session's token does not pass either.
    let (_, other_csrf) = admin_session(&app.api).await;
    assert_ne!(other_csrf, csrf);
    let reply = post_form(&app.api, "/ui/users/u_csrf/reset", &cookie, &[("csrf", &other_csrf)]).await;
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    // Bad input is a 400 naming the field; the right token works.
    let reply = post_form(
        &app.api,
        "/ui/users/u_csrf/grants",
        &cookie,
        &[("csrf", &csrf), ("meter", "tokens"), ("amount", "lots")],
    )
    .await;
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
    assert!(reply.text().await.unwrap().contains("amount"));
    let reply = post_form(&app.api, "/ui/users/u_csrf/reset", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(reply.headers()[LOCATION], "/ui/users/u_csrf?done=reset");
    let usage = app.api.admin(Method::GET, "/admin/v1/users/u_csrf/usage", None).await.expect(200);
    assert_eq!(usage["meters"]["tokens"]["used"], 0, "{usage}");
    // A sign-in form needs the token tied to the browser's sign-in cookie.
    let reply = post_form(&app.api, "/ui/login", "tollgate_signin=x", &[("csrf", "x"), ("token", ADMIN_TOKEN)]).await;
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
}

async fn a_portal_sign_in_with_a_key_lasts_as_long_as_the_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_key", "free").await;
    let key = app.api.create_key("u_key", json!({ "name": "cli", "scopes": ["proxy", "usage:read"] })).await;
    let reply = sign_in(&app.api, "portal", key["key"].as_str().unwrap()).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let line = set_cookie_line(reply.headers(), "tollgate_portal");
    assert!(line.contains("HttpOnly") && line.contains("SameSite=Lax") && line.contains("Path=/portal"), "{line}");
    let cookie = session_cookie(reply.headers(), "tollgate_portal");
    let page = get(&app.api, "/portal", Some(&cookie)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("u_key") && html.contains("cannot manage keys"), "a key without keys:manage manages none");
    // The portal cookie is no admin session.
    assert_eq!(
        get(&app.api, "/ui", Some(&cookie.replace("tollgate_portal", "tollgate_ui"))).await.status(),
        StatusCode::SEE_OTHER
    );
    let id = key["id"].as_str().unwrap();
    app.api.admin(Method::DELETE, &format!("/admin/v1/keys/{id}"), None).await.expect(204);
    assert_eq!(get(&app.api, "/portal", Some(&cookie)).await.headers()[LOCATION], "/portal/login");

    let proxy_only = app.api.create_key("u_key", json!({ "scopes": ["proxy"] })).await;
    let reply = sign_in(&app.api, "portal", proxy_only["key"].as_str().unwrap()).await;
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    assert!(reply.text().await.unwrap().contains("usage:read"));
    let reply = sign_in(&app.api, "portal", ADMIN_TOKEN).await;
    assert_eq!(reply.status(), StatusCode::FORBIDDEN, "the admin token is no user's key");
    let reply = sign_in(&app.api, "portal", "tg_not_a_key").await;
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
}

async fn no_session_id_link_or_token_reaches_the_store_or_the_logs(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut env = db.env();
    env.push(("TOLLGATE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
    env.push(("TOLLGATE_LOG".into(), "debug".into()));
    let mut bin = BinApp::start(db.dir.path(), &env, &[], "web");
    let api = bin.api.clone();
    api.create_user("u_logs", "free").await;
    let link = portal_link(&api, "u_logs").await;
    let path = link["path"].as_str().unwrap().to_owned();
    let token = path.trim_start_matches("/portal/session/").to_owned();
    let opened = get(&api, &path, None).await;
    let portal_cookie = session_cookie(opened.headers(), "tollgate_portal");
    let reply = sign_in(&api, "ui", ADMIN_TOKEN).await;
    let admin_cookie = session_cookie(reply.headers(), "tollgate_ui");
    // Bad input on the new route is a 400 naming the field, and nothing is kept.
    let bad =
        api.admin(Method::POST, "/admin/v1/users/u_logs/portal-sessions", Some(json!({ "ttl_seconds": 0 }))).await;
    assert_eq!(bad.expect(400)["error"]["field"], "ttl_seconds");
    api.admin(Method::POST, "/admin/v1/users/nobody/portal-sessions", None).await.expect(404);
    assert!(bin.terminate());
    let logs = bin.output();
    assert!(logs.contains("/portal/session/…"), "the request was logged, without its link");
    let store = db.dump();
    for secret in
        [token.as_str(), ADMIN_TOKEN, portal_cookie.split('=').nth(1).unwrap(), admin_cookie.split('=').nth(1).unwrap()]
    {
        assert!(!logs.contains(secret), "a secret is in the logs");
        assert!(!store.contains(secret), "a secret is in the store");
    }
    let signature = token.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature) && !store.contains(signature));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_links_are_refused_when_tampered_with_or_expired() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("TOLLGATE_PORTAL_LINK_TTL_SECONDS", "1")]).await;
    app.api.create_user("u_t", "free").await;
    app.api.create_user("u_other", "free").await;
    let link = portal_link(&app.api, "u_t").await;
    let path = link["path"].as_str().unwrap();
    // Another user's id in a link signed for u_t.
    let mut parts: Vec<&str> = path.trim_start_matches("/portal/session/").split('.').collect();
    let other = base64_url("u_other");
    parts[2] = &other;
    let forged = format!("/portal/session/{}", parts.join("."));
    let reply = get(&app.api, &forged, None).await;
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    assert!(reply.text().await.unwrap().contains("not valid"));
    assert_eq!(get(&app.api, "/portal/session/garbage", None).await.status(), StatusCode::FORBIDDEN);
    // A link not opened in time has expired.
    let expired = eventually(std::time::Duration::from_secs(10), || async {
        get(&app.api, path, None).await.text().await.unwrap().contains("expired")
    })
    .await;
    assert!(expired, "the link should expire after a second");
    let lived = app
        .api
        .admin(Method::POST, "/admin/v1/users/u_t/portal-sessions", Some(json!({ "ttl_seconds": 600 })))
        .await
        .expect(201);
    let at = tollgate_domain::Timestamp::parse_rfc3339(lived["expires_at"].as_str().unwrap()).unwrap();
    assert!(
        at.millis() - tollgate_domain::Timestamp::now().millis() > 500_000,
        "ttl_seconds sets the lifetime: {lived}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plans_payment_link_is_where_its_upgrade_button_goes() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("TOLLGATE_UPGRADE_URL", "https://app.example/billing")]).await;
    let bad = json!({ "slug": "pro_x", "payment_link": "javascript:alert(1)" });
    let reply = app.api.admin(Method::POST, "/admin/v1/plans", Some(bad)).await;
    assert_eq!(reply.expect(400)["error"]["field"], "payment_link");
    let body = json!({ "slug": "pro_x", "name": "Pro X", "payment_link": "https://buy.stripe.com/test_1" });
    let plan = app.api.admin(Method::POST, "/admin/v1/plans", Some(body)).await.expect(201);
    assert_eq!(plan["payment_link"], "https://buy.stripe.com/test_1");
    app.api.create_user("u_up", "free").await;
    let link = portal_link(&app.api, "u_up").await;
    let opened = get(&app.api, link["path"].as_str().unwrap(), None).await;
    let cookie = session_cookie(opened.headers(), "tollgate_portal");
    let html = get(&app.api, "/portal/plans", Some(&cookie)).await.text().await.unwrap();
    assert!(html.contains("href=\"https://buy.stripe.com/test_1?client_reference_id=u_up\""), "{html}");
    assert!(html.contains("href=\"https://app.example/billing?plan=pro&#38;user_id=u_up\""), "{html}");
    let cleared = app.api.admin(Method::PATCH, "/admin/v1/plans/pro_x", Some(json!({ "payment_link": null }))).await;
    assert!(cleared.expect(200)["payment_link"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_ids_with_markup_render_inert_on_every_page() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let id = "u_<script>alert(1)</script>\"'&";
    app.api.create_user(id, "free").await;
    record(&app.api, id, "evt_x", 10).await;
    let (cookie, _) = admin_session(&app.api).await;
    let overview = get(&app.api, "/ui", Some(&cookie)).await.text().await.unwrap();
    let user_page = get(&app.api, &format!("/ui/users/{}", urlencoded(id)), Some(&cookie)).await.text().await.unwrap();
    let link = portal_link(&app.api, id).await;
    let opened = get(&app.api, link["path"].as_str().unwrap(), None).await;
    let portal_cookie = session_cookie(opened.headers(), "tollgate_portal");
    let portal = get(&app.api, "/portal", Some(&portal_cookie)).await.text().await.unwrap();
    for (name, html) in [("overview", &overview), ("user page", &user_page), ("portal", &portal)] {
        assert!(
            html.contains("u_&#60;script&#62;alert(1)&#60;/script&#62;")
                || html.contains("u_&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{name}: {html}"
        );
        assert!(!html.contains("<script>alert"), "{name} renders the id as markup");
    }
}

// ---- own provider keys and the audit log (issues 4 and 6) ----

async fn own_provider_keys_are_added_replaced_and_removed_in_the_portal_and_seen_by_the_admin(backend: Backend) {
    let (first, refused, second, groq) =
        ("sk-portal-first-key-A1b2", "sk-ant-not-for-openai-C3d4", "sk-portal-second-key-E5f6", "gsk_portal-groq-G7h8");
    // The replacement is checked against the mock, which accepts it alone.
    let mock = mock_llm(&[second]).await;
    let app = TestApp::spawn_with(backend, &[("TOLLGATE_OPENAI_BASE_URL", &mock.openai_base_url())]).await;
    create_plan(&app.api, "small", "Small", 1000).await;
    let user = "u_byok";
    app.api.create_user(user, "small").await;
    record(&app.api, user, "evt_byok", 1000).await;
    let link = portal_link(&app.api, user).await;
    let env = [
        ("TG_PORTAL_URL", link["url"].as_str().unwrap().to_owned()),
        ("TG_USER", user.to_owned()),
        ("TG_SECRET_FIRST", first.to_owned()),
        ("TG_SECRET_REFUSED", refused.to_owned()),
        ("TG_SECRET_SECOND", second.to_owned()),
        ("TG_SECRET_GROQ", groq.to_owned()),
    ];
    browser("portal_provider_keys", backend, &app.api, &env).await;

    let listed = app.api.admin(Method::GET, "/admin/v1/users/u_byok/credentials", None).await.expect(200);
    assert_eq!(listed["credentials"], json!([]), "the admin removed the last one");
    let audit = app.api.admin(Method::GET, "/admin/v1/audit?user=u_byok&action=credential", None).await.expect(200);
    let seen: Vec<String> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {} {}", e["action"].as_str().unwrap(), e["actor"].as_str().unwrap(), e["target"]))
        .collect();
    assert_eq!(
        seen,
        [
            "credential.removed admin \"credential:u_byok/groq\"",
            "credential.removed portal:u_byok \"credential:u_byok/openai\"",
            "credential.set portal:u_byok \"credential:u_byok/groq\"",
            "credential.set portal:u_byok \"credential:u_byok/openai\"",
            "credential.set portal:u_byok \"credential:u_byok/openai\"",
        ]
    );
    assert_eq!(audit["entries"][3]["details"]["validation"], "valid", "the replacement was checked: {audit}");
    assert_eq!(mock.requests().len(), 1, "only the replacement was sent to the provider");
}

/// A portal session opened with a link: its cookie and form token.
async fn portal_session(api: &Api, user: &str) -> (String, String) {
    let link = portal_link(api, user).await;
    let opened = get(api, link["path"].as_str().unwrap(), None).await;
    let cookie = session_cookie(opened.headers(), "tollgate_portal");
    let html = get(api, "/portal", Some(&cookie)).await.text().await.unwrap();
    (cookie, csrf_of(&html))
}

async fn credentials_of(api: &Api, user: &str) -> Vec<String> {
    let listed = api.admin(Method::GET, &format!("/admin/v1/users/{user}/credentials"), None).await.expect(200);
    listed["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}…{}", c["provider"].as_str().unwrap(), c["last4"].as_str().unwrap()))
        .collect()
}

async fn provider_key_forms_need_their_session_token_and_the_right_scope(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = "u_forms";
    app.api.create_user(user, "free").await;
    let (cookie, csrf) = portal_session(&app.api, user).await;
    let secret = [("provider", "openai"), ("secret", "sk-forms-secret-0001"), ("label", "x")];

    // Without the token, a forged one, or another session's: refused, nothing kept.
    let (_, other_csrf) = portal_session(&app.api, user).await;
    for token in [None, Some("forged"), Some(other_csrf.as_str()), Some(&csrf[..csrf.len() - 1])] {
        let mut form = secret.to_vec();
        form.extend(token.map(|t| ("csrf", t)));
        let reply = post_form(&app.api, "/portal/provider-keys", &cookie, &form).await;
        assert_eq!(reply.status(), StatusCode::FORBIDDEN, "{token:?}");
    }
    assert!(credentials_of(&app.api, user).await.is_empty(), "no form without its token stored anything");
    let mut form = secret.to_vec();
    form.push(("csrf", &csrf));
    let reply = post_form(&app.api, "/portal/provider-keys", &cookie, &form).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert_eq!(reply.headers()[LOCATION], "/portal?done=provider-key-saved#provider-keys");
    assert_eq!(credentials_of(&app.api, user).await, ["openai…0001"]);

    // Removing needs the token too, in the portal and on the admin's page.
    let remove = "/portal/provider-keys/openai/remove";
    assert_eq!(post_form(&app.api, remove, &cookie, &[("csrf", "forged")]).await.status(), StatusCode::FORBIDDEN);
    let (admin_cookie, admin_csrf) = admin_session(&app.api).await;
    let admin_remove = format!("/ui/users/{user}/credentials/openai/remove");
    let reply = post_form(&app.api, &admin_remove, &admin_cookie, &[("csrf", &csrf)]).await;
    assert_eq!(reply.status(), StatusCode::FORBIDDEN, "a portal token is no admin token");
    let reply = post_form(&app.api, &admin_remove, &cookie, &[("csrf", &admin_csrf)]).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER, "a portal cookie is no admin session");
    assert_eq!(reply.headers()[LOCATION], "/ui/login");
    assert_eq!(credentials_of(&app.api, user).await, ["openai…0001"], "nothing was removed");
    // Bad input is a 400 naming the field; a missing key is a 404.
    let reply =
        post_form(&app.api, "/portal/provider-keys", &cookie, &[("csrf", &csrf), ("provider", "Open AI")]).await;
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
    assert!(reply.text().await.unwrap().contains("id=\"cred-provider-error\""));
    let reply = post_form(&app.api, "/portal/provider-keys/groq/remove", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(reply.status(), StatusCode::NOT_FOUND);
    let reply = post_form(&app.api, &admin_remove, &admin_cookie, &[("csrf", &admin_csrf)]).await;
    assert_eq!(reply.headers()[LOCATION], "/ui/users/u_forms?done=credential-removed#credentials");
    assert!(credentials_of(&app.api, user).await.is_empty());

    // A session opened with a key may change provider keys only if the key
    // holds credentials:manage; its actions are the key's in the audit log.
    let plain = app.api.create_key(user, json!({ "scopes": ["proxy", "usage:read"] })).await;
    let reply = sign_in(&app.api, "portal", plain["key"].as_str().unwrap()).await;
    let plain_cookie = session_cookie(reply.headers(), "tollgate_portal");
    let html = get(&app.api, "/portal", Some(&plain_cookie)).await.text().await.unwrap();
    assert!(html.contains("cannot manage provider keys") && !html.contains("id=\"provider-key-form\""), "{html}");
    let mut form = secret.to_vec();
    let plain_csrf = csrf_of(&html);
    form.push(("csrf", &plain_csrf));
    let reply = post_form(&app.api, "/portal/provider-keys", &plain_cookie, &form).await;
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    assert!(reply.text().await.unwrap().contains("credentials:manage"));
    assert!(credentials_of(&app.api, user).await.is_empty());

    let manager = app.api.create_key(user, json!({ "scopes": ["usage:read", "credentials:manage"] })).await;
    let reply = sign_in(&app.api, "portal", manager["key"].as_str().unwrap()).await;
    let manager_cookie = session_cookie(reply.headers(), "tollgate_portal");
    let html = get(&app.api, "/portal", Some(&manager_cookie)).await.text().await.unwrap();
    assert!(html.contains("id=\"provider-key-form\""), "{html}");
    let manager_csrf = csrf_of(&html);
    let mut form = secret.to_vec();
    form.push(("csrf", &manager_csrf));
    let reply = post_form(&app.api, "/portal/provider-keys", &manager_cookie, &form).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let audit = app.api.admin(Method::GET, "/admin/v1/audit?action=credential.set&limit=1", None).await.expect(200);
    assert_eq!(audit["entries"][0]["actor"], manager["id"], "{audit}");
    assert_eq!(audit["entries"][0]["user_id"], user);
}

async fn a_secret_typed_into_the_portal_never_reaches_the_store_or_the_logs(backend: Backend) {
    let (saved, refused, unlabelled, checked) = (
        "sk-typed-into-the-portal-Q1w2",
        "sk-ant-typed-but-refused-R3t4",
        "sk-typed-with-a-bad-label-Y5u6",
        "sk-typed-and-validated-I7o8",
    );
    let mock = mock_llm(&[checked]).await;
    let db = TestDb::new(backend).await;
    let mut env = db.env();
    env.push(("TOLLGATE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
    env.push(("TOLLGATE_LOG".into(), "debug".into()));
    env.push(("TOLLGATE_OPENAI_BASE_URL".into(), mock.openai_base_url()));
    let mut bin = BinApp::start(db.dir.path(), &env, &[], "portal-secrets");
    let api = bin.api.clone();
    api.create_user("u_typed", "free").await;
    let (cookie, csrf) = portal_session(&api, "u_typed").await;
    let send = |secret: &'static str, label: String, validate: bool| {
        let (api, cookie, csrf) = (api.clone(), cookie.clone(), csrf.clone());
        async move {
            let mut form = vec![("csrf", csrf.as_str()), ("provider", "openai"), ("secret", secret), ("label", &label)];
            if validate {
                form.push(("validate", "1"));
            }
            let reply = post_form(&api, "/portal/provider-keys", &cookie, &form).await;
            let status = reply.status();
            let html = reply.text().await.unwrap();
            assert!(!html.contains(&secret[3..]), "the page repeats the secret it was sent");
            status
        }
    };
    assert_eq!(send(saved, "mine".into(), false).await, StatusCode::SEE_OTHER);
    assert_eq!(send(refused, "mine".into(), false).await, StatusCode::BAD_REQUEST);
    assert_eq!(send(unlabelled, "x".repeat(101), false).await, StatusCode::BAD_REQUEST, "a refused label");
    assert_eq!(send(checked, "mine".into(), true).await, StatusCode::SEE_OTHER);
    let status = api.admin(Method::GET, "/admin/v1/users/u_typed/credentials/openai", None).await.expect(200);
    assert_eq!((status["last4"].as_str(), status["validation"]["outcome"].as_str()), (Some("I7o8"), Some("valid")));
    let pages = [
        get(&api, "/portal", Some(&cookie)).await.text().await.unwrap(),
        get(&api, "/portal?provider=openai", Some(&cookie)).await.text().await.unwrap(),
    ];
    let audit = api.admin(Method::GET, "/admin/v1/audit?limit=1000", None).await.expect(200).to_string();
    assert!(audit.contains("credential.set"));
    assert!(bin.terminate());
    let logs = bin.output();
    assert!(logs.contains("DEBUG") || logs.contains("debug"), "the logs are at debug level");
    assert!(logs.contains("/portal/provider-keys"), "the form posts were logged");
    let store = db.dump();
    assert!(store.contains("I7o8"), "the dump holds the credential's last 4 characters");
    for secret in [saved, refused, unlabelled, checked] {
        let middle = &secret[3..secret.len() - 4];
        for (place, text) in [("the store", &store), ("the logs", &logs), ("the audit log", &audit)] {
            assert!(!text.contains(middle), "a secret typed into the portal is in {place}");
        }
        for page in &pages {
            assert!(!page.contains(middle), "a secret is rendered back");
        }
    }
}

async fn the_audit_log_page_filters_by_user_action_and_day_and_pages_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_a", "free").await;
    app.api.create_user("u_b", "free").await;
    for i in 0..55 {
        app.api.create_key("u_a", json!({ "name": format!("k{i}") })).await;
    }
    app.api.create_key("u_b", json!({ "name": "only" })).await;
    let (cookie, _) = admin_session(&app.api).await;
    let page = |query: &str| {
        let (api, cookie, path) = (app.api.clone(), cookie.clone(), format!("/ui/audit{query}"));
        async move {
            let reply = get(&api, &path, Some(&cookie)).await;
            (reply.status(), reply.text().await.unwrap())
        }
    };
    let rows = |html: &str| html.matches("<tr data-action=").count();

    // Newest first, 50 a page; the older page links back to the newest.
    let (status, html) = page("").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows(&html), 50);
    let newest = html.find("data-action=\"admin.login\"").unwrap();
    assert!(newest < html.find("data-user=\"u_b\"").unwrap(), "the sign-in is the newest entry");
    let older = html.split("href=\"/ui/audit?cursor=").nth(1).expect("a link to older entries");
    let cursor = &older[..older.find('"').unwrap()];
    let (_, html) = page(&format!("?cursor={cursor}")).await;
    assert_eq!(rows(&html), 57 - 50, "55 + 1 keys and the sign-in");
    assert!(html.contains("Older entries") && html.contains("href=\"/ui/audit\">Newest entries"));
    assert!(!html.contains("rel=\"next\""), "no page after the last");

    // By user, by family and action, by day.
    let (_, html) = page("?user=u_b").await;
    assert_eq!((rows(&html), html.matches("data-user=\"u_b\"").count()), (1, 1));
    let (_, html) = page("?action=admin").await;
    assert_eq!(rows(&html), 1);
    let (_, html) = page("?user=u_a&action=key.created").await;
    assert_eq!(rows(&html), 50);
    assert!(html.contains("href=\"/ui/audit?user=u_a&#38;action=key.created&#38;cursor="), "filters stay in the link");
    let today = chrono::Utc::now().date_naive();
    let (_, html) = page(&format!("?from={today}&to={today}&user=u_b")).await;
    assert_eq!(rows(&html), 1, "today, included");
    let yesterday = today.pred_opt().unwrap();
    let (_, html) = page(&format!("?to={yesterday}")).await;
    assert_eq!(rows(&html), 0);
    assert!(html.contains("No entries match."));

    // A bad filter is a 400 naming the field, shown on the page.
    for (query, field) in [("?action=key.stolen", "action"), ("?from=yesterday", "from"), ("?cursor=abc", "cursor")] {
        let (status, html) = page(query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(html.contains("id=\"audit-error\" role=\"alert\""), "{query}: {html}");
        if field != "cursor" {
            assert!(html.contains("aria-invalid=\"true\" aria-describedby=\"audit-error\""), "{query}: {html}");
        }
    }
    // Without a session, the sign-in page.
    assert_eq!(get(&app.api, "/ui/audit", None).await.headers()[LOCATION], "/ui/login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_key_labels_with_markup_render_inert_in_the_portal_and_on_the_user_page() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let markup = "<script>alert(1)</script>";
    app.api.create_user("u_label", "free").await;
    let body = json!({ "secret": "my-llm-secret-0001", "label": markup });
    app.api.admin(Method::PUT, "/admin/v1/users/u_label/credentials/my-llm", Some(body)).await.expect(200);
    let (cookie, _) = admin_session(&app.api).await;
    let user_page = get(&app.api, "/ui/users/u_label", Some(&cookie)).await.text().await.unwrap();
    let (portal_cookie, _) = portal_session(&app.api, "u_label").await;
    let portal = get(&app.api, "/portal?provider=my-llm", Some(&portal_cookie)).await.text().await.unwrap();
    for (name, html) in [("user page", &user_page), ("portal", &portal)] {
        assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{name}: {html}");
        assert!(!html.contains("<script>alert"), "{name} renders the label as markup");
        assert!(html.contains("…0001") && !html.contains("my-llm-secret"), "{name}: {html}");
    }
    assert!(portal.contains("value=\"&#60;script&#62;alert(1)&#60;/script&#62;\""), "the replace form's label");
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}
