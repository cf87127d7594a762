//! `Setup` writes a config and its list files into a fresh temp dir;
//! `Sinkhole` is the running `sinkhole serve` process (killed on drop).

use crate::common::dns::{self, Q, Reply};
use crate::common::{http, ports};
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_sinkhole");

/// How long a server may take to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);

fn q(s: &str) -> String {
    // JSON strings are valid YAML double-quoted scalars
    serde_json::to_string(s).unwrap()
}

#[derive(Clone, Debug)]
struct Category {
    name: String,
    action: Option<String>,
    reason: String,
    alternatives: Vec<String>,
    /// Links for some alternatives: (name, url).
    links: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
struct ListSpec {
    name: String,
    category: Option<String>,
    format: String,
    /// `path:`, or with `url` set, nothing.
    path: String,
    url: Option<String>,
    /// More keys of the list, as YAML lines (`refresh: 1s`).
    extra: Vec<String>,
}

/// A config plus list files in a temp dir. Defaults: cache 1000, timeout 500ms,
/// block nxdomain with TTL 60, redirect 10.0.0.1 / fd00::1, no lists.
pub struct Setup {
    dir: TempDir,
    pub upstreams: Vec<String>,
    pub timeout: String,
    pub cache_size: u64,
    /// `cache.serve_stale`, when set.
    pub serve_stale: Option<String>,
    pub block_action: String,
    pub block_ttl: u32,
    pub redirect_v4: String,
    pub redirect_v6: String,
    categories: Vec<Category>,
    lists: Vec<ListSpec>,
    allowlists: Vec<(String, String)>,
    /// Also listen on `[::1]`, same port.
    pub ipv6: bool,
    /// Bind the wildcard addresses (`0.0.0.0`, and `[::]` with `ipv6`)
    /// instead of loopback; clients still use 127.0.0.1.
    pub wildcard: bool,
    /// Extra environment for the server process (e.g. `RUST_LOG`).
    env: Vec<(String, String)>,
    /// Serve the block page over HTTP (on a free port: `Sinkhole::http`).
    pub blockpage_http: bool,
    /// Serve it over HTTPS with this PEM certificate chain and key.
    pub blockpage_tls: Option<(PathBuf, PathBuf)>,
    /// Top-level YAML appended as is (`blockpage:`, `log:`, `stats:`...).
    extra_yaml: String,
    /// Lines added under `listen:` (indented).
    extra_listen: String,
    /// A program (and its arguments) the server is started through, e.g.
    /// `prlimit --nofile=1024:1024 --`.
    launcher: Vec<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self::new()
    }
}

impl Setup {
    pub fn new() -> Self {
        Setup {
            dir: tempfile::Builder::new()
                .prefix("sinkhole-e2e-")
                .tempdir()
                .expect("tempdir"),
            upstreams: vec![],
            timeout: "500ms".into(),
            cache_size: 1000,
            serve_stale: None,
            block_action: "nxdomain".into(),
            block_ttl: 60,
            redirect_v4: "10.0.0.1".into(),
            redirect_v6: "fd00::1".into(),
            categories: vec![],
            lists: vec![],
            allowlists: vec![],
            ipv6: false,
            wildcard: false,
            env: vec![],
            blockpage_http: false,
            blockpage_tls: None,
            extra_yaml: String::new(),
            extra_listen: String::new(),
            launcher: vec![],
        }
    }

