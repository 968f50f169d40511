//! What a dependency install may reach: the package registries, and nothing else.
//!
//! npm, yarn and pnpm fetch whatever a project's manifest or lockfile names (a tarball URL, a git
//! repository, a host on the worker's own loopback or private network), and a project's editor
//! writes those files. So every install step reaches the network only through a forward proxy in
//! the worker ([`Proxy`]) that lets through the hosts of `PREVIEW_INSTALL_HOSTS` at public
//! addresses and refuses everything else without connecting to it: the step learns nothing about
//! a refused target, not even whether it exists.
//!
//! With bubblewrap the step runs in a network namespace of its own whose only way out is that
//! proxy: a relay on the namespace's loopback (a few lines of Node, [`RELAY`]) forwards each
//! connection to the proxy's Unix socket, so a program that ignores the proxy settings reaches
//! nothing at all. Without bubblewrap the proxy settings are all there is, and the build log says
//! so. The step also runs with `DATA_DIR` and `HOME` hidden, as the bundler does, with only its
//! staging directory, the tool caches and npm's download cache mounted back.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::log::BuildLog;
use crate::process::{Step, StepError};
use crate::sandbox::Sandbox;

pub use hivesync_core::config::DEFAULT_INSTALL_HOSTS;

/// The port the relay listens on inside the step's network namespace (which has nothing else).
const RELAY_PORT: u16 = 3128;

/// The longest a client may take to send its request head to the proxy.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEAD: usize = 16 * 1024;
/// Refused targets remembered per step (the first ones are what the error message names).
const MAX_REFUSED: usize = 8;

/// Forwards every connection to the namespace's loopback port to the proxy's Unix socket, then
/// runs the install as its child, so the port is open before the install starts.
const RELAY: &str = r#"'use strict';
const net = require('net');
const { spawn } = require('child_process');
const [socket, port, program, ...args] = process.argv.slice(2);
const server = net.createServer((client) => {
  const upstream = net.connect(socket);
  const close = () => { client.destroy(); upstream.destroy(); };
  client.on('error', close);
  upstream.on('error', close);
  client.pipe(upstream);
  upstream.pipe(client);
});
server.listen(Number(port), '127.0.0.1', () => {
  const child = spawn(program, args, { stdio: 'inherit' });
  child.on('error', (err) => { console.error(`cannot start ${program}: ${err.message}`); process.exit(127); });
  child.on('exit', (code) => process.exit(code === null ? 1 : code));
});
"#;

/// One allowed host: a name (`*.example.com` for a domain's subdomains), and a port when one is
/// named (otherwise 443 and 80).
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostRule {
    name: String,
    port: Option<u16>,
}

impl HostRule {
    fn parse(text: &str) -> Result<HostRule, String> {
        let (name, port) = hivesync_core::config::parse_install_host(text)?;
        Ok(HostRule { name, port })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        let name_matches = match self.name.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => host == self.name,
        };
        name_matches
            && match self.port {
                Some(allowed) => port == allowed,
                None => port == 443 || port == 80,
            }
    }
}

/// Which hosts an install may reach (`PREVIEW_INSTALL_HOSTS`), and whether they may be at private
/// addresses (`PREVIEW_INSTALL_ALLOW_PRIVATE`, for a registry mirror on the local network).
#[derive(Debug, Clone)]
pub struct InstallPolicy {
    hosts: Vec<HostRule>,
    allow_private: bool,
}

impl Default for InstallPolicy {
    fn default() -> Self {
        InstallPolicy::new(DEFAULT_INSTALL_HOSTS, false).expect("the default hosts parse")
    }
}

impl InstallPolicy {
    /// A policy allowing `hosts` (`registry.npmjs.org`, `*.example.com`, `mirror.local:4873`).
    pub fn new(hosts: &[impl AsRef<str>], allow_private: bool) -> Result<Self, String> {
        Ok(InstallPolicy {
            hosts: hosts
                .iter()
                .map(|h| HostRule::parse(h.as_ref()))
                .collect::<Result<_, _>>()?,
            allow_private,
        })
    }

    /// Whether `host` (lowercase) at `port` may be asked for at all.
    fn permits(&self, host: &str, port: u16) -> bool {
        self.hosts.iter().any(|rule| rule.matches(host, port))
    }

