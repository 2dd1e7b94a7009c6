//! The gRPC connection: one channel, every call carrying `authorization: Bearer <token>`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use crm_proto::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Adds the bearer token to every request.
#[derive(Clone)]
pub(crate) struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub(crate) type AuthChannel = InterceptedService<Channel, Bearer>;

/// Where the server is and who we are.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub(crate) server: String,
    pub(crate) token: Option<String>,
    pub(crate) token_file: Option<PathBuf>,
}

/// Typed clients sharing one channel.
#[derive(Clone)]
pub(crate) struct Clients {
    channel: AuthChannel,
}

impl Connection {
    fn token(&self) -> Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.trim().to_owned());
        }
        if let Some(path) = &self.token_file {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading token file {}", path.display()))?;
            return Ok(text.trim().to_owned());
        }
        bail!("no token: pass --token (CRM_TOKEN) or --token-file (CRM_TOKEN_FILE)")
    }

    pub(crate) async fn connect(&self) -> Result<Clients> {
        let token = self.token()?;
        let value: MetadataValue<Ascii> =
            format!("Bearer {token}").parse().context("the token is not valid ASCII header text")?;
        let channel = Endpoint::from_shared(self.server.clone())
            .with_context(|| format!("invalid server address {}", self.server))?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.server))?;
        Ok(Clients { channel: InterceptedService::new(channel, Bearer(value)) })
    }
}

impl Clients {
    pub(crate) fn eventlog(&self) -> pb::event_log_client::EventLogClient<AuthChannel> {
        pb::event_log_client::EventLogClient::new(self.channel.clone()).max_decoding_message_size(64 * 1024 * 1024)
    }
    pub(crate) fn tokens(&self) -> pb::tokens_client::TokensClient<AuthChannel> {
        pb::tokens_client::TokensClient::new(self.channel.clone())
    }
    pub(crate) fn admin(&self) -> pb::admin_client::AdminClient<AuthChannel> {
        pb::admin_client::AdminClient::new(self.channel.clone())
    }
    pub(crate) fn audit(&self) -> pb::audit_client::AuditClient<AuthChannel> {
        pb::audit_client::AuditClient::new(self.channel.clone()).max_decoding_message_size(64 * 1024 * 1024)
    }
    pub(crate) fn query(&self) -> pb::query_client::QueryClient<AuthChannel> {
        pb::query_client::QueryClient::new(self.channel.clone()).max_decoding_message_size(64 * 1024 * 1024)
    }
    pub(crate) fn commands(&self) -> pb::command_service_client::CommandServiceClient<AuthChannel> {
        pb::command_service_client::CommandServiceClient::new(self.channel.clone())
    }
    pub(crate) fn intake(&self) -> pb::intake_client::IntakeClient<AuthChannel> {
        pb::intake_client::IntakeClient::new(self.channel.clone())
    }
}

/// A gRPC status as an error that says which call failed and why.
pub(crate) fn status(call: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{call}: {:?}: {}", s.code(), s.message())
}

/// True when the server does not implement the called method (an older server).
pub(crate) fn unimplemented(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unimplemented
}
