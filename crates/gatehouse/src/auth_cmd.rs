//! `gatehouse auth`: the seeds' manual identity steps from the command line — create a user (as
//! firebase-admin's `auth.create_user`), sign in with e-mail and password and print the ID token
//! (as the seed's pyrebase script), mint a custom token signed by a service account (as
//! `auth.create_custom_token`). The first two talk to a running identity server over its REST
//! API; the custom token is signed through IAM on the data directory.

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct AuthArgs {
    /// The identity server.
    #[arg(
        long,
        default_value = "http://127.0.0.1:9099",
        env = "GATEHOUSE_IDENTITY_URL",
        global = true
    )]
    identity_url: String,
    /// The web API key sign-in uses.
    #[arg(
        long,
        default_value = "demo-api-key",
        env = "GATEHOUSE_API_KEY",
        global = true
    )]
    api_key: String,
    /// The project (admin calls).
    #[arg(
        long,
        default_value = "demo-project",
        env = "GATEHOUSE_PROJECT",
        global = true
    )]
    project: String,
    /// Admin credential for production projects (development accepts `owner`).
    #[arg(
        long,
        env = "GATEHOUSE_ADMIN_KEY",
        hide_env_values = true,
        global = true
    )]
    admin_key: Option<String>,
    #[arg(long, value_enum, default_value = "text", global = true)]
    output: Output,
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum AuthCommand {
    /// Users of the project.
    ///
    /// Example: gatehouse auth users create --email grace@example.com --password s3cret-pw
    #[command(subcommand)]
    Users(UsersCommand),
    /// Sign in with e-mail and password; prints the ID token.
    ///
    /// Example: TOKEN=$(gatehouse auth sign-in --email ada@example.com --password correct-horse-battery)
    SignIn {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
    },
    /// A custom token for `uid` with extra claims, signed by a service account through IAM
    /// (exchange it with signInWithCustomToken).
    ///
    /// Example: gatehouse auth custom-token --uid u1 --claims '{"profile":"a-user-profile"}' --service-account firebase-admin@demo-project.iam.gserviceaccount.com
    CustomToken {
        #[arg(long)]
        uid: String,
        /// A JSON object of developer claims.
        #[arg(long)]
        claims: Option<String>,
        #[arg(long)]
        service_account: String,
        /// Where IAM keeps its keys.
        #[command(flatten)]
        store: crate::cli::StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Create a user.
    ///
    /// Example: gatehouse auth users create --email grace@example.com --password s3cret-pw --display-name Grace
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        display_name: Option<String>,
        /// The uid (default: generated).
        #[arg(long)]
        uid: Option<String>,
    },
}

async fn call(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let res = req
        .send()
        .await
        .context("the identity server did not answer")?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{} ({status})",
            body["error"]["message"]
                .as_str()
                .unwrap_or("request failed")
        );
    }
    Ok(body)
}

pub async fn run(args: AuthArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let base = args.identity_url.trim_end_matches('/');
    let out = |text: &str, json: &Value| {
        if args.output == Output::Json {
            crate::say(&json.to_string());
        } else {
            crate::say(text);
        }
    };
    match &args.command {
        AuthCommand::Users(UsersCommand::Create {
            email,
            password,
            display_name,
            uid,
        }) => {
            let mut body = json!({"email": email, "password": password});
            if let Some(d) = display_name {
                body["displayName"] = json!(d);
            }
            if let Some(u) = uid {
                body["localId"] = json!(u);
            }
            let v = call(
                http.post(format!(
                    "{base}/identitytoolkit.googleapis.com/v1/projects/{}/accounts",
                    args.project
                ))
                .bearer_auth(args.admin_key.as_deref().unwrap_or("owner"))
                .json(&body),
            )
            .await?;
            out(v["localId"].as_str().unwrap_or_default(), &v);
        }
        AuthCommand::SignIn { email, password } => {
            let v = call(
                http.post(format!(
                    "{base}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key={}",
                    args.api_key
                ))
                .json(&json!({"email": email, "password": password, "returnSecureToken": true})),
            )
            .await?;
            out(v["idToken"].as_str().unwrap_or_default(), &v);
        }
        AuthCommand::CustomToken {
            uid,
            claims,
            service_account,
            store,
        } => {
            let claims: Value = match claims {
                Some(c) => serde_json::from_str(c).context("--claims must be a JSON object")?,
                None => json!({}),
            };
            if !claims.is_object() {
                bail!("--claims must be a JSON object");
            }
            let master = store.master_key(crate::state::IfNoMasterKey::Generate)?;
            let iam = gatehouse_iam::Iam::new(
                store.open_store().await?,
                std::sync::Arc::new(gatehouse_identity::SystemClock),
                master,
                gatehouse_iam::IamConfig::default(),
            )
            .await
            .context("IAM")?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let payload = json!({
                "iss": service_account,
                "sub": service_account,
                "aud": "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit",
                "uid": uid,
                "claims": claims,
                "iat": now,
                "exp": now + 3600,
            });
            let signed = iam
                .sign_jwt(
                    &gatehouse_iam::Principal::Local,
                    &format!("projects/-/serviceAccounts/{service_account}"),
                    &[],
                    &payload.to_string(),
                )
                .await
                .with_context(|| format!("signing as {service_account}"))?;
            out(
                &signed.signed_jwt,
                &json!({"customToken": signed.signed_jwt, "keyId": signed.key_id}),
            );
        }
    }
    Ok(())
}
