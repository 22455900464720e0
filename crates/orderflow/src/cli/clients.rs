//! `orderflow clients create NAME --role ROLE [--signing-secret] [--json]`.

use std::process::ExitCode;

use clap::Subcommand;

use super::{StoreArgs, open_store};
use crate::auth;
use crate::domain::types::Role;

#[derive(Debug, Subcommand)]
pub(super) enum ClientsCommand {
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
        /// When a client of this name exists (with the same role), give it a new token
        /// (and a new signing secret with --signing-secret, none without) instead of
        /// failing. The old token stops working; a running server may accept it for up to
        /// 60 s more. Without an existing client it is created.
        #[arg(long)]
        reissue: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub(super) async fn run(cmd: ClientsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClientsCommand::Create {
            name,
            role,
            signing_secret,
            json,
            reissue,
            store,
        } => {
            if name.trim().is_empty() || name.len() > 100 {
                anyhow::bail!("client name must be 1 to 100 characters");
            }
            let config = store.load()?;
            let store = open_store(&config).await?;
            let created = if reissue {
                auth::reissue_client(&store, &name, role, signing_secret).await
            } else {
                auth::create_client(&store, &name, role, signing_secret)
                    .await
                    .map(|c| (c, false))
            };
            store.close().await;
            let (client, existed) = created?;
            if json {
                println!("{}", serde_json::to_string(&client)?);
            } else {
                let did = if existed { "reissued" } else { "created" };
                println!("{did} client {} with role {}", client.name, client.role);
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
