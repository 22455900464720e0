//! `orderflow clients create NAME --role ROLE [--signing-secret] [--json]`.

use std::process::ExitCode;

use clap::Subcommand;

use super::{StoreArgs, open_store};
use crate::auth;
use crate::domain::types::Role;

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Create a client and print its token (shown once, stored only as a hash).
    Create {
        /// Unique client name, e.g. erp-sap.
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        /// Also create a Standard Webhooks signing secret (whsec_...) for signed requests.
        #[arg(long)]
        signing_secret: bool,
        /// Print one JSON object {"name","role","token","signing_secret"}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(cmd: ClientsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClientsCommand::Create {
            name,
            role,
            signing_secret,
            json,
            store,
        } => {
            if name.trim().is_empty() || name.len() > 100 {
                anyhow::bail!("client name must be 1 to 100 characters");
            }
            let config = store.load()?;
            let store = open_store(&config).await?;
            let client = auth::create_client(&store, &name, role, signing_secret).await?;
            store.close().await;
            if json {
                println!("{}", serde_json::to_string(&client)?);
            } else {
                println!("created client {} with role {}", client.name, client.role);
                println!("token: {}", client.token);
                if let Some(secret) = &client.signing_secret {
                    println!("signing secret: {secret}");
                }
                println!("store them now: they are not shown again");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