    /// Starts the server through `argv` (the server's own command follows).
    pub fn launched_by(mut self, argv: &[&str]) -> Self {
        self.launcher = argv.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Serves the block page over HTTP.
    pub fn with_blockpage(mut self) -> Self {
        self.blockpage_http = true;
        self
    }

    /// Serves the block page over HTTPS with these files too.
    pub fn with_blockpage_tls(mut self, cert: PathBuf, key: PathBuf) -> Self {
        self.blockpage_tls = Some((cert, key));
        self
    }

    /// Appends lines (indented two spaces) to the `listen:` section.
    pub fn yaml_listen(mut self, text: &str) -> Self {
        self.extra_listen.push_str(text);
        if !text.ends_with('\n') {
            self.extra_listen.push('\n');
        }
        self
    }

    /// Appends top-level YAML to the configuration.
    pub fn yaml(mut self, text: &str) -> Self {
        self.extra_yaml.push_str(text);
        if !text.ends_with('\n') {
            self.extra_yaml.push('\n');
        }
        self
    }

    /// A category whose alternatives are links: (name, url).
    pub fn category_with_links(
        mut self,
        name: &str,
        action: Option<&str>,
        reason: &str,
        links: &[(&str, &str)],
        plain: &[&str],
    ) -> Self {
        self.categories.push(Category {
            name: name.into(),
            action: action.map(Into::into),
            reason: reason.into(),
            alternatives: plain.iter().map(|s| s.to_string()).collect(),
            links: links
                .iter()
                .map(|(n, u)| (n.to_string(), u.to_string()))
                .collect(),
        });
        self
    }

    /// Listen on `0.0.0.0` (and `[::]` with [`Setup::with_ipv6`]) at the
    /// test's port, as a multi-homed server would.
    pub fn on_wildcard(mut self) -> Self {
        self.wildcard = true;
        self
    }

    /// Sets an environment variable for the server.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Also listen on `[::1]` (same port as 127.0.0.1).
    pub fn with_ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    pub fn upstream(mut self, addr: SocketAddr) -> Self {
        self.upstreams.push(addr.to_string());
        self
    }
    pub fn timeout(mut self, t: &str) -> Self {
        self.timeout = t.into();
        self
    }
    pub fn serve_stale(mut self, window: &str) -> Self {
        self.serve_stale = Some(window.into());
        self
    }
    pub fn cache_size(mut self, n: u64) -> Self {
        self.cache_size = n;
        self
    }
    pub fn block_action(mut self, action: &str) -> Self {
        self.block_action = action.into();
        self
    }
    pub fn block_ttl(mut self, ttl: u32) -> Self {
        self.block_ttl = ttl;
        self
    }
    /// A category with its own action (None = use `block.action`).
    pub fn category(
        mut self,
        name: &str,
        action: Option<&str>,
        reason: &str,
        alternatives: &[&str],
    ) -> Self {
        self.categories.push(Category {
            name: name.into(),
            action: action.map(Into::into),
            reason: reason.into(),
            alternatives: alternatives.iter().map(|s| s.to_string()).collect(),
            links: vec![],
        });
        self
    }
    /// One category per block action, the answers suite's standard set:
    /// `video` (redirect, with alternatives), `ads` (nxdomain), `tracking`
    /// (nodata) and `malware` (refused).
    pub fn category_per_action(self) -> Self {
        self.category(
            "video",
            Some("redirect"),
            "Zoom is not approved for NHS use (IG policy).",
            &["Microsoft Teams", "Attend Anywhere"],
        )
        .category("ads", Some("nxdomain"), "Advertising", &[])
        .category("tracking", Some("nodata"), "Tracking", &[])
        .category("malware", Some("refused"), "Malware", &[])
    }
    /// A blocklist in `domains` format, written to `lists/NAME.txt`.
    pub fn list(self, name: &str, category: Option<&str>, contents: &str) -> Self {
        self.list_fmt(name, category, "domains", contents)
    }
    pub fn list_fmt(
        mut self,
        name: &str,
        category: Option<&str>,
        format: &str,
        contents: &str,
    ) -> Self {
        let path = format!("lists/{name}.txt");
        self.write(&path, contents);
        self.lists.push(ListSpec {
            name: name.into(),
            category: category.map(Into::into),
            format: format.into(),
            path,
            url: None,
            extra: vec![],
        });
        self
    }

    /// A local list with more keys (`signature: minisign`, ...).
    pub fn list_with(
        mut self,
        name: &str,
        category: Option<&str>,
        format: &str,
        contents: &str,
        extra: &[&str],
    ) -> Self {
        self = self.list_fmt(name, category, format, contents);
        if let Some(l) = self.lists.last_mut() {
            l.extra = extra.iter().map(|s| s.to_string()).collect();
        }
        self
    }

    /// A blocklist downloaded from `url`, with more keys (`refresh: 1s`).
    pub fn remote_list(
        mut self,
        name: &str,
        category: Option<&str>,
        url: &str,
        extra: &[&str],
    ) -> Self {
        self.lists.push(ListSpec {
            name: name.into(),
            category: category.map(Into::into),
            format: "auto".into(),
            path: String::new(),
            url: Some(url.into()),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        });
        self
    }
    /// An allowlist in `domains` format, written to `lists/NAME.txt`.
    pub fn allowlist(mut self, name: &str, contents: &str) -> Self {
        let path = format!("lists/{name}.txt");
        self.write(&path, contents);
        self.allowlists.push((name.into(), path));
        self
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("sinkhole.yaml")
    }
    /// Path of the file of list `name` (as written by `list`/`allowlist`).
    pub fn list_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("lists/{name}.txt"))
    }
    /// Writes any file relative to the config dir.
    pub fn write(&self, rel: &str, contents: &str) {
        let p = self.dir.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    /// The YAML config for these listen addresses.
    pub fn render(&self, dns: SocketAddr, admin: SocketAddr) -> String {
        self.render_with(dns, admin, None, None)
    }

    /// The YAML config, with the block page's addresses when it has any.
    pub fn render_with(
        &self,
        dns: SocketAddr,
        admin: SocketAddr,
        http: Option<SocketAddr>,
        https: Option<SocketAddr>,
    ) -> String {
        let mut y = String::new();
        let (v4, v6) = if self.wildcard {
            ("0.0.0.0".to_string(), "[::]")
        } else {
            (dns.ip().to_string(), "[::1]")
        };
        let mut listen = vec![q(&format!("{v4}:{}", dns.port()))];
        if self.ipv6 {
            listen.push(q(&format!("{v6}:{}", dns.port())));
        }
        y += &format!(
            "listen:\n  dns: [{}]\n  admin: {}\n",
            listen.join(", "),
            q(&admin.to_string())
        );
        if let Some(h) = http {
            y += &format!("  http: {}\n", q(&h.to_string()));
        }
        if let Some(h) = https {
            y += &format!("  https: {}\n", q(&h.to_string()));
        }
        y += &self.extra_listen;
        let ups = if self.upstreams.is_empty() {
            // nothing listens here: tests without an upstream must not forward
            vec![ports::free_addr().to_string()]
        } else {
            self.upstreams.clone()
        };
        let ups: Vec<String> = ups.iter().map(|u| q(u)).collect();
        y += &format!(
            "upstream:\n  servers: [{}]\n  timeout: {}\n",
            ups.join(", "),
            q(&self.timeout)
        );
        y += &format!("cache:\n  size: {}\n", self.cache_size);
        if let Some(w) = &self.serve_stale {
            y += &format!("  serve_stale: {w}\n");
        }
        y += &format!(
            "block:\n  action: {}\n  ttl: {}\n  redirect:\n    ipv4: {}\n    ipv6: {}\n",
            self.block_action,
            self.block_ttl,
            q(&self.redirect_v4),
            q(&self.redirect_v6)
        );
        if !self.categories.is_empty() {
            y += "categories:\n";
            for c in &self.categories {
                y += &format!("  {}:\n", q(&c.name));
                if let Some(a) = &c.action {
                    y += &format!("    action: {a}\n");
                }
                y += &format!("    reason: {}\n", q(&c.reason));
                let mut alts: Vec<String> = c
                    .links
                    .iter()
                    .map(|(n, u)| format!("{{name: {}, url: {}}}", q(n), q(u)))
                    .collect();
                alts.extend(c.alternatives.iter().map(|a| q(a)));
                y += &format!("    alternatives: [{}]\n", alts.join(", "));
            }
        }
        if !self.lists.is_empty() {
            y += "lists:\n";
            for l in &self.lists {
                y += &format!("  - name: {}\n", q(&l.name));
                if let Some(c) = &l.category {
                    y += &format!("    category: {}\n", q(c));
                }
                match &l.url {
                    Some(u) => y += &format!("    url: {}\n", q(u)),
                    None => y += &format!("    path: {}\n", q(&l.path)),
                }
                y += &format!("    format: {}\n", l.format);
                for e in &l.extra {
                    y += &format!("    {e}\n");
                }
            }
        }
        if !self.allowlists.is_empty() {
            y += "allowlists:\n";
            for (name, path) in &self.allowlists {
                y += &format!("  - name: {}\n    path: {}\n", q(name), q(path));
            }
        }
        let mut extra = self.extra_yaml.clone();
        if let Some((cert, key)) = &self.blockpage_tls {
            // Merged into a `blockpage:` section of the extra YAML, if any.
            let tls = format!(
                "  tls_cert: {}\n  tls_key: {}\n",
                q(&cert.display().to_string()),
                q(&key.display().to_string())
            );
            extra = match extra.find("blockpage:\n") {
                Some(i) => {
                    let at = i + "blockpage:\n".len();
                    format!("{}{tls}{}", &extra[..at], &extra[at..])
                }
                None => format!("{extra}blockpage:\n{tls}"),
            };
        }
        y += &extra;
        y
    }

    /// Writes `sinkhole.yaml` (listen ports unused) for offline commands; returns its path.
    pub fn write_config(&self) -> PathBuf {
        let text = self.render(ports::free_addr(), ports::free_addr());
        fs::write(self.config_path(), text).unwrap();
        self.config_path()
    }

    /// Starts `sinkhole serve` and waits until `/readyz` says 200.
    pub fn serve(self) -> Sinkhole {
        Sinkhole::start(self, "/readyz")
    }

    /// Starts `sinkhole serve` and waits only for `/healthz` (a server
    /// that answers DNS but is not ready: a remote list never fetched).
    pub fn serve_unready(self) -> Sinkhole {
        Sinkhole::start(self, "/healthz")
    }
}

