//! `crm.v1.Tokens`: issue, revoke and list bearer tokens (administrators only; the auth layer
//! checks the permission before a call gets here).

use std::sync::Arc;

use crm_eventlog::EventStore;
use crm_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::auth::{self, Role, TokenRecord, TokenStore};
use crate::status::{from_eventlog, invalid};

pub struct TokensService<S> {
    tokens: Arc<TokenStore<S>>,
}

impl<S> TokensService<S> {
    pub fn new(tokens: Arc<TokenStore<S>>) -> Self {
        TokensService { tokens }
    }
}

fn info(r: TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        token_id: r.token_id,
        user_id: r.user_id,
        role: r.role.as_str().to_owned(),
        region: r.region.unwrap_or_default(),
        label: r.label,
        issued_by: r.issued_by,
        issued_at_unix_micros: r.issued_at_micros,
        expires_at_unix_micros: r.expires_at_micros,
        revoked_at_unix_micros: r.revoked_at_micros.unwrap_or(0),
    }
}

#[tonic::async_trait]
impl<S: EventStore> pb::tokens_server::Tokens for TokensService<S> {
    async fn issue_token(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        let actor = auth::principal(&request)?.user_id.clone();
        let r = request.into_inner();
        let user_id = r.user_id.trim();
        if user_id.is_empty() || user_id.len() > 128 {
            return Err(invalid("user_id", "must be 1 to 128 bytes"));
        }
        let role = Role::parse(r.role.trim()).ok_or_else(|| {
            invalid("role", "must be one of sales_rep, regional_manager, operations_director, auditor, administrator")
        })?;
        let region = Some(r.region.trim().to_owned()).filter(|s| !s.is_empty());
        if role == Role::RegionalManager && region.is_none() {
            return Err(invalid("region", "is required for a regional_manager token"));
        }
        if r.ttl_days > 3650 {
            return Err(invalid("ttl_days", format!("must be at most 3650, got {}", r.ttl_days)));
        }
        let ttl = if r.ttl_days == 0 { auth::tokens::DEFAULT_TTL_DAYS } else { r.ttl_days };
        let issued =
            self.tokens.issue(&actor, user_id, role, region, ttl, r.label.trim()).await.map_err(from_eventlog)?;
        tracing::info!(token_id = %issued.record.token_id, user = user_id, %role, by = %actor, "token issued");
        Ok(Response::new(pb::IssueTokenResponse { token: issued.token, info: Some(info(issued.record)) }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let actor = auth::principal(&request)?.user_id.clone();
        let r = request.into_inner();
        if !self.tokens.revoke(&actor, r.token_id.trim(), r.reason.trim()).await.map_err(from_eventlog)? {
            return Err(Status::not_found(format!("token `{}` not found", r.token_id)));
        }
        tracing::info!(token_id = %r.token_id, by = %actor, "token revoked");
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn list_tokens(&self, _: Request<pb::ListTokensRequest>) -> Result<Response<pb::ListTokensResponse>, Status> {
        Ok(Response::new(pb::ListTokensResponse { tokens: self.tokens.list().into_iter().map(info).collect() }))
    }
}
