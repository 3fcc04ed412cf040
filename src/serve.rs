//! `eid serve`: every service in one process, or one service.

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use eid_ca::{CaRole, CertificateAuthority};
use eid_core::{
    Config, ServiceContext, SystemClock, audit,
    instance::{self, OpenMode},
};
use eid_hsm::KeySigner;
use eid_signing::{
    Signatures, TimeStampAuthority, TimeStampUnit,
    cades::{timestamp::TimeStampSource, trust::TrustedCas},
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::ServiceName;

struct Planned {
    name: &'static str,
    address: SocketAddr,
    router: Router,
}

fn plan(
    ctx: &ServiceContext,
    ca: &CertificateAuthority,
    signing: Option<&SigningParts>,
    idp: Option<&eid_idp::Idp>,
    enrolment: Option<&eid_enrolment::Enrolment>,
    only: Option<ServiceName>,
) -> Vec<Planned> {
    let listen = ctx.config.listen;
    let all = [
        (ServiceName::Idp, eid_idp::SERVICE, listen.idp),
        (ServiceName::Ca, eid_ca::SERVICE, listen.ca),
        (ServiceName::Signing, eid_signing::SERVICE, listen.signing),
        (
            ServiceName::Enrolment,
            eid_enrolment::SERVICE,
            listen.enrolment,
        ),
    ];
    all.into_iter()
        .filter(|(which, ..)| only.is_none_or(|only| only == *which))
        .filter_map(|(which, name, address)| {
            let router = match which {
                ServiceName::Idp => eid_idp::router(idp?),
                ServiceName::Ca => eid_ca::router(ca),
                ServiceName::Signing => {
                    let (tsa, signatures, csc, seals) = signing?;
                    eid_signing::router(ctx, tsa, signatures, Some(csc), Some(seals))
                }
                ServiceName::Enrolment => eid_enrolment::router(enrolment?),
                // Served over TLS by its own loop, and only when named.
                ServiceName::SimGateway => return None,
            };
            Some(Planned {
                name,
                address,
                router,
            })
        })
        .collect()
}

/// The signing service's parts: the TSA, the signature API, the CSC API and the seals.
type SigningParts = (
    TimeStampAuthority,
    Signatures,
    eid_signing::csc::Csc,
    eid_signing::seal::Seals,
);

/// The TSA's unit from the CA hierarchy: the signing service gets a signer and
/// certificates, not the CA crate (services do not import each other's internals).
fn time_stamp_unit(ca: &CertificateAuthority) -> anyhow::Result<TimeStampUnit> {
    let hierarchy = ca.hierarchy();
    let tsu = hierarchy.get(CaRole::TimeStamping)?;
    // Intermediates between the TSU and the root; none in the embedded hierarchy.
    let mut chain = Vec::new();
    let mut issuer = CaRole::TimeStamping.issuer();
    while let Some(role) = issuer {
        if role.issuer().is_some() {
            chain.push(hierarchy.get(role)?.certificate.clone());
        }
        issuer = role.issuer();
    }
    Ok(TimeStampUnit {
        signer: tsu.signer.clone(),
        certificate: tsu.certificate.clone(),
        chain,
        status: Some(Arc::new(RoleStanding(ca.clone(), CaRole::TimeStamping))),
    })
}

/// A service certificate's standing as the CA sees it: a revoked (or replaced) one is
/// used no more (the TSA stamps nothing, the card listener offers no certificate).
#[derive(Debug)]
struct RoleStanding(CertificateAuthority, CaRole);

impl eid_core::CertificateStanding for RoleStanding {
    fn withdrawn(&self) -> Option<String> {
        self.0.out_of_service(self.1)
    }
}

/// The CA certificates the signature API trusts, from the CA hierarchy: it signs for
/// certificates of the citizen qualified signature CA and the organisation seal CA,
/// and builds chains from all.
pub(crate) fn trusted_cas(ca: &CertificateAuthority) -> anyhow::Result<TrustedCas> {
    let hierarchy = ca.hierarchy();
    let signers = [CaRole::CitizenSigningCa, CaRole::OrganisationSealCa];
    let mut signer_issuers = Vec::new();
    for role in signers {
        signer_issuers.push(hierarchy.get(role)?.certificate.clone());
    }
    let mut known = vec![hierarchy.get(CaRole::Root)?.certificate.clone()];
    known.extend(signer_issuers.iter().cloned());
    Ok(TrustedCas {
        signer_issuers,
        known,
    })
}

/// Serves until SIGINT or SIGTERM.
#[allow(clippy::print_stdout)] // the URLs are the command's output
pub(crate) async fn run(config: Config, only: Option<ServiceName>) -> anyhow::Result<ExitCode> {
    let signals = shutdown_signal();
    let interval = Duration::from_secs(config.audit.checkpoint_interval_secs);
    let instance = instance::open(config, Arc::new(SystemClock), OpenMode::CreateIfMissing).await?;
    let ctx = instance.ctx.clone();
    // The CA hierarchy is part of every instance: the other services use its
    // certificates (TSU, TLS), so it is loaded (or, on first start, created) for all.
    let ca = CertificateAuthority::open(&ctx).await?;
    if instance.created {
        println!(
            "initialised a new eid instance in {}",
            ctx.config.data_dir.display()
        );
    }

    let shutdown = CancellationToken::new();
    let signing = if only.is_none_or(|only| only == ServiceName::Signing) {
        let tsa = TimeStampAuthority::start(&ctx, time_stamp_unit(&ca)?, shutdown.clone())
            .await
            .context("cannot start the time-stamp authority")?;
        // Signature time-stamps come from the TSA in this process.
        let mut signatures = Signatures::new(
            &ctx,
            trusted_cas(&ca)?,
            TimeStampSource::InProcess(tsa.clone()),
        );
        // Signing with citizens' SIMs, through the gateway the idp's mobile ID uses.
        if let Some(mobile) = &ctx.config.mobile_id {
            let client = eid_hsm::mobile::MobileIdClient::new(mobile.client_options())
                .context("the mobile-ID gateway ([mobile_id])")?;
            signatures = signatures.with_mobile_id(client);
        }
        // With the CA's responder in this process, certificate status is asked of it
        // directly: the same answers as its listener, without the HTTP round trip. A
        // signing service on its own asks the listener (another process's revocations
        // reach only that process's responder).
        if only.is_none() {
            signatures = signatures.with_local_responder(Arc::new(LocalOcsp(ca.clone())));
        }
        // Remote signing (CSC API v2) with keys on the service key store.
        let csc = crate::signing::csc_api(&ctx, &ca, &signatures);
        let seals = crate::signing::seals(&ca, &signatures);
        Some((tsa, signatures, csc, seals))
    } else {
        None
    };
    let idp = match only {
        None | Some(ServiceName::Idp) => Some(open_idp(&ctx, &ca).await?),
        Some(_) => None,
    };
    let enrolment = match only {
        None | Some(ServiceName::Enrolment) => Some(
            open_enrolment(
                &ctx,
                &ca,
                signing.as_ref().map(|(_, _, csc, _)| csc.clone()),
            )
            .await?,
        ),
        Some(_) => None,
    };

    // Bind every listener before serving any, so a taken port fails start-up cleanly.
    let mut bound = Vec::new();
    for planned in plan(
        &ctx,
        &ca,
        signing.as_ref(),
        idp.as_ref(),
        enrolment.as_ref(),
        only,
    ) {
        let listener = tokio::net::TcpListener::bind(planned.address)
            .await
            .with_context(|| {
                format!("cannot listen on {} for {}", planned.address, planned.name)
            })?;
        let address = listener.local_addr().unwrap_or(planned.address);
        bound.push((planned.name, address, listener, planned.router));
    }
    // The SIM gateway simulator: only when asked for by name, never in `eid serve`.
    let sim_gateway = if only == Some(ServiceName::SimGateway) {
        let gateway = crate::simgateway::open(&ctx)?;
        let context = ctx.clone();
        let tls = tokio::task::spawn_blocking(move || eid_sim_gateway::GatewayTls::load(&context))
            .await??;
        let address = ctx.config.listen.sim_gateway;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} for the SIM gateway simulator"))?;
        Some((gateway, tls, listener))
    } else {
        None
    };
    let card = match &idp {
        Some(idp) => {
            let address = ctx.config.idp.card_listen;
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} for the ID-card login"))?;
            Some((idp.clone(), listener))
        }
        None => None,
    };
    // Staff log in at the desk with their own ID card on a TLS listener of its own.
    let desk_card = match &enrolment {
        Some(enrolment) => {
            let tls = desk_card_login(&ctx, &ca, enrolment)?;
            let address = ctx.config.enrolment.card_listen;
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| {
                    format!("cannot listen on {address} for the desk's ID-card login")
                })?;
            Some((enrolment.clone(), tls, listener))
        }
        None => None,
    };
    say(format_args!(
        "eid {} serving (database {}, keys: {})",
        env!("CARGO_PKG_VERSION"),
        ctx.db.display_url(),
        ctx.keys.description()
    ));
    for (name, address, ..) in &bound {
        say(format_args!("  {name:<10} http://{address}/"));
    }
    if let Some((_, tls, listener)) = &sim_gateway {
        let address = listener
            .local_addr()
            .unwrap_or(ctx.config.listen.sim_gateway);
        say(format_args!(
            "  {:<10} https://{address}/ (simulator; pin {}; phone page /phone)",
            eid_sim_gateway::SERVICE,
            tls.pin
        ));
    }
    if let Some((_, listener)) = &card {
        let address = listener.local_addr().unwrap_or(ctx.config.idp.card_listen);
        say(format_args!(
            "  {:<10} https://{address}/ (ID-card login)",
            "idp-card"
        ));
    }
    if let Some((_, _, listener)) = &desk_card {
        let address = listener
            .local_addr()
            .unwrap_or(ctx.config.enrolment.card_listen);
        say(format_args!(
            "  {:<10} https://{address}/ (desk staff ID-card login)",
            "desk-card"
        ));
    }
    if let Some(mobile) = &ctx.config.mobile_id
        && (idp.is_some() || signing.is_some())
    {
        say(format_args!(
            "  {:<10} gateway {} (key pinned {}): login, CIBA, signing",
            "mobile-id", mobile.gateway_url, mobile.gateway_pin
        ));
    }

    let shutdown_for_idp = shutdown.clone();
    let mut servers = JoinSet::new();
    for (name, _, listener, router) in bound {
        servers.spawn(eid_core::http::serve(
            name,
            listener,
            router,
            shutdown.clone(),
        ));
    }
    if let Some((gateway, tls, listener)) = sim_gateway {
        servers.spawn(eid_sim_gateway::serve_tls(
            gateway,
            tls,
            listener,
            shutdown.clone(),
        ));
    }
    if let Some((idp, listener)) = card {
        servers.spawn(eid_idp::serve_card_listener(
            idp.clone(),
            listener,
            shutdown.clone(),
        ));
        servers.spawn(async move {
            idp.maintain(shutdown_for_idp).await;
            Ok(())
        });
    }
    if let Some((enrolment, tls, listener)) = desk_card {
        servers.spawn(eid_core::http::serve_client_certificates(
            "enrolment-card",
            tls,
            listener,
            eid_enrolment::card_router(&enrolment),
            shutdown.clone(),
        ));
    }
    let maintenance = tokio::spawn(ca.clone().maintain(shutdown.clone()));
    if let Some(enrolment) = enrolment {
        // Activations queued while the CA was unreachable, taken up when it answers.
        let stop = shutdown.clone();
        servers.spawn(async move {
            enrolment.maintain(stop).await;
            Ok(())
        });
    }
    if signing.is_some() {
        let (context, stop) = (ctx.clone(), shutdown.clone());
        servers.spawn(async move {
            eid_signing::csc::maintain(context, stop).await;
            Ok(())
        });
    }
    let checkpoints = tokio::spawn(checkpoint_loop(
        ctx.clone(),
        instance.checkpoint_signer.clone(),
        interval,
        shutdown.clone(),
    ));

    let mut failure = None;
    tokio::select! {
        signal = signals => {
            tracing::info!(signal, "shutting down: finishing requests in flight");
        }
        Some(result) = servers.join_next() => {
            failure = Some(match result {
                Ok(Ok(())) => anyhow::anyhow!("a service stopped unexpectedly"),
                Ok(Err(e)) => anyhow::Error::from(e).context("a service failed"),
                Err(e) => anyhow::Error::from(e).context("a service task failed"),
            });
        }
    }
    shutdown.cancel();
    while let Some(result) = servers.join_next().await {
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %e, "service stopped with an error");
        }
    }
    let _ = checkpoints.await;
    let _ = maintenance.await;
    // Seal what this run recorded.
    if let Err(e) =
        audit::checkpoint(&ctx.db, ctx.clock.as_ref(), &instance.checkpoint_signer).await
    {
        tracing::warn!(error = %e, "final audit checkpoint failed");
    }
    ctx.db.close().await;
    match failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Prints a line of the start-up banner. Whoever started the server may have stopped