    /// Whether a permitted host may be reached at `ip`: at a public address (documentation
    /// ranges count as public: nothing internal lives there, and some networks' resolvers answer
    /// with them), or anywhere with `PREVIEW_INSTALL_ALLOW_PRIVATE`. Imports draw the same line.
    fn reachable(&self, ip: IpAddr) -> bool {
        self.allow_private || !hivesync_core::repo::is_private(ip)
    }

    /// The allowed hosts, for messages.
    pub fn describe(&self) -> String {
        self.hosts
            .iter()
            .map(|rule| match rule.port {
                Some(port) => format!("{}:{port}", rule.name),
                None => rule.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A proxy the worker's own network requires (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), which the
/// install proxy connects through once it has allowed a target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Upstream {
    https: Option<ProxyServer>,
    http: Option<ProxyServer>,
    no_proxy: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProxyServer {
    host: String,
    port: u16,
    /// `Basic …`, from credentials in the proxy's URL.
    authorization: Option<String>,
}

impl ProxyServer {
    /// `http://[user:password@]host[:port]`; other schemes are not supported.
    fn parse(url: &str) -> Option<ProxyServer> {
        let rest = url.trim().strip_prefix("http://")?;
        let authority = rest.split('/').next()?;
        let (credentials, address) = match authority.rsplit_once('@') {
            Some((credentials, address)) => (Some(credentials), address),
            None => (None, authority),
        };
        let (host, port) = match address.strip_prefix('[') {
            // `[v6]` or `[v6]:port`.
            Some(bracketed) => {
                let (host, after) = bracketed.split_once(']')?;
                match after.strip_prefix(':') {
                    Some(port) => (host, port.parse().ok()?),
                    None if after.is_empty() => (host, 80),
                    None => return None,
                }
            }
            None => match address.split_once(':') {
                Some((host, port)) => (host, port.parse().ok()?),
                None => (address, 80),
            },
        };
        if host.is_empty() {
            return None;
        }
        Some(ProxyServer {
            host: host.to_owned(),
            port,
            authorization: credentials.map(|c| {
                use base64::Engine;
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(percent_decode(c))
                )
            }),
        })
    }
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

impl Upstream {
    fn from_env(get: impl Fn(&str) -> Option<String>) -> Option<Upstream> {
        let either = |upper: &str, lower: &str| get(lower).or_else(|| get(upper));
        let upstream = Upstream {
            https: either("HTTPS_PROXY", "https_proxy").and_then(|u| ProxyServer::parse(&u)),
            http: either("HTTP_PROXY", "http_proxy").and_then(|u| ProxyServer::parse(&u)),
            no_proxy: either("NO_PROXY", "no_proxy")
                .unwrap_or_default()
                .split(',')
                .map(|h| h.trim().trim_start_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        };
        (upstream.https.is_some() || upstream.http.is_some()).then_some(upstream)
    }

    /// The proxy to reach `host` through (`tls`: a tunnel), `None` to connect directly.
    fn for_host(&self, host: &str, tls: bool) -> Option<&ProxyServer> {
        let bypass = self.no_proxy.iter().any(|entry| {
            entry == "*"
                || host == entry
                || host
                    .strip_suffix(entry.as_str())
                    .is_some_and(|sub| sub.ends_with('.'))
        });
        if bypass {
            return None;
        }
        if tls {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        }
    }
}

/// Where installs may connect, and how they are confined.
#[derive(Debug, Clone)]
pub struct InstallNetwork {
    policy: Arc<InstallPolicy>,
    sandbox: Arc<Sandbox>,
    upstream: Option<Upstream>,
}

/// Why an install step failed.
#[derive(Debug)]
pub(crate) enum InstallError {
    /// It asked the proxy for targets that builds may not reach (`host:port`, first ones).
    Refused(Vec<String>),
    Step(StepError),
}

impl InstallNetwork {
    /// Installs reach what `policy` allows, confined by `sandbox` when it is bubblewrap; the
    /// worker's own proxy settings are followed for allowed targets.
    pub fn new(policy: InstallPolicy, sandbox: Arc<Sandbox>) -> Self {
        InstallNetwork {
            policy: Arc::new(policy),
            sandbox,
            upstream: Upstream::from_env(|name| std::env::var(name).ok()),
        }
    }

    /// The defaults: the public registries only, confined by bubblewrap where it runs here
    /// (hiding `data_dir` and `HOME`).
    pub fn registries_only(data_dir: &Path) -> Self {
        let sandbox = Sandbox::for_mode(crate::sandbox::SandboxMode::Auto, data_dir);
        InstallNetwork::new(InstallPolicy::default(), Arc::new(sandbox))
    }

    pub fn policy(&self) -> &InstallPolicy {
        &self.policy
    }

    /// The message for a step that asked for `refused` targets.
    pub(crate) fn refusal(&self, command: &str, refused: &[String]) -> String {
        format!(
            "{command} failed: it needs {}, which builds may not reach; dependencies are installed \
             only from {} (an operator can allow more hosts with PREVIEW_INSTALL_HOSTS)",
            refused.join(", "),
            self.policy.describe()
        )
    }

    /// Runs an install `step` that writes to `writable` (besides its own directory), with the
    /// network only through the install proxy.
    pub(crate) async fn run(
        &self,
        step: Step<'_>,
        writable: &[&Path],
        log: &BuildLog,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<(), InstallError> {
        let confined = matches!(*self.sandbox, Sandbox::Bwrap { .. });
        let proxy = Proxy::start(self.policy.clone(), self.upstream.clone(), confined)
            .await
            .map_err(|err| InstallError::Step(StepError::Spawn(err)))?;
        let url = match &proxy.address {
            ProxyAddress::Tcp(address) => format!("http://{address}"),
            ProxyAddress::Unix { .. } => format!("http://127.0.0.1:{RELAY_PORT}"),
        };
        let npm_cache = npm_cache();
        let mut step = step;
        for name in ["NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR"] {
            if let Some(value) = std::env::var_os(name) {
                step = step.env(name, value);
            }
        }
        for name in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "npm_config_proxy",
            "npm_config_https_proxy",
            // yarn berry's names (yarn classic reads npm's; berry refuses its `proxy`).
            "YARN_HTTPS_PROXY",
            "YARN_HTTP_PROXY",
        ] {
            step = step.env(name, &url);
        }
        step = step
            .env("NO_PROXY", "")
            .env("no_proxy", "")
            .env("npm_config_noproxy", "")
            .env("npm_config_cache", &npm_cache)
            // git fetches over HTTP(S) only (through the proxy): no ssh, git:// or file://.
            .env("GIT_ALLOW_PROTOCOL", "http:https")
            .env("GIT_TERMINAL_PROMPT", "0");
        let step = match &proxy.address {
            ProxyAddress::Unix { dir, socket } => {
                log.line(format_args!(
                    "install network: only {} (PREVIEW_INSTALL_HOSTS), through the install proxy, \
                     in a network namespace of its own",
                    self.policy.describe()
                ));
                for dir in writable.iter().copied().chain([npm_cache.as_path()]) {
                    std::fs::create_dir_all(dir)
                        .map_err(|err| InstallError::Step(StepError::Spawn(err)))?;
                }
                let relay = dir.join("relay.js");
                std::fs::write(&relay, RELAY)
                    .map_err(|err| InstallError::Step(StepError::Spawn(err)))?;
                let mut args: Vec<OsString> = vec![
                    relay.into_os_string(),
                    socket.clone().into_os_string(),
                    RELAY_PORT.to_string().into(),
                    step.program.clone(),
                ];
                args.extend(step.args.iter().cloned());
                let mut mounts: Vec<&Path> = vec![step.cwd, dir, &npm_cache];
                mounts.extend(writable);
                // The operator's npm settings (registry, credentials for it) still apply.
                let npmrc = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".npmrc"));
                let npmrc = npmrc.filter(|path| path.is_file());
                let read_only: Vec<(&Path, &Path)> =
                    npmrc.iter().map(|p| (p.as_path(), p.as_path())).collect();
                let (program, line) = self
                    .sandbox
                    .wrap(&"node".into(), &args, step.cwd, &mounts, &read_only)
                    .map_err(|why| {
                        InstallError::Step(StepError::Spawn(std::io::Error::other(why)))
                    })?;
                Step {
                    program,
                    args: line,
                    ..step
                }
            }
            ProxyAddress::Tcp(_) => {
                log.line(format_args!(
                    "install network: only {} (PREVIEW_INSTALL_HOSTS), through the install proxy; \
                     not enforced for programs that ignore proxy settings, since there is no sandbox",
                    self.policy.describe()
                ));
                step
            }
        };
        // A refusal is final (the policy will not change), and npm would retry a refused fetch for
        // minutes: the step stops at the first one.
        let refusing = stop.child_token();
        proxy.stop_on_refusal(refusing.clone());
        let outcome = step.run(log, deadline, &refusing).await;
        let refused = proxy.finish();
        for target in &refused {
            log.line(format_args!(
                "install network: refused {target} (not an allowed registry host)"
            ));
        }
        match outcome {
            Ok(()) => Ok(()),
            Err(err) if stop.is_cancelled() => Err(InstallError::Step(err)),
            Err(StepError::Failed(_) | StepError::Stopped) if !refused.is_empty() => {
                Err(InstallError::Refused(refused))
            }
            Err(err) => Err(InstallError::Step(err)),
        }
    }
}

/// npm's download cache: `npm_config_cache` where the worker sets it, else `~/.npm`.
fn npm_cache() -> PathBuf {
    std::env::var_os("npm_config_cache")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".npm")))
        .unwrap_or_else(|| std::env::temp_dir().join("hivesync-npm-cache"))
}

