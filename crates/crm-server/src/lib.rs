//! The CRM gRPC server: opens the event log, serves the `crm.v1` services with gRPC health and
//! reflection, and shuts down cleanly (in-flight appends are acknowledged before exit).
//!
//! ```
//! let config = crm_server::Config::default();
//! assert_eq!(config.listen.to_string(), "127.0.0.1:50051");
//! ```

pub mod auth;
pub mod commands;
pub mod config;
pub mod intake;
pub mod services;
pub mod status;
pub mod subscriptions;
pub mod warm;

use std::future::Future;

use anyhow::Context;
use crm_eventlog::{SledEventStore, Stats};
use crm_proto::v1 as pb;

pub use config::Config;

/// How long open connections may take to drain after the log has closed on shutdown.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the server until `shutdown` resolves, then closes the log (acknowledging every
/// in-flight append and ending live subscriptions) and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let log_dir = config.data_dir.join("eventlog");
    let store = {
        let dir = log_dir.clone();
        let log_config =
            crm_eventlog::Config { cache_capacity: config.log_cache_bytes, ..crm_eventlog::Config::new(dir) };
        tokio::task::spawn_blocking(move || SledEventStore::open(log_config))
            .await?
            .with_context(|| format!("opening the event log in {}", log_dir.display()))?
    };
    let tokens = std::sync::Arc::new(auth::TokenStore::load(store.clone()).await.context("loading tokens")?);
    if let Some(path) = tokens.bootstrap(&config.data_dir).await? {
        tracing::warn!(path = %path.display(), "fresh data directory: the first administrator token was written to this file");
        println!("crm-server bootstrap administrator token written to {}", path.display());
    }
    let projections = services::projections::Projections::start(&config.data_dir, store.clone(), &config).await?;
    let intake = intake::Intake::start(store.clone())
        .await
        .map_err(|s| anyhow::anyhow!("starting the intake: {}", s.message()))?;
    let subscriptions = {
        let render: services::eventlog::PayloadRenderer = std::sync::Arc::new(|e: &crm_eventlog::RecordedEvent| {
            auth::tokens::render(e).or_else(|| commands::render_payload(e))
        });
        std::sync::Arc::new(
            subscriptions::Subscriptions::open(&config.data_dir, store.clone(), store.watch_head(), Some(render))
                .context("opening the subscription store")?,
        )
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the gRPC listener on {}", config.listen))?;
    let addr = listener.local_addr()?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::event_log_server::EventLogServer<services::eventlog::EventLogService<SledEventStore>>>()
        .await;
    health_reporter
        .set_serving::<pb::command_service_server::CommandServiceServer<commands::Commands<SledEventStore>>>()
        .await;
    health_reporter
        .set_serving::<pb::duplicates_server::DuplicatesServer<services::duplicates::DuplicatesService>>()
        .await;
    health_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crm_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;

    let max = config.max_request_bytes;
    let render: services::eventlog::PayloadRenderer = std::sync::Arc::new(|e: &crm_eventlog::RecordedEvent| {
        auth::tokens::render(e).or_else(|| commands::render_payload(e))
    });
    let eventlog = pb::event_log_server::EventLogServer::new(services::eventlog::EventLogService::new(
        store.clone(),
        Some(render),
    ))
    .max_decoding_message_size(max);
    let guard = std::sync::Arc::new(commands::DuplicateGuard::new(
        projections.duplicates_projector.clone(),
        projections.duplicates.clone(),
    ));
    let commands =
        pb::command_service_server::CommandServiceServer::new(commands::Commands::with_guard(store.clone(), guard))
            .max_decoding_message_size(max);

    // On shutdown: mark NOT_SERVING, close the log (in-flight appends finish and are
    // acknowledged, subscriptions end), then let tonic drain the connections.
    // Clients that never read their GOAWAY get `SHUTDOWN_GRACE` before the process exits.
    let query = pb::query_server::QueryServer::new(services::query::QueryService::new(projections.clone()));
    let audit = pb::audit_server::AuditServer::new(services::audit::AuditService::new(projections.clone()));
    let admin = pb::admin_server::AdminServer::new(services::admin::AdminService::new(projections.clone()));
    let duplicates =
        pb::duplicates_server::DuplicatesServer::new(services::duplicates::DuplicatesService::new(projections.clone()));
    let intake_service =
        pb::intake_server::IntakeServer::new(intake::IntakeService::new(intake)).max_decoding_message_size(max);
    let subscriptions_service = pb::subscriptions_server::SubscriptionsServer::new(
        subscriptions::SubscriptionService::new(subscriptions.clone()),
    )
    .max_decoding_message_size(max);
    // TLS is set up before the warm-up starts: a failure here returns before anything
    // needs stopping.
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        let cert =
            std::fs::read(&tls.cert).with_context(|| format!("reading TLS certificate {}", tls.cert.display()))?;
        let key = std::fs::read(&tls.key).with_context(|| format!("reading TLS key {}", tls.key.display()))?;
        builder = builder
            .tls_config(
                tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(cert, key)),
            )
            .context("configuring TLS")?;
    }
    let stop_warming = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let warming = if config.warm_on_start {
        let (store, db, stop) = (store.clone(), projections.db.clone(), stop_warming.clone());
        let budget = warm::read_model_budget();
        Some(std::thread::Builder::new().name("crm-warm".into()).spawn(move || {
            if let Err(e) = warm::warm_caches(&store, &db, budget, &stop) {
                tracing::warn!(error = %e, "warming the caches failed (the server serves on, with cold caches)");
            }
        })?)
    } else {
        None
    };
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    let closing = {
        let store = store.clone();
        let reporter = health_reporter.clone();
        async move {
            shutdown.await;
            tracing::info!("shutdown requested");
            reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            stop_warming.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(warming) = warming {
                let _ = tokio::task::spawn_blocking(move || warming.join()).await;
            }
            projections.stop().await;
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
            subscriptions.flush();
            let _ = closed_tx.send(());
        }
    };

    println!("crm-server listening on {addr}{}", if config.tls.is_some() { " (tls)" } else { "" });
    tracing::info!(%addr, data_dir = %config.data_dir.display(), head = store.committed_head(), "serving");
    let tokens_service = pb::tokens_server::TokensServer::new(services::tokens::TokensService::new(tokens.clone()))
        .max_decoding_message_size(max);
    let serve = builder
        .layer(auth::AuthLayer::new(tokens.clone(), store.clone(), config.limits))
        .add_service(tokens_service)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(eventlog)
        .add_service(commands)
        .add_service(intake_service)
        .add_service(subscriptions_service)
        .add_service(query)
        .add_service(audit)
        .add_service(admin)
        .add_service(duplicates)
        .serve_with_incoming_shutdown(incoming(listener), closing);
    let grace = async {
        if closed_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = serve => served.context("serving gRPC")?,
        () = grace => tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections did not drain in time; exiting anyway"),
    }
    let Stats { groups, barriers, fdatasyncs, .. } = store.stats();
    tracing::info!(groups, barriers, fdatasyncs, head = store.committed_head(), "stopped");
    Ok(())
}

/// The accepted connections, with Nagle's algorithm off. tonic sets `TCP_NODELAY` only on
/// listeners it binds itself; on ours every small response frame (a unary answer's HEADERS,
/// DATA and trailers) waited for the client's delayed ACK, about 40 ms, now and then: the
/// query bench's p99 sat at 51 ms with a p50 of 6.6 ms (docs/PERFORMANCE.md, 2026-12-03).
fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
