//! The tower layer in front of every gRPC service.
//!
//! For each request: public methods (health, reflection) pass; otherwise the bearer token is
//! authenticated (Unauthenticated if missing, unknown, expired or revoked), the method's
//! permission is checked against the role (PermissionDenied naming the permission, recorded
//! as an `AccessDenied` event in the `access-denied` stream), the token's rate and
//! concurrency limits are applied (ResourceExhausted), and the [`Principal`] is put into the
//! request extensions. On the way out, tonic's "message length too large" (OutOfRange) is
//! reported as ResourceExhausted, which is what an oversized request is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use crm_eventlog::{EventStore, ExpectedVersion, Metadata, NewEvent};
use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::Status;

use super::policy::{permission_for, MethodAccess, Principal};
use super::tokens::TokenStore;

/// The stream of recorded denials.
pub const DENIALS_STREAM: &str = "access-denied";

/// Per-token limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Sustained requests per second per token.
    pub rate_per_sec: f64,
    /// Requests a token may make at once above the sustained rate.
    pub burst: f64,
    /// Requests of one token in flight at once.
    pub max_concurrent: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { rate_per_sec: 2000.0, burst: 4000.0, max_concurrent: 128 }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct State<S> {
    tokens: Arc<TokenStore<S>>,
    store: S,
    limits: Limits,
    buckets: Mutex<HashMap<String, Bucket>>,
    in_flight: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

/// The auth layer; see the module docs.
pub struct AuthLayer<S> {
    state: Arc<State<S>>,
}

impl<S> Clone for AuthLayer<S> {
    fn clone(&self) -> Self {
        AuthLayer { state: self.state.clone() }
    }
}

impl<S: EventStore + Clone> AuthLayer<S> {
    pub fn new(tokens: Arc<TokenStore<S>>, store: S, limits: Limits) -> Self {
        AuthLayer {
            state: Arc::new(State {
                tokens,
                store,
                limits,
                buckets: Mutex::new(HashMap::new()),
                in_flight: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl<S, Inner> tower::Layer<Inner> for AuthLayer<S> {
    type Service = AuthService<S, Inner>;

    fn layer(&self, inner: Inner) -> Self::Service {
        AuthService { state: self.state.clone(), inner }
    }
}

/// The service the layer wraps around tonic's routes.
pub struct AuthService<S, Inner> {
    state: Arc<State<S>>,
    inner: Inner,
}

impl<S, Inner: Clone> Clone for AuthService<S, Inner> {
    fn clone(&self) -> Self {
        AuthService { state: self.state.clone(), inner: self.inner.clone() }
    }
}

/// Decrements a token's in-flight count when the request is done.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S: EventStore + Clone> State<S> {
    fn admit(&self, req: &http::Request<Body>) -> Result<Option<(Principal, InFlight)>, Status> {
        let path = req.uri().path();
        let access = permission_for(path);
        if access == MethodAccess::Public {
            return Ok(None);
        }
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| Status::unauthenticated("missing bearer token: send `authorization: Bearer <token>`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .ok_or_else(|| Status::unauthenticated("malformed authorization header: expected `Bearer <token>`"))?;
        let principal = self.tokens.authenticate(token.trim()).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let permission = match access {
            MethodAccess::Requires(p) => p,
            MethodAccess::Unmapped => {
                self.record_denial(&principal, path, "unmapped");
                return Err(Status::permission_denied(format!(
                    "method {path} has no permission defined; it is refused for every role"
                )));
            }
            MethodAccess::Public => unreachable!("handled above"),
        };
        if !principal.allows(permission) {
            self.record_denial(&principal, path, permission.as_str());
            return Err(Status::permission_denied(format!(
                "permission `{permission}` is required for {path}; role `{}` does not have it",
                principal.role
            )));
        }
        self.take_rate(&principal.token_id)?;
        let guard = self.enter(&principal.token_id)?;
        Ok(Some((principal, guard)))
    }

    fn take_rate(&self, token_id: &str) -> Result<(), Status> {
        let Limits { rate_per_sec, burst, .. } = self.limits;
        let mut buckets = self.buckets.lock().expect("buckets lock");
        let now = Instant::now();
        let b = buckets.entry(token_id.to_owned()).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate_per_sec).min(burst);
        b.at = now;
        if b.tokens < 1.0 {
            return Err(Status::resource_exhausted(format!(
                "rate limit: token {token_id} may make {rate_per_sec} requests per second (burst {burst})"
            )));
        }
        b.tokens -= 1.0;
        Ok(())
    }

    fn enter(&self, token_id: &str) -> Result<InFlight, Status> {
        let counter = self.in_flight.lock().expect("in-flight lock").entry(token_id.to_owned()).or_default().clone();
        let before = counter.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(counter);
        if before >= self.limits.max_concurrent {
            return Err(Status::resource_exhausted(format!(
                "concurrency limit: token {token_id} may have {} requests in flight",
                self.limits.max_concurrent
            )));
        }
        Ok(guard)
    }

    /// Records a denial for the auditor, without making the caller wait for it.
    fn record_denial(&self, principal: &Principal, method: &str, permission: &str) {
        tracing::warn!(user = %principal.user_id, role = %principal.role, method, permission, "permission denied");
        let payload = serde_json::json!({
            "token_id": principal.token_id,
            "user_id": principal.user_id,
            "role": principal.role.as_str(),
            "method": method,
            "permission": permission,
        })
        .to_string()
        .into_bytes();
        let event = NewEvent {
            id: uuid::Uuid::now_v7(),
            event_type: "AccessDenied".into(),
            schema_version: 1,
            metadata: Metadata {
                actor: principal.user_id.clone(),
                correlation_id: uuid::Uuid::now_v7(),
                causation_id: None,
                source: "grpc".into(),
            },
            payload,
        };
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.append(DENIALS_STREAM, ExpectedVersion::Any, vec![event]).await {
                tracing::error!(error = %e, "recording a denial failed");
            }
        });
    }
}

impl<S, Inner> tower::Service<http::Request<Body>> for AuthService<S, Inner>
where
    S: EventStore + Clone,
    Inner: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    Inner::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Inner::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this request (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let admitted = self.state.admit(&req);
        Box::pin(async move {
            let guard = match admitted {
                Ok(Some((principal, guard))) => {
                    req.extensions_mut().insert(principal);
                    Some(guard)
                }
                Ok(None) => None,
                Err(status) => return Ok(status.into_http()),
            };
            let response = inner.call(req).await;
            drop(guard);
            response.map(clear_decoding_errors)
        })
    }
}

/// tonic answers a request over the decoding limit with OutOfRange and an undecodable request
/// with Internal; the API promises ResourceExhausted for oversized requests and
/// InvalidArgument for malformed ones (the caller's fault, not the server's).
fn clear_decoding_errors(mut response: http::Response<Body>) -> http::Response<Body> {
    let message = response
        .headers()
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| m.replace("%20", " "))
        .unwrap_or_default();
    let status = response.headers().get("grpc-status").and_then(|s| s.to_str().ok()).unwrap_or_default();
    let oversized = status == "11" && message.contains("message length too large");
    let malformed = status == "13" && message.contains("failed to decode Protobuf message");
    if oversized {
        response.headers_mut().insert("grpc-status", http::HeaderValue::from_static("8"));
    } else if malformed {
        response.headers_mut().insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    response
}