enum ProxyAddress {
    Tcp(SocketAddr),
    /// A Unix socket in a private directory (short, so the path fits a socket address).
    Unix {
        dir: PathBuf,
        socket: PathBuf,
    },
}

/// The install proxy of one step.
struct Proxy {
    address: ProxyAddress,
    refusals: Arc<Refusals>,
    stop: CancellationToken,
    _dir: Option<tempfile::TempDir>,
}

/// What the proxy refused, and whom to tell at the first refusal.
#[derive(Default)]
struct Refusals {
    targets: Mutex<BTreeSet<String>>,
    on_first: Mutex<Option<CancellationToken>>,
}

impl Refusals {
    fn record(&self, target: &str, why: &str) {
        tracing::info!(target, why, "install proxy refused a target");
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if targets.len() < MAX_REFUSED {
            targets.insert(target.to_owned());
        }
        if let Some(token) = &*self.on_first.lock().unwrap_or_else(|e| e.into_inner()) {
            token.cancel();
        }
    }
}

/// A connection to the proxy, over TCP or a Unix socket.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Box<dyn Connection>> {
        Ok(match self {
            Listener::Tcp(listener) => Box::new(listener.accept().await?.0),
            Listener::Unix(listener) => Box::new(listener.accept().await?.0),
        })
    }
}