/// reading its output (a closed pipe); that is no reason to stop serving.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// The identity provider, with its ID-card listener set up from the CA hierarchy: the
/// TLS server certificate (issued by the root) and the citizen authentication CA.
async fn open_idp(ctx: &ServiceContext, ca: &CertificateAuthority) -> anyhow::Result<eid_idp::Idp> {
    let hierarchy = ca.hierarchy();
    let tls = hierarchy.get(CaRole::IdpTls)?;
    let citizen_ca = hierarchy.get(CaRole::CitizenAuthenticationCa)?;
    let setup = eid_idp::CardSetup {
        server_chain: vec![tls.der.clone()],
        server_key: tls.signer.clone(),
        citizen_auth_ca: citizen_ca.der.clone(),
        standing: Some(Arc::new(RoleStanding(ca.clone(), CaRole::IdpTls))),
    };
    let certificates: Arc<dyn eid_idp::CitizenCertificates> = Arc::new(CaCertificates(ca.clone()));
    Ok(eid_idp::Idp::open(ctx, setup, Some(certificates)).await?)
}

/// Staff ID-card login at the desk, set up on `enrolment`: the idp's checks of a login
/// certificate (the holder from its `serialNumber`, its status from the CA's OCSP
/// responder at every card, failing closed) and TLS as the idp's card listener has it,
/// with the desk's own server certificate (CA role `desk-tls`, naming `card_url`'s host
/// and the bound address; the citizen authentication CA the only anchor for client
/// certificates). Returns that TLS setup for the desk's card listener.
fn desk_card_login(
    ctx: &ServiceContext,
    ca: &CertificateAuthority,
    enrolment: &eid_enrolment::Enrolment,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let hierarchy = ca.hierarchy();
    let tls = hierarchy.get(CaRole::DeskTls)?;
    let citizen_ca = hierarchy.get(CaRole::CitizenAuthenticationCa)?;
    // No cache (the idp keeps answers `ocsp_cache_secs`): staff logins and approvals
    // are few, and a card revoked a moment ago (replaced at the desk, say) must not log
    // in or approve on an answer given before.
    let status =
        eid_idp::card::StatusChecker::new(&citizen_ca.der, reqwest::Client::new(), Duration::ZERO)?;
    enrolment.set_staff_cards(Arc::new(DeskStaffCards {
        country: ctx.config.ca.country.clone(),
        status,
    }));
    Ok(eid_idp::card::server_config(
        vec![tls.der.clone()],
        tls.signer.clone(),
        &citizen_ca.der,
        Some(Arc::new(RoleStanding(ca.clone(), CaRole::DeskTls))),
    )?)
}