/// A running `sinkhole serve`. Killed (and reaped) on drop; its output is
/// printed to stderr if the test is panicking.
pub struct Sinkhole {
    child: Child,
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    /// The block page over HTTP, when served.
    pub http: Option<SocketAddr>,
    /// The block page over HTTPS, when served.
    pub https: Option<SocketAddr>,
    pub setup: Setup,
    stdout: PathBuf,
    stderr: PathBuf,
    exited: Option<ExitStatus>,
}

impl Sinkhole {
    fn start(setup: Setup, probe: &str) -> Sinkhole {
        let mut failures = String::new();
        for attempt in 0..3 {
            let dns = ports::free_addr();
            let admin = ports::free_addr();
            let http = setup.blockpage_http.then(ports::free_addr);
            let https = setup.blockpage_tls.as_ref().map(|_| ports::free_addr());
            fs::write(
                setup.config_path(),
                setup.render_with(dns, admin, http, https),
            )
            .unwrap();
            let stdout = setup.dir().join(format!("serve-{attempt}.stdout"));
            let stderr = setup.dir().join(format!("serve-{attempt}.stderr"));
            let mut command = match setup.launcher.split_first() {
                Some((program, args)) => {
                    let mut c = Command::new(program);
                    c.args(args).arg(BIN);
                    c
                }
                None => Command::new(BIN),
            };
            let mut child = command
                .arg("serve")
                .arg("-c")
                .arg(setup.config_path())
                .envs(setup.env.iter().map(|(k, v)| (k, v)))
                .current_dir(setup.dir())
                .stdin(Stdio::null())
                .stdout(File::create(&stdout).unwrap())
                .stderr(File::create(&stderr).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
            match wait_ready(&mut child, admin, probe) {
                Ok(()) => {
                    return Sinkhole {
                        child,
                        dns,
                        admin,
                        http,
                        https,
                        setup,
                        stdout,
                        stderr,
                        exited: None,
                    };
                }
                Err((why, exited_early)) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let logs = read_logs(&stdout, &stderr);
                    // only a port taken meanwhile (by another test) is worth a retry
                    let port_taken = logs.to_lowercase().contains("in use");
                    failures += &format!("attempt {attempt}: {why}\n{logs}\n");
                    if !(exited_early && port_taken) {
                        break;
                    }
                }
            }
        }
        panic!("sinkhole serve did not become ready:\n{failures}");
    }

    fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    pub fn dir(&self) -> &Path {
        self.setup.dir()
    }

    /// Stops the server (if it still runs) and hands back its setup, with
    /// its directory, to start it again.
    pub fn into_setup(mut self) -> Setup {
        self.kill();
        std::mem::take(&mut self.setup)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// stdout and stderr of the server so far.
    pub fn logs(&self) -> String {
        read_logs(&self.stdout, &self.stderr)
    }

    /// Sends `q` over UDP to the server.
    pub fn udp(&self, q: &Q) -> Reply {
        q.udp(self.dns)
    }
    /// Sends `q` over TCP to the server.
    pub fn tcp(&self, q: &Q) -> Reply {
        q.tcp(self.dns)
    }
    pub fn udp_raw(&self, bytes: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        dns::udp_raw(self.dns, bytes, timeout)
    }

    pub fn get(&self, path: &str) -> http::Response {
        http::get(self.admin, path)
    }
    pub fn post(&self, path: &str) -> http::Response {
        http::post(self.admin, path, "")
    }
    /// The `/metrics` text (asserting 200).
    pub fn metrics(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "/metrics status; body: {}", r.body);
        r.body
    }
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        http::metric(&self.metrics(), name, labels)
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.exited = Some(s);
                return Some(s);
            }
            if start.elapsed() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sinkhole {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

fn read_logs(stdout: &Path, stderr: &Path) -> String {
    let out = fs::read_to_string(stdout).unwrap_or_default();
    let err = fs::read_to_string(stderr).unwrap_or_default();
    format!("--- sinkhole stdout ---\n{out}\n--- sinkhole stderr ---\n{err}")
}

/// Polls `probe` (`/readyz`) until 200. Err((why, exited_early)).
fn wait_ready(child: &mut Child, admin: SocketAddr, probe: &str) -> Result<(), (String, bool)> {
    let start = Instant::now();
    let exited = |child: &mut Child| -> Option<String> {
        child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| format!("sinkhole serve exited early with {s}"))
    };
    loop {
        if let Some(why) = exited(child) {
            return Err((why, true));
        }
        if let Ok(r) = http::try_get(admin, probe)
            && r.status == 200
        {
            // make sure the 200 came from our process, not another one on that port
            if let Some(why) = exited(child) {
                return Err((why, true));
            }
            return Ok(());
        }
        if start.elapsed() > READY_DEADLINE {
            return Err((format!("{probe} not 200 within {READY_DEADLINE:?}"), false));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
