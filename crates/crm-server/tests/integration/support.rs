use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub(crate) struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub(crate) fn new(token: &str) -> Self {
        Bearer(format!("Bearer {token}").parse().expect("ascii token"))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel whose calls carry a bearer token.
pub(crate) type AuthChannel = InterceptedService<Channel, Bearer>;

/// A running `crm-server` child process; killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: String,
    /// The bootstrap administrator token of the data directory.
    pub(crate) admin_token: String,
}

impl Server {
    /// Starts the server on a free loopback port with `data_dir` and waits until it listens.
    pub(crate) fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    /// Like [`Server::start`], with extra command-line arguments.
    pub(crate) fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crm-server"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("CRM_LOG", std::env::var("TEST_CRM_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn crm-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("crm-server listening on ") {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("server prints its address");
        let admin_token = std::fs::read_to_string(data_dir.join("bootstrap-admin-token"))
            .expect("a data directory has its bootstrap administrator token")
            .trim()
            .to_owned();
        Server { child, addr, admin_token }
    }

    /// A channel without credentials.
    pub(crate) async fn raw_channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.expect("connect")
    }

    /// A channel carrying the bootstrap administrator token.
    pub(crate) async fn channel(&self) -> AuthChannel {
        self.channel_with(&self.admin_token).await
    }

    /// A channel carrying `token`.
    pub(crate) async fn channel_with(&self, token: &str) -> AuthChannel {
        InterceptedService::new(self.raw_channel().await, Bearer::new(token))
    }

    /// Sends SIGTERM and waits for the exit status (asynchronously, so that the test's own
    /// client connections keep being driven and can answer the server's GOAWAY).
    pub(crate) async fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not exit within 10 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