impl Proxy {
    /// A proxy on a Unix socket in a private directory (`unix`), or on loopback TCP.
    async fn start(
        policy: Arc<InstallPolicy>,
        upstream: Option<Upstream>,
        unix: bool,
    ) -> std::io::Result<Proxy> {
        let (listener, address, dir) = if unix {
            let dir = tempfile::Builder::new().prefix(".hivesync-net").tempdir()?;
            let socket = dir.path().join("proxy.sock");
            let listener = Listener::Unix(tokio::net::UnixListener::bind(&socket)?);
            let address = ProxyAddress::Unix {
                dir: dir.path().to_path_buf(),
                socket,
            };
            (listener, address, Some(dir))
        } else {
            let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let address = ProxyAddress::Tcp(listener.local_addr()?);
            (Listener::Tcp(listener), address, None)
        };
        let refusals = Arc::new(Refusals::default());
        let stop = CancellationToken::new();
        let rules = Arc::new(Rules { policy, upstream });
        let (refusals_too, stop_too) = (refusals.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(stream) => {
                            tokio::spawn(serve(stream, rules.clone(), refusals_too.clone(), stop_too.clone()));
                        }
                        Err(err) => tracing::warn!(%err, "install proxy: accept failed"),
                    },
                    () = stop_too.cancelled() => break,
                }
            }
        });
        Ok(Proxy {
            address,
            refusals,
            stop,
            _dir: dir,
        })
    }

    fn stop_on_refusal(&self, token: CancellationToken) {
        *self
            .refusals
            .on_first
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(token);
    }

    /// Stops serving (open tunnels end too) and returns the refused targets.
    fn finish(self) -> Vec<String> {
        self.stop.cancel();
        let targets = self
            .refusals
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        targets.iter().cloned().collect()
    }
}

struct Rules {
    policy: Arc<InstallPolicy>,
    upstream: Option<Upstream>,
}

/// A proxied request's target.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    /// `CONNECT`: a tunnel; otherwise a plain HTTP request whose head is forwarded with
    /// `origin_line` as its first line.
    tunnel: bool,
    origin_line: String,
}