/// The desk's check of a staff member's ID-card certificate: the idp's.
#[derive(Debug)]
struct DeskStaffCards {
    country: String,
    status: eid_idp::card::StatusChecker,
}

impl eid_enrolment::StaffCards for DeskStaffCards {
    fn check<'a>(
        &'a self,
        certificate: &'a [u8],
    ) -> eid_enrolment::PortFuture<'a, eid_enrolment::StaffCard> {
        use eid_ca::ocsp::client::CheckedStatus;
        use eid_enrolment::PortError;
        Box::pin(async move {
            let holder =
                eid_idp::card::holder(certificate, &self.country).map_err(PortError::Refused)?;
            match self.status.status(&holder).await {
                Ok(CheckedStatus::Good) => Ok(eid_enrolment::StaffCard {
                    national_id: holder.national_id,
                    serial: holder.serial.to_hex(),
                }),
                Ok(CheckedStatus::Revoked { .. }) => Err(PortError::Refused(
                    "its certificate is revoked or suspended".into(),
                )),
                Ok(CheckedStatus::Unknown) => Err(PortError::Refused(
                    "its certificate is not known to the issuer".into(),
                )),
                Err(why) => Err(PortError::Unavailable(why)),
            }
        })
    }
}

/// The enrolment desk, asking the CA to issue and revoke (the registration authority's
/// narrow way in: over HTTP when `[enrolment.ca]` names it, else in this process), and
/// the signing service's credentials:
/// those of `csc` when the signing service runs in this process, else its own view of
/// the same database and key store.
pub(crate) async fn open_enrolment(
    ctx: &ServiceContext,
    ca: &CertificateAuthority,
    csc: Option<eid_signing::csc::Csc>,
) -> anyhow::Result<eid_enrolment::Enrolment> {
    let issuer: Arc<dyn eid_enrolment::CertificateIssuer> = match &ctx.config.enrolment.ca {
        Some(remote) => Arc::new(crate::ra::HttpIssuer::new(remote.clone())?),
        None => Arc::new(CaIssuer(ca.clone())),
    };
    let csc = match csc {
        Some(csc) => csc,
        None => crate::signing::csc_api(ctx, ca, &crate::signing::signatures(ctx, ca)?),
    };
    let remote: Arc<dyn eid_enrolment::RemoteSigning> =
        Arc::new(crate::signing::DeskCredentials(csc));
    eid_enrolment::Enrolment::open(ctx, Some(issuer), Some(remote))
        .await
        .context("cannot open the enrolment desk")
}

