//! A real `crm-server` child process and a way to run `crmctl` against it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The `crm-server` binary of this target directory. `cargo test -p crm-cli` does not build
/// another package's binary, so the first call runs `cargo build -p crm-server` into the same
/// target directory (a no-op when it is up to date). In CI (`CI` set), or with
/// `CRM_TEST_SERVER_PREBUILT`, an existing binary is used as it is: `cargo test --workspace`
/// has just built it.
pub(crate) fn server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // <target>/<profile>/deps/integration-<hash>
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_owned();
        let bin = profile_dir.join(format!("crm-server{}", std::env::consts::EXE_SUFFIX));
        let prebuilt = std::env::var_os("CI").is_some() || std::env::var_os("CRM_TEST_SERVER_PREBUILT").is_some();
        if !(prebuilt && bin.exists()) {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "crm-server", "--bin", "crm-server"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            cmd.arg("--quiet");
            // The same target directory as this test binary.
            cmd.env("CARGO_TARGET_DIR", profile_dir.parent().expect("target dir"));
            let status = cmd.status().expect("run cargo build -p crm-server");
            assert!(status.success(), "building crm-server failed");
        }
        bin
    })
}

/// A running `crm-server`; killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    pub(crate) token_file: PathBuf,
}

impl Server {
    /// Starts the server on a free loopback port with `data_dir`. `token_file` holds an
    /// administrator token: the data directory's bootstrap token, or (for a restored
    /// directory, which has no bootstrap file) one given by the caller.
    pub(crate) fn start(data_dir: &Path, token_file: Option<&Path>) -> Server {
        let mut child = Command::new(server_binary())
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
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
        let addr = rx.recv_timeout(Duration::from_secs(120)).expect("server prints its address");
        let token_file = token_file.map(Path::to_owned).unwrap_or_else(|| data_dir.join("bootstrap-admin-token"));
        Server { child, url: format!("http://{addr}"), token_file }
    }

    /// `crmctl` with the server and token set through the environment, as an operator would.
    pub(crate) fn crmctl(&self) -> Command {
        let mut cmd = crmctl();
        cmd.env("CRM_SERVER", &self.url).env("CRM_TOKEN_FILE", &self.token_file);
        cmd
    }

    /// Runs `crmctl args...` and returns its standard output; panics with stderr on failure.
    pub(crate) fn run(&self, args: &[&str]) -> String {
        ok(self.crmctl().args(args).output().expect("run crmctl"), args)
    }

    pub(crate) async fn channel(&self) -> crm_cli_test_channel::AuthChannel {
        crm_cli_test_channel::connect(&self.url, &std::fs::read_to_string(&self.token_file).unwrap()).await
    }

    /// Stops the server with SIGTERM and waits for it, so its data directory can be opened.
    pub(crate) fn stop(mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `crmctl` without server settings, and without any CRM_* variable of the caller's shell.
pub(crate) fn crmctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crmctl"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CRM_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

pub(crate) fn ok(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "crmctl {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/import").join(name)
}

/// A gRPC channel with a bearer token, for setting up data the CLI does not create.
pub(crate) mod crm_cli_test_channel {
    use tonic::metadata::{Ascii, MetadataValue};
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::Channel;

    #[derive(Clone)]
    pub(crate) struct Bearer(MetadataValue<Ascii>);

    impl tonic::service::Interceptor for Bearer {
        fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
            r.metadata_mut().insert("authorization", self.0.clone());
            Ok(r)
        }
    }

    pub(crate) type AuthChannel = InterceptedService<Channel, Bearer>;

    pub(crate) async fn connect(url: &str, token: &str) -> AuthChannel {
        let channel = Channel::from_shared(url.to_owned()).unwrap().connect().await.expect("connect");
        InterceptedService::new(channel, Bearer(format!("Bearer {}", token.trim()).parse().unwrap()))
    }
}