impl Target {
    /// `host:port`, with an IPv6 host in brackets.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses a proxy request's first line: `CONNECT host:port HTTP/1.1` or
/// `GET http://host[:port]/path HTTP/1.1`.
fn parse_target(line: &str) -> Option<Target> {
    let mut parts = line.split(' ');
    let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let split_host = |authority: &str, default: u16| -> Option<(String, u16)> {
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(port) => port.parse().ok()?,
                None if after.is_empty() => default,
                None => return None,
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, port.parse().ok()?),
                None => (authority, default),
            }
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        (!host.is_empty() && port != 0).then_some((host, port))
    };
    if method == "CONNECT" {
        let (host, port) = split_host(uri, 443)?;
        return Some(Target {
            host,
            port,
            tunnel: true,
            origin_line: String::new(),
        });
    }
    let rest = uri.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return None;
    }
    let (host, port) = split_host(authority, 80)?;
    Some(Target {
        host,
        port,
        tunnel: false,
        origin_line: format!("{method} {path} {version}"),
    })
}

async fn respond(stream: &mut (impl AsyncWrite + Unpin), status: &str, why: &str) {
    let _ = stream
        .write_all(
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{why}",
                why.len()
            )
            .as_bytes(),
        )
        .await;
    let _ = stream.shutdown().await;
}

/// Reads a request head (through the blank line); returns it and what followed it.
async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::with_capacity(1024);
    let read = async {
        loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let rest = buffer.split_off(end + 4);
                return String::from_utf8(std::mem::take(&mut buffer))
                    .ok()
                    .map(|head| (head, rest));
            }
            if buffer.len() > MAX_HEAD {
                return None;
            }
            let mut chunk = [0u8; 2048];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(HEAD_TIMEOUT, read)
        .await
        .ok()
        .flatten()
}

async fn serve(
    mut client: Box<dyn Connection>,
    rules: Arc<Rules>,
    refusals: Arc<Refusals>,
    stop: CancellationToken,
) {
    let Some((head, rest)) = read_head(&mut client).await else {
        return respond(&mut client, "400 Bad Request", "not a proxy request\n").await;
    };
    let first = head.lines().next().unwrap_or_default();
    let Some(target) = parse_target(first) else {
        return respond(&mut client, "400 Bad Request", "not a proxy request\n").await;
    };
    let named = target.authority();
    let refuse = |why: &str| refusals.record(&named, why);
    if !rules.policy.permits(&target.host, target.port) {
        refuse("not an allowed host");
        return respond(
            &mut client,
            "403 Forbidden",
            "not an allowed registry host\n",
        )
        .await;
    }
    let via = rules
        .upstream
        .as_ref()
        .and_then(|u| u.for_host(&target.host, target.tunnel));
    // A registry that is briefly unreachable (a lookup or connect that fails under the load of
    // a package manager's parallel fetches) is tried again before the client is told 502, which
    // fails the whole install.
    let mut attempt = 0;
    let server = loop {
        let server = match via {
            Some(proxy) => through_upstream(proxy, &target, &head, &rest).await,
            None => direct(&rules.policy, &target).await,
        };
        match server {
            Err(Unreachable::Failed(_)) if attempt + 1 < CONNECT_ATTEMPTS => {
                attempt += 1;
                tokio::select! {
                    () = tokio::time::sleep(CONNECT_RETRY_AFTER * attempt) => {}
                    () = stop.cancelled() => return,
                }
            }
            other => break other,
        }
    };
    let mut server = match server {
        Ok(server) => server,
        Err(Unreachable::Refused(why)) => {
            refuse(why);
            return respond(
                &mut client,
                "403 Forbidden",
                "not an allowed registry host\n",
            )
            .await;
        }
        Err(Unreachable::Failed(why)) => {
            return respond(&mut client, "502 Bad Gateway", &format!("{why}\n")).await;
        }
    };
    let forwarded = match (target.tunnel, via.is_some()) {
        (true, _) => {
            client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await
                .is_ok()
                && server.write_all(&rest).await.is_ok()
        }
        // The upstream proxy got the head as it came, in `through_upstream`.
        (false, true) => true,
        (false, false) => {
            let after_first = head.split_once("\r\n").map_or("", |(_, after)| after);
            server
                .write_all(format!("{}\r\n{after_first}", target.origin_line).as_bytes())
                .await
                .is_ok()
                && server.write_all(&rest).await.is_ok()
        }
    };
    if forwarded {
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            () = stop.cancelled() => {}
        }
    }
}

/// How many times a registry is tried before the client is answered 502, and the wait before
/// the second try (then twice that).
const CONNECT_ATTEMPTS: u32 = 3;
const CONNECT_RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