/// The CA as the registration authority reaches it.
#[derive(Debug)]
struct CaIssuer(CertificateAuthority);

fn port_error(e: eid_ca::CaError) -> eid_enrolment::PortError {
    match e {
        eid_ca::CaError::BadRequest(m) | eid_ca::CaError::Refused(m) => {
            eid_enrolment::PortError::Refused(m)
        }
        // The certificate's state does not allow the change (already revoked, not on
        // hold): a refusal the desk explains, not an outage.
        e @ (eid_ca::CaError::Conflict(_) | eid_ca::CaError::UnknownCertificate(_)) => {
            eid_enrolment::PortError::Refused(e.to_string())
        }
        other => eid_enrolment::PortError::Unavailable(other.to_string()),
    }
}

impl eid_enrolment::CertificateIssuer for CaIssuer {
    fn issue(
        &self,
        request: eid_enrolment::CertificateRequest,
    ) -> eid_enrolment::PortFuture<'_, eid_enrolment::IssuedCertificate> {
        Box::pin(async move {
            let profile = match request.kind {
                eid_enrolment::CertificateKind::Authentication => {
                    eid_ca::Profile::CitizenAuthentication
                }
                eid_enrolment::CertificateKind::QualifiedSignature => {
                    eid_ca::Profile::CitizenSigning
                }
            };
            let issued = self
                .0
                .issue(eid_ca::IssueRequest {
                    profile,
                    csr: request.csr,
                    holder: eid_ca::Holder::Citizen {
                        national_id: eid_ca::NationalId::new(&request.national_id)
                            .map_err(port_error)?,
                        name: eid_ca::PersonName::new(&request.given_name, &request.surname)
                            .map_err(port_error)?,
                    },
                    requested_by: request.requested_by,
                    key_evidence: request
                        .key_evidence
                        .map(|(public_key, qscd)| eid_ca::KeyEvidence { public_key, qscd }),
                })
                .await
                .map_err(port_error)?;
            Ok(eid_enrolment::IssuedCertificate {
                serial: issued.serial.to_hex(),
                der: issued.der,
            })
        })
    }

    fn certificates_of<'a>(
        &'a self,
        national_id: &'a str,
    ) -> eid_enrolment::PortFuture<'a, Vec<eid_enrolment::KnownCertificate>> {
        Box::pin(async move {
            Ok(self
                .0
                .certificates_of(national_id)
                .await
                .map_err(port_error)?
                .into_iter()
                .map(|c| eid_enrolment::KnownCertificate {
                    serial: c.serial,
                    status: c.status.to_owned(),
                })
                .collect())
        })
    }

    fn change_status<'a>(
        &'a self,
        serial: &'a str,
        change: &'a str,
        actor: &'a str,
    ) -> eid_enrolment::PortFuture<'a, ()> {
        Box::pin(async move {
            let serial = eid_ca::CertificateSerial::parse(serial).map_err(port_error)?;
            let change = eid_ca::StatusChange::parse(change).map_err(port_error)?;
            self.0
                .change_status(&serial, change, actor)
                .await
                .map(|_| ())
                .map_err(port_error)
        })
    }
}

