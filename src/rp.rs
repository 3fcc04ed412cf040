//! `eid rp` (the relying-party registry) and `eid idp` (the provider's keys).

use std::process::ExitCode;

use clap::Subcommand;
use eid_core::ServiceContext;
use eid_idp::{
    Level,
    clients::{self, AuthMethod, NewClient},
};

#[derive(Debug, Subcommand)]
pub(crate) enum RpCommand {
    /// Register a relying party; prints it as JSON with `client_id` and (for
    /// secret-based authentication) `client_secret`, which is shown only this once.
    Add {
        /// The service's name, as citizens see it on the consent page.
        #[arg(long)]
        name: String,
        /// An exact redirect URI (repeatable): https, or http on a loopback host.
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// Where RP-initiated logout may return to (repeatable).
        #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
        post_logout_redirect_uris: Vec<String>,
        /// A scope the client may ask for beyond openid (repeatable; default: profile):
        /// profile, national_id, contact, offline_access; service and credential (CSC
        /// API), eseal (organisation seals, with the client_credentials grant).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// A grant type (repeatable; default: authorization_code and refresh_token):
        /// authorization_code, refresh_token, client_credentials,
        /// urn:openid:params:grant-type:ciba.
        #[arg(long = "grant", value_name = "GRANT")]
        grants: Vec<String>,
        /// client_secret_basic (default), client_secret_post or private_key_jwt.
        #[arg(long, default_value = "client_secret_basic")]
        auth_method: String,
        /// The client's JWKS URI (needed for private_key_jwt).
        #[arg(long, value_name = "URI")]
        jwks_uri: Option<String>,
        /// Give this client the public subject identifier instead of a pairwise one.
        #[arg(long)]
        public_subject: bool,
        /// Sector identifier (a host) that groups clients for pairwise subjects.
        #[arg(long)]
        sector: Option<String>,
        /// Lowest assurance level accepted: low, substantial or high.
        #[arg(long, default_value = "low")]
        min_level: String,
        /// Require pushed authorization requests (RFC 9126).
        #[arg(long)]
        require_par: bool,
        /// Back-channel logout URI.
        #[arg(long, value_name = "URI")]
        backchannel_logout_uri: Option<String>,
        /// Sign this client's ID tokens with ES256, PS256 or RS256 instead of the
        /// provider's algorithm (for relying parties that know only RS256).
        #[arg(long, value_name = "ALG")]
        id_token_alg: Option<String>,
        /// CIBA delivery mode for a client of the CIBA grant: poll (default) or ping.
        #[arg(long, value_name = "MODE")]
        ciba_mode: Option<String>,
        /// Where a ping-mode CIBA client is notified.
        #[arg(long, value_name = "URI")]
        ciba_notification_endpoint: Option<String>,
        /// Who is asking, for the audit log (default: the operating-system user).
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// List the registered relying parties as JSON lines.
    List,
    /// Remove a relying party: it can no longer log anyone in, and its grants are revoked
    /// (a running provider that read the registration in the last
    /// `idp.client_cache_secs` still knows it that long; the admin API acts at once).
    Remove {
        /// The client's id.
        client_id: String,
        /// Who is asking, for the audit log.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// Give a client a new secret (printed as JSON); the old one stops working at once
    /// (at a running provider within `idp.client_cache_secs`; the admin API acts at once).
    RotateSecret {
        /// The client's id.
        client_id: String,
        /// Who is asking, for the audit log.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum IdpCommand {
    /// Create and publish the next token-signing key. The running provider signs with it
    /// after idp.key_publish_secs, and keeps the current key published until its tokens
    /// have expired.
    RotateKeys {
        /// Who is asking, for the audit log.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// List the token-signing keys and where each is in its life, as JSON lines.
    Keys,
}

fn actor(given: Option<String>) -> String {
    format!("operator:{}", crate::ca::operator_name(given))
}

#[allow(clippy::print_stdout)] // command output is the point of a CLI
pub(crate) async fn run_rp(ctx: &ServiceContext, command: RpCommand) -> anyhow::Result<ExitCode> {
    match command {
        RpCommand::Add {
            name,
            redirect_uris,
            post_logout_redirect_uris,
            scopes,
            grants,
            auth_method,
            jwks_uri,
            public_subject,
            sector,
            min_level,
            require_par,
            backchannel_logout_uri,
            id_token_alg,
            ciba_mode,
            ciba_notification_endpoint,
            operator,
        } => {
            let mut new = NewClient::new(name, redirect_uris);
            new.post_logout_redirect_uris = post_logout_redirect_uris;
            if !scopes.is_empty() {
                new.scopes = scopes;
            }
            if !grants.is_empty() {
                new.grant_types = grants;
            }
            new.auth_method = AuthMethod::parse(&auth_method).ok_or_else(|| {
                anyhow::anyhow!(
                    "--auth-method `{auth_method}` is not client_secret_basic, client_secret_post or private_key_jwt"
                )
            })?;
            new.jwks_uri = jwks_uri;
            new.public_subject = public_subject;
            new.sector = sector;
            new.min_level = Level::parse(&min_level).ok_or_else(|| {
                anyhow::anyhow!("--min-level `{min_level}` is not low, substantial or high")
            })?;
            new.require_par = require_par;
            new.backchannel_logout_uri = backchannel_logout_uri;
            new.id_token_alg = id_token_alg;
            new.ciba_mode = ciba_mode;
            new.ciba_notification_endpoint = ciba_notification_endpoint;
            let registered = clients::register(ctx, &actor(operator), &new).await?;
            let mut out = serde_json::json!({
                "client_id": registered.client.client_id,
                "name": registered.client.name,
                "metadata": registered.client.metadata,
            });
            if let Some(secret) = &registered.secret {
                out["client_secret"] = serde_json::Value::from(secret.as_str());
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        RpCommand::List => {
            for client in clients::list(ctx).await? {
                println!(
                    "{}",
                    serde_json::json!({
                        "client_id": client.client_id,
                        "name": client.name,
                        "metadata": client.metadata,
                    })
                );
            }
        }
        RpCommand::Remove {
            client_id,
            operator,
        } => {
            clients::remove(ctx, &actor(operator), &client_id).await?;
            println!("removed {client_id}");
        }
        RpCommand::RotateSecret {
            client_id,
            operator,
        } => {
            let secret = clients::rotate_secret(ctx, &actor(operator), &client_id).await?;
            println!(
                "{}",
                serde_json::json!({ "client_id": client_id, "client_secret": secret.as_str() })
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)] // command output is the point of a CLI
pub(crate) async fn run_idp(ctx: &ServiceContext, command: IdpCommand) -> anyhow::Result<ExitCode> {
    match command {
        IdpCommand::RotateKeys { operator } => {
            // The first key is made when the provider first opens; make sure it exists
            // so that the rotated-to key really is the second.
            eid_idp::keys::TokenKeys::open(ctx).await?;
            for kid in eid_idp::keys::rotate(ctx, &actor(operator)).await? {
                println!(
                    "published token-signing key {kid}; it signs after {} s",
                    ctx.config.idp.key_publish_secs
                );
            }
        }
        IdpCommand::Keys => {
            for key in eid_idp::keys::status(ctx).await? {
                println!("{}", serde_json::to_string(&key)?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