enum Unreachable {
    /// The host resolves to an address builds may not reach.
    Refused(&'static str),
    Failed(String),
}

async fn direct(policy: &InstallPolicy, target: &Target) -> Result<TcpStream, Unreachable> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|err| Unreachable::Failed(format!("cannot resolve {}: {err}", target.host)))?
        .collect();
    // Every address must be reachable: a name that also resolves privately is refused whole, so
    // which address a retry lands on changes nothing.
    if addresses.is_empty() || addresses.iter().any(|a| !policy.reachable(a.ip())) {
        return Err(Unreachable::Refused("resolves to a private address"));
    }
    let mut last = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(Unreachable::Failed(format!(
        "cannot connect to {}: {}",
        target.host,
        last.map_or_else(|| "no address".to_owned(), |e| e.to_string())
    )))
}

async fn through_upstream(
    proxy: &ProxyServer,
    target: &Target,
    head: &str,
    rest: &[u8],
) -> Result<TcpStream, Unreachable> {
    let failed = |err: std::io::Error| Unreachable::Failed(format!("upstream proxy: {err}"));
    let mut stream = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(failed)?;
    let authorization = proxy
        .authorization
        .as_ref()
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    if !target.tunnel {
        // A plain request goes to the upstream proxy as it came (absolute form), with its
        // credentials.
        let (first, after) = head.split_once("\r\n").unwrap_or((head, ""));
        stream
            .write_all(format!("{first}\r\n{authorization}{after}").as_bytes())
            .await
            .map_err(failed)?;
        stream.write_all(rest).await.map_err(failed)?;
        return Ok(stream);
    }
    let authority = target.authority();
    stream
        .write_all(
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{authorization}\r\n")
                .as_bytes(),
        )
        .await
        .map_err(failed)?;
    let (answer, early) = read_head(&mut stream)
        .await
        .ok_or_else(|| Unreachable::Failed("upstream proxy: no answer".to_owned()))?;
    let status = answer.split(' ').nth(1).unwrap_or_default();
    if status != "200" || !early.is_empty() {
        return Err(Unreachable::Failed(format!(
            "upstream proxy answered {}",
            answer.lines().next().unwrap_or_default()
        )));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rules_match_names_subdomains_and_ports() {
        let policy = InstallPolicy::new(
            &["registry.npmjs.org", "*.example.com", "mirror.lan:4873"],
            false,
        )
        .unwrap();
        assert!(policy.permits("registry.npmjs.org", 443));
        assert!(policy.permits("registry.npmjs.org", 80));
        assert!(!policy.permits("registry.npmjs.org", 22));
        assert!(!policy.permits("registry.npmjs.org.evil.com", 443));
        assert!(!policy.permits("evilregistry.npmjs.org", 443));
        assert!(policy.permits("a.example.com", 443));
        assert!(!policy.permits("example.com", 443));
        assert!(!policy.permits("aexample.com", 443));
        assert!(policy.permits("mirror.lan", 4873));
        assert!(!policy.permits("mirror.lan", 443));
        assert!(!policy.permits("127.0.0.1", 443));
        assert_eq!(
            policy.describe(),
            "registry.npmjs.org, *.example.com, mirror.lan:4873"
        );
        for bad in ["", "http://x", "x/y", "x:0", "x:99999", "*.", "a..b"] {
            assert!(InstallPolicy::new(&[bad], false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_public_addresses_are_reachable_unless_private_ones_are_allowed() {
        let strict = InstallPolicy::default();
        let open = InstallPolicy::new(&["x"], true).unwrap();
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(!strict.reachable(ip), "{private}");
            assert!(open.reachable(ip), "{private}");
        }
        for public in ["104.16.0.1", "203.0.113.80", "2606:4700::6810:1"] {
            assert!(strict.reachable(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn proxy_requests_parse_into_targets() {
        assert_eq!(
            parse_target("CONNECT registry.npmjs.org:443 HTTP/1.1"),
            Some(Target {
                host: "registry.npmjs.org".into(),
                port: 443,
                tunnel: true,
                origin_line: String::new()
            })
        );
        assert_eq!(
            parse_target("GET http://127.0.0.1:8080/x.tgz HTTP/1.1"),
            Some(Target {
                host: "127.0.0.1".into(),
                port: 8080,
                tunnel: false,
                origin_line: "GET /x.tgz HTTP/1.1".into()
            })
        );
        assert_eq!(
            parse_target("CONNECT [::1]:22 HTTP/1.1").unwrap().host,
            "::1"
        );
        assert_eq!(
            parse_target("GET http://Registry.NPMJS.org./a HTTP/1.1")
                .unwrap()
                .host,
            "registry.npmjs.org"
        );
        for bad in [
            "GET /x HTTP/1.1",
            "GET https://x/ HTTP/1.1",
            "GET http://user@x/ HTTP/1.1",
            "CONNECT x:0 HTTP/1.1",
            "CONNECT x:443 SPDY/3",
            "CONNECT x:443 HTTP/1.1 extra",
        ] {
            assert_eq!(parse_target(bad), None, "{bad}");
        }
    }

    #[test]
    fn upstream_proxies_come_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Upstream::from_env(env(&[])), None);
        let upstream = Upstream::from_env(env(&[
            ("HTTPS_PROXY", "http://user:p%40ss@proxy.corp:3128"),
            ("NO_PROXY", "internal.corp, .lan"),
        ]))
        .unwrap();
        let proxy = upstream.for_host("registry.npmjs.org", true).unwrap();
        assert_eq!((proxy.host.as_str(), proxy.port), ("proxy.corp", 3128));
        use base64::Engine;
        assert_eq!(
            proxy.authorization.as_deref(),
            Some(
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("user:p@ss")
                )
                .as_str()
            )
        );
        assert!(upstream.for_host("registry.npmjs.org", false).is_none());
        assert!(upstream.for_host("npm.internal.corp", true).is_none());
        assert!(upstream.for_host("mirror.lan", true).is_none());
        assert!(ProxyServer::parse("socks5://x:1").is_none());
        let v6 = |url: &str| ProxyServer::parse(url).map(|p| (p.host, p.port));
        assert_eq!(v6("http://[::1]:3128"), Some(("::1".to_owned(), 3128)));
        assert_eq!(v6("http://[::1]"), Some(("::1".to_owned(), 80)));
        assert_eq!(v6("http://proxy.corp"), Some(("proxy.corp".to_owned(), 80)));
        assert_eq!(v6("http://[::1]x"), None);
    }

    /// A proxy refuses what is not allowed without connecting to it, and tunnels to what is,
    /// also through an upstream proxy.
    #[tokio::test]
    async fn the_proxy_refuses_without_connecting_and_tunnels_what_is_allowed() {
        // The "server" an attacker would aim at, and an allowed host (by a private-address
        // exception, so this runs without the internet).
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = target.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = target.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    let n = stream.read(&mut buffer).await.unwrap_or(0);
                    let _ = stream.write_all(&buffer[..n]).await;
                });
            }
        });

        async fn ask(proxy: SocketAddr, request: &str) -> String {
            let mut stream = TcpStream::connect(proxy).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let mut buffer = [0u8; 1024];
            loop {
                let n = stream.read(&mut buffer).await.unwrap();
                answer.extend_from_slice(&buffer[..n]);
                if n == 0 || answer.ends_with(b"ping") {
                    break;
                }
                if answer.windows(4).any(|w| w == b"\r\n\r\n")
                    && answer.starts_with(b"HTTP/1.1 200")
                {
                    stream.write_all(b"ping").await.unwrap();
                }
            }
            String::from_utf8_lossy(&answer).into_owned()
        }
        let address = |proxy: &Proxy| match proxy.address {
            ProxyAddress::Tcp(address) => address,
            ProxyAddress::Unix { .. } => unreachable!(),
        };

        let strict = Proxy::start(Arc::new(InstallPolicy::default()), None, false)
            .await
            .unwrap();
        for request in [
            format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n"),
            format!("GET http://127.0.0.1:{port}/x.tgz HTTP/1.1\r\nHost: x\r\n\r\n"),
            format!("GET http://localhost:{port}/y.git/info/refs HTTP/1.1\r\n\r\n"),
        ] {
            let answer = ask(address(&strict), &request).await;
            assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        }
        // Allowed by name, but at a loopback address.
        let named = Proxy::start(
            Arc::new(InstallPolicy::new(&[format!("localhost:{port}")], false).unwrap()),
            None,
            false,
        )
        .await
        .unwrap();
        let answer = ask(
            address(&named),
            &format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(
            strict.finish(),
            vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")]
        );
        assert_eq!(named.finish(), vec![format!("localhost:{port}")]);

        // An operator's exception: tunnelled, directly and through an upstream proxy.
        let allowed = Arc::new(InstallPolicy::new(&[format!("localhost:{port}")], true).unwrap());
        let upstream = Proxy::start(allowed.clone(), None, false).await.unwrap();
        let chained = Proxy::start(
            allowed,
            Upstream::from_env(|name| {
                (name == "HTTPS_PROXY").then(|| format!("http://{}", address(&upstream)))
            }),
            false,
        )
        .await
        .unwrap();
        for proxy in [&upstream, &chained] {
            let answer = ask(
                address(proxy),
                &format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n"),
            )
            .await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.ends_with("ping"), "{answer}");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(chained.finish().is_empty());
        assert!(upstream.finish().is_empty());
    }

    /// Runs `program args` as an install step in `dir` under `sandbox` with the default
    /// policy; returns the outcome and the build log.
    async fn install_step(
        sandbox: Sandbox,
        dir: &Path,
        program: &str,
        args: &[&str],
    ) -> (Result<(), InstallError>, String) {
        let log = BuildLog::create(&dir.join(format!("{program}.log"))).unwrap();
        let network = InstallNetwork::new(InstallPolicy::default(), Arc::new(sandbox));
        let outcome = network
            .run(
                Step::new(program, dir).args(args.iter().copied()),
                &[],
                &log,
                Instant::now() + Duration::from_secs(300),
                &CancellationToken::new(),
            )
            .await;
        (outcome, std::fs::read_to_string(log.path()).unwrap())
    }

    const MODES: [crate::sandbox::SandboxMode; 2] = [
        crate::sandbox::SandboxMode::None,
        crate::sandbox::SandboxMode::Auto,
    ];

    /// npm, confined or not, reaches the registry through the proxy.
    #[tokio::test]
    async fn npm_reaches_the_registry_through_the_proxy() {
        let dir = tempfile::tempdir().unwrap();
        for mode in MODES {
            let sandbox = Sandbox::for_mode(mode, dir.path());
            let view = ["view", "left-pad@1.3.0", "version", "--prefer-online"];
            let (outcome, log) = install_step(sandbox, dir.path(), "npm", &view).await;
            assert!(outcome.is_ok(), "{mode:?}: {outcome:?}\n{log}");
            assert!(log.lines().any(|l| l.trim() == "1.3.0"), "{log}");
        }
    }

    /// A step that asks for a refused target and would then wait forever ends at once, with the
    /// refusal as its outcome, confined or not.
    #[tokio::test]
    async fn a_refusal_ends_the_step_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let script = "const u = new URL(process.env.HTTP_PROXY); \
            require('http').get({host: u.hostname, port: u.port, path: 'http://10.0.0.1:8080/x.tgz', \
            headers: {host: '10.0.0.1:8080'}}, (r) => console.log('proxy answered', r.statusCode)); \
            setTimeout(() => {}, 600000);";
        for mode in MODES {
            let sandbox = Sandbox::for_mode(mode, dir.path());
            match install_step(sandbox, dir.path(), "node", &["-e", script]).await {
                (Err(InstallError::Refused(targets)), log) => {
                    assert_eq!(targets, ["10.0.0.1:8080"], "{log}")
                }
                (other, log) => panic!("{mode:?}: {other:?}\n{log}"),
            }
        }
    }

    /// Confined, a program that ignores the proxy settings reaches nothing: not the worker's
    /// loopback, where an internal service listens.
    #[tokio::test]
    async fn confined_a_program_that_ignores_the_proxy_reaches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::for_mode(crate::sandbox::SandboxMode::Auto, dir.path());
        if let Sandbox::None { reason } = &sandbox {
            assert!(!hivesync_core::testkit::services_required(), "{reason}");
            println!("skipped: {reason}");
            return;
        }
        let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = service.local_addr().unwrap().port();
        let script = format!(
            "require('net').connect({port}, '127.0.0.1')\
             .on('connect', () => {{ console.log('REACHED'); process.exit(0); }})\
             .on('error', (e) => {{ console.log('unreachable:', e.code); process.exit(3); }});"
        );
        let (outcome, log) = install_step(sandbox, dir.path(), "node", &["-e", &script]).await;
        assert!(
            matches!(outcome, Err(InstallError::Step(StepError::Failed(_)))),
            "{outcome:?}\n{log}"
        );
        assert!(log.contains("unreachable: ECONNREFUSED"), "{log}");
        service.set_nonblocking(true).unwrap();
        assert!(service.accept().is_err(), "the service was contacted");
    }
}