/// The CA's OCSP responder, asked in-process by the signing service.
#[derive(Debug)]
struct LocalOcsp(CertificateAuthority);

impl eid_signing::cades::revocation::LocalResponder for LocalOcsp {
    fn respond<'a>(
        &'a self,
        request: &'a [u8],
    ) -> std::pin::Pin<Box<dyn Future<Output = Vec<u8>> + Send + 'a>> {
        Box::pin(async move { self.0.respond_ocsp(request).await.body.to_vec() })
    }
}

/// The idp's view of the CA for a logged-in citizen: their certificates, and
/// suspending one. In-process, on the same CA object the server's OCSP responder uses,
/// so a suspension changes OCSP answers before the call returns.
#[derive(Debug)]
struct CaCertificates(CertificateAuthority);

impl eid_idp::CitizenCertificates for CaCertificates {
    fn list<'a>(
        &'a self,
        national_id: &'a str,
    ) -> eid_idp::PortFuture<'a, Vec<eid_idp::CitizenCertificate>> {
        Box::pin(async move {
            let all = self
                .0
                .certificates_of(national_id)
                .await
                .map_err(|e| e.to_string())?;
            Ok(all
                .into_iter()
                .map(|c| eid_idp::CitizenCertificate {
                    serial: c.serial,
                    profile: c.profile,
                    not_after: c.not_after,
                    status: c.status.to_owned(),
                })
                .collect())
        })
    }

    fn suspend<'a>(
        &'a self,
        national_id: &'a str,
        serial: &'a str,
        actor: &'a str,
    ) -> eid_idp::PortFuture<'a, ()> {
        Box::pin(async move {
            // Only the citizen's own certificates, whatever the form said.
            let owned = self
                .0
                .certificates_of(national_id)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .any(|c| c.serial.eq_ignore_ascii_case(serial) && c.status == "active");
            if !owned {
                return Err("it is not one of your active certificates".into());
            }
            let serial = eid_ca::CertificateSerial::parse(serial).map_err(|e| e.to_string())?;
            self.0
                .change_status(&serial, eid_ca::StatusChange::Suspend, actor)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

async fn checkpoint_loop(
    ctx: ServiceContext,
    signer: KeySigner,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {
                match audit::checkpoint(&ctx.db, ctx.clock.as_ref(), &signer).await {
                    Ok(Some(c)) => tracing::info!(upto = c.upto_seq, "signed audit checkpoint"),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "audit checkpoint failed"),
                }
            }
        }
    }
}

/// Installs the SIGINT and SIGTERM handlers now, so that a signal arriving while the
/// server is still starting stops it cleanly instead of killing it, and returns the
/// future that completes on the first of them.
fn shutdown_signal() -> impl Future<Output = &'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                    _ = interrupt.recv() => "SIGINT",
                    _ = terminate.recv() => "SIGTERM",
                },
                (Ok(mut interrupt), Err(e)) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the server");
                    interrupt.recv().await;
                    "SIGINT"
                }
                (Err(e), Ok(mut terminate)) => {
                    tracing::warn!(error = %e, "cannot watch SIGINT; only SIGTERM stops the server");
                    terminate.recv().await;
                    "SIGTERM"
                }
                (Err(e), Err(_)) => {
                    tracing::warn!(error = %e, "cannot watch SIGINT or SIGTERM");
                    std::future::pending().await
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let interrupt = tokio::signal::ctrl_c();
        async move {
            let _ = interrupt.await;
            "SIGINT"
        }
    }
}
