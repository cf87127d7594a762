//! Configuration: the YAML schema, and its validation into runtime types.
//!
//! Everything an operator can get wrong is caught here, once, with the file,
//! line and column: unknown keys, bad addresses and durations, a category a
//! list names but nobody defines, a list file that is missing. Value errors
//! are raised inside the deserializer (so `serde_yaml_ng` attaches the
//! position); cross-field errors are located by finding the offending value
//! in the text.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::dns::access::{Access, DEFAULT_ALLOW, MAX_NETS, Net, Refusal};
use crate::dns::ratelimit::{OverLimit, RateSettings};
use crate::lists::{Format, FormatChoice};
use crate::policy::{Action, Alternative, Category, DomainName};

/// The configuration `serve` runs when there is no `./sinkhole.yaml`: the
/// repository's own file, with paths relative to the working directory.
pub const BUILTIN: &str = include_str!("../sinkhole.yaml");

/// A configuration problem, located in its file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `FILE:LINE:COL: message`, or `FILE: message` for a problem with the
    /// whole file (it cannot be read at all).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.file.display(), self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// UDP and TCP on each.
    pub dns: Vec<SocketAddr>,
    /// The block page over plain HTTP.
    pub http: Option<SocketAddr>,
    /// The block page over TLS (with `blockpage.tls_cert` and `tls_key`).
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// `listen.admin_token_file`'s token: `POST /reload` needs it.
    pub admin_token: Option<AdminToken>,
}

/// A bearer token for the admin API's writes. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Whether `offered` is the token, compared in constant time (a
    /// mismatch at the first byte takes as long as one at the last).
    pub fn matches(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// What the block page says besides the category's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPage {
    /// Shown in the page title ("NHS Example Trust").
    pub organisation: Option<String>,
    /// Whom to ask ("Information Governance, ig@example.nhs.uk, ext. 1234").
    pub contact: Option<String>,
    /// PEM certificate chain and key for `listen.https`.
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Which queries get an audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogQueries {
    Blocked,
    All,
    None,
}

impl LogQueries {
    const NAMES: [(&'static str, LogQueries); 3] = [
        ("blocked", LogQueries::Blocked),
        ("all", LogQueries::All),
        ("none", LogQueries::None),
    ];
}

/// How a client's address is shown in logs and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientShow {
    /// The address as it is.
    Full,
    /// Its /24 (IPv4) or /56 (IPv6).
    Subnet,
    /// A keyed hash: the same client and key give the same hex string.
    Hashed { key: String },
    /// Not at all.
    None,
}

/// Bounds on what traffic can hold (`limits:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Queries waiting on upstreams at once; past it, SERVFAIL at once.
    pub upstream_inflight: usize,
    /// Open client TCP connections; past it, new ones are closed.
    pub tcp_connections: usize,
    /// RFC 7766 idle timeout (a fifth of it once half the connections
    /// are taken).
    pub tcp_idle: Duration,
    /// Per-client token buckets; `None` with `client_qps: 0` (off).
    pub rate: Option<RateSettings>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            upstream_inflight: 10_000,
            tcp_connections: 1_000,
            tcp_idle: Duration::from_secs(10),
            rate: None,
        }
    }
}

/// Who may query the DNS listeners (`access:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessSettings {
    pub allow: Vec<Net>,
    pub refused: Refusal,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            allow: DEFAULT_ALLOW
                .iter()
                .filter_map(|n| Net::parse(n).ok())
                .collect(),
            refused: Refusal::Refuse,
        }
    }
}

impl AccessSettings {
    /// The runtime stage.
    pub fn stage(&self) -> Access {
        Access::new(&self.allow, self.refused)
    }
}

/// The audit log and the reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub queries: LogQueries,
    pub client: ClientShow,
}

/// `/stats`: the span it counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSettings {
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// In failover order.
    pub servers: Vec<SocketAddr>,
    /// Per attempt.
    pub timeout: Duration,
}

/// How blocked names are answered, beyond the per-category action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSettings {
    /// TTL of synthesised answers, and their SOA's MINIMUM.
    pub ttl: u32,
    pub redirect_v4: Option<Ipv4Addr>,
    pub redirect_v6: Option<Ipv6Addr>,
}

/// Where one list comes from and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSource {
    pub name: String,
    /// The file that is read: the list itself (resolved against the config
    /// file's directory), or for a `url:` list its last good copy in
    /// `state_dir`.
    pub path: PathBuf,
    /// `None` for allowlists.
    pub category: Option<String>,
    pub format: FormatChoice,
    /// Set for `url:` lists.
    pub remote: Option<Remote>,
    /// The minisign public key (its base64 line) the list's detached
    /// signature must verify against (`signature: minisign`).
    pub public_key: Option<String>,
}

impl ListSource {
    /// Where the list's detached signature lives beside its file.
    pub fn signature_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".minisig");
        PathBuf::from(p)
    }
}

/// A list downloaded from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// `https://…`, or `http://…` when the configuration says so.
    pub url: String,
    /// How often it is fetched again (a conditional request).
    pub refresh: Duration,
}

impl Remote {
    /// Where the detached signature is published beside the list.
    pub fn signature_url(&self) -> String {
        format!("{}.minisig", self.url)
    }
}

/// The guard rails every list passes before it is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// A list that would lose more than this percentage of its rules
    /// against the version in service is kept at that version.
    pub max_shrink_percent: u8,
    /// Names no block rule may reach.
    pub protected: Vec<DomainName>,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            max_shrink_percent: 50,
            protected: ["nhs.uk", "nhs.net"]
                .iter()
                .filter_map(|n| DomainName::parse(n).ok())
                .collect(),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: Listen,
    pub upstream: Upstream,
    /// Entries; 0 disables caching.
    pub cache_size: usize,
    /// RFC 8767: how long past expiry an answer may still be served when
    /// no upstream answers; zero disables it.
    pub serve_stale: Duration,
    pub block: BlockSettings,
    /// Defined categories plus one implicit category per list that names
    /// none (named after the list, with the default action).
    pub categories: Vec<Category>,
    /// Blocklists first, then allowlists, in file order.
    pub lists: Vec<ListSource>,
    pub blockpage: BlockPage,
    pub log: LogSettings,
    pub stats: StatsSettings,
    /// The last good copy of every remote list.
    pub state_dir: PathBuf,
    /// Extra trusted roots (PEM) for `https://` list servers.
    pub tls_ca: Option<PathBuf>,
    pub guard: Guard,
    pub access: AccessSettings,
    pub limits: Limits,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let whole = |message: String| ConfigError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            message,
        };
        let bytes =
            crate::lists::source::read_regular_file(path, MAX_CONFIG_BYTES).map_err(|e| {
                whole(match e {
                    crate::lists::source::Unreadable::Io(why) => {
                        format!("cannot read the configuration: {why}")
                    }
                    other => format!("the configuration {other}"),
                })
            })?;
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let bytes = e.as_bytes();
                let at = e.utf8_error().valid_up_to();
                let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
                let column = at
                    - bytes[..at]
                        .iter()
                        .rposition(|b| *b == b'\n')
                        .map_or(0, |p| p + 1)
                    + 1;
                return Err(ConfigError {
                    file: path.to_owned(),
                    line,
                    column,
                    message: format!(
                        "not UTF-8 text (byte 0x{:02x}); save the file as UTF-8",
                        bytes.get(at).copied().unwrap_or(0)
                    ),
                });
            }
        };
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, base)
    }

    /// Validates configuration text. `file` is used in messages, `base`
    /// resolves relative paths.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Self, ConfigError> {
        // Editors on Windows save a byte-order mark; it is not content.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| {
                let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
                ConfigError {
                    file: file.to_owned(),
                    line,
                    column,
                    message: plain_message(&strip_position(&e.to_string()), text, line, column),
                }
            })?
        };
        Validator { text, file, base }.validate(raw)
    }
}

/// The configuration is read whole; nobody's is this big.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// A YAML or serde message in an operator's words: a tab is called a tab,
/// and Rust's type names (`u32`, `usize`) become what the key wants.
fn plain_message(message: &str, text: &str, line: usize, column: usize) -> String {
    let at = text
        .lines()
        .nth(line.saturating_sub(1))
        .and_then(|l| l.chars().nth(column.saturating_sub(1)));
    if at == Some('\t')
        || (message.contains("cannot start any token")
            && text
                .lines()
                .nth(line.saturating_sub(1))
                .is_some_and(|l| l.contains('\t')))
    {
        return "a tab character: YAML indents with spaces only; replace the tab with spaces"
            .into();
    }
    const TYPES: [(&str, &str); 10] = [
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ];
    let mut m = message.to_owned();
    for (rust, plain) in TYPES {
        if let Some(i) = m.find(rust)
            && !m[i + rust.len()..].starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            m.replace_range(i..i + rust.len(), plain);
        }
    }
    m
}

/// serde_yaml_ng appends " at line L column C"; we print the position first.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

struct Validator<'a> {
    text: &'a str,
    file: &'a Path,
    base: &'a Path,
}

impl Validator<'_> {
    /// An error about `value`, placed where `key: value` first appears.
    fn error_at(&self, key: &str, value: &str, message: String) -> ConfigError {
        let (line, column) = locate(self.text, key, value).unwrap_or((1, 1));
        ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            message,
        }
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let default_action = raw.block.action.unwrap_or(Action::Nxdomain);
        let state_dir = self.base.join(raw.state_dir.as_deref().unwrap_or("state"));
        let tls_ca = match &raw.tls_ca {
            None => None,
            Some(ca) => {
                let path = self.base.join(ca);
                if !path.is_file() {
                    return Err(self.error_at(
                        "tls_ca",
                        ca,
                        format!(
                            "tls_ca: file {} does not exist or is not a regular file",
                            path.display()
                        ),
                    ));
                }
                Some(path)
            }
        };
        let guard = Guard {
            max_shrink_percent: raw.guard.max_shrink.map_or(50, |p| p.0),
            protected: match raw.guard.protected {
                None => Guard::default().protected,
                Some(names) => {
                    let mut out = Vec::with_capacity(names.len());
                    for n in names {
                        out.push(DomainName::parse(&n).map_err(|e| {
                            self.error_at(
                                "protected",
                                &n,
                                format!("guard.protected: {n:?} is not a domain name: {e}"),
                            )
                        })?);
                    }
                    out
                }
            },
        };

        let defaults = Limits::default();
        let limits = Limits {
            upstream_inflight: raw
                .limits
                .upstream_inflight
                .unwrap_or(defaults.upstream_inflight),
            tcp_connections: raw
                .limits
                .tcp_connections
                .unwrap_or(defaults.tcp_connections),
            tcp_idle: raw.limits.tcp_idle.map_or(defaults.tcp_idle, |d| d.0),
            rate: match raw.limits.client_qps.unwrap_or(0) {
                0 => None,
                qps => {
                    // 0, like leaving it out, is the default (SPEC): a
                    // bucket that held nothing would refuse every query.
                    let burst = match raw.limits.client_burst.unwrap_or(0) {
                        0 => qps.saturating_mul(2),
                        b => b,
                    };
                    let v4 = raw.limits.ipv4_prefix.unwrap_or(32);
                    let v6 = raw.limits.ipv6_prefix.unwrap_or(56);
                    if v4 > 32 {
                        return Err(self.error_at(
                            "ipv4_prefix",
                            &v4.to_string(),
                            format!(
                                "limits.ipv4_prefix: {v4} is longer than an IPv4 address (0 to 32)"
                            ),
                        ));
                    }
                    if v6 > 128 {
                        return Err(self.error_at(
                            "ipv6_prefix",
                            &v6.to_string(),
                            format!(
                                "limits.ipv6_prefix: {v6} is longer than an IPv6 address (0 to 128)"
                            ),
                        ));
                    }
                    Some(RateSettings {
                        qps,
                        burst,
                        ipv4_prefix: v4,
                        ipv6_prefix: v6,
                        over_limit: raw.limits.over_limit.unwrap_or_default(),
                    })
                }
            },
        };
        for (key, value) in [
            ("upstream_inflight", limits.upstream_inflight),
            ("tcp_connections", limits.tcp_connections),
        ] {
            if value == 0 {
                return Err(self.error_at(
                    key,
                    "0",
                    format!("limits.{key}: 0 would refuse every query; give a positive number"),
                ));
            }
        }
        let access = AccessSettings {
            allow: match raw.access.allow {
                None => AccessSettings::default().allow,
                Some(nets) => {
                    if nets.len() > MAX_NETS {
                        return Err(self.error_at(
                            "allow",
                            "",
                            format!(
                                "access.allow: {} networks; at most {MAX_NETS} (a prefix that covers several is both shorter and faster)",
                                nets.len()
                            ),
                        ));
                    }
                    let mut out = Vec::with_capacity(nets.len());
                    for n in nets {
                        out.push(Net::parse(&n).map_err(|e| {
                            self.error_at("allow", &n, format!("access.allow: {n:?}: {e}"))
                        })?);
                    }
                    out
                }
            },
            refused: raw.access.refused.unwrap_or_default(),
        };

        // Our own DNS listeners: an upstream that is one of them would send
        // every query back to us (a forwarding loop).
        let own: Vec<SocketAddr> = raw
            .listen
            .as_ref()
            .and_then(|l| l.dns.as_ref())
            .map_or_else(
                || vec![SocketAddr::from(([127, 0, 0, 1], 5353))],
                |v| v.iter().map(|a| a.0).collect(),
            );
        let host = HostAddresses::default();
        let mut servers = Vec::new();
        for s in &raw.upstream.servers {
            match s {
                UpstreamSpec::Addr(a) => {
                    if let Some(l) = own.iter().find(|l| host.is_listener(**l, *a)) {
                        return Err(self.error_at(
                            "servers",
                            &a.ip().to_string(),
                            format!(
                                "upstream {a} is this server's own listener (listen.dns {l}): every query would loop back to sinkhole; name the trust's resolvers instead"
                            ),
                        ));
                    }
                    servers.push(*a);
                }
                UpstreamSpec::System => {
                    let found = system_nameservers().map_err(|why| {
                        self.error_at("servers", "system", format!("upstream \"system\": {why}"))
                    })?;
                    for a in &found {
                        if let Some(l) = own.iter().find(|l| host.is_listener(**l, *a)) {
                            return Err(self.error_at(
                                "servers",
                                "system",
                                format!(
                                    "upstream \"system\": /etc/resolv.conf names {a}, this server's own listener (listen.dns {l}): every query would loop back to sinkhole; name the trust's resolvers instead of \"system\", or point the host's resolv.conf elsewhere"
                                ),
                            ));
                        }
                    }
                    servers.extend(found);
                }
            }
        }
        if servers.is_empty() {
            return Err(self.error_at(
                "servers",
                "",
                "upstream.servers is empty: name at least one \"IP:PORT\" or \"system\"".into(),
            ));
        }

        let mut categories: Vec<Category> = raw
            .categories
            .into_iter()
            .map(|(name, c)| Category {
                name,
                action: c.action.unwrap_or(default_action),
                reason: c.reason,
                alternatives: c.alternatives.into_iter().map(|a| a.0).collect(),
            })
            .collect();

        let mut lists = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let all = raw
            .lists
            .iter()
            .map(|l| (l, true))
            .chain(raw.allowlists.iter().map(|l| (l, false)));
        for (l, is_block) in all {
            if names.contains(&l.name.as_str()) {
                return Err(self.error_at(
                    "name",
                    &l.name,
                    format!("list name {:?} is used twice; names must be unique", l.name),
                ));
            }
            names.push(&l.name);
            let (path, remote) = match (&l.path, &l.url) {
                (Some(p), None) => {
                    let path = self.base.join(p);
                    if !path.is_file() {
                        return Err(self.error_at(
                            "path",
                            p,
                            format!(
                                "list {:?}: file {} does not exist or is not a regular file",
                                l.name,
                                path.display()
                            ),
                        ));
                    }
                    if let Some(r) = &l.refresh {
                        return Err(self.error_at(
                            "refresh",
                            &r.1,
                            format!("list {:?}: refresh is for url: lists; a path: list is reloaded as soon as its file changes", l.name),
                        ));
                    }
                    (path, None)
                }
                (None, Some(u)) => {
                    let url = check_list_url(u).map_err(|why| {
                        self.error_at("url", u, format!("list {:?}: {why}", l.name))
                    })?;
                    let refresh = l
                        .refresh
                        .as_ref()
                        .map_or(Duration::from_secs(3600), |r| r.0);
                    (
                        state_dir.join(state_file_name(&l.name)),
                        Some(Remote { url, refresh }),
                    )
                }
                (Some(_), Some(_)) => {
                    return Err(self.error_at(
                        "name",
                        &l.name,
                        format!("list {:?} has both path and url; give one", l.name),
                    ));
                }
                (None, None) => {
                    return Err(self.error_at(
                        "name",
                        &l.name,
                        format!("list {:?} needs a path: or a url:", l.name),
                    ));
                }
            };
            let public_key = match (&l.signature, &l.public_key) {
                (None, None) => None,
                (Some(_), Some(key)) => Some(check_public_key(key).map_err(|why| {
                    self.error_at("public_key", key, format!("list {:?}: {why}", l.name))
                })?),
                (Some(_), None) => {
                    return Err(self.error_at(
                        "signature",
                        "minisign",
                        format!("list {:?}: signature: minisign needs public_key, the minisign public key the list is signed for (the RW… line of its .pub file)", l.name),
                    ));
                }
                (None, Some(key)) => {
                    return Err(self.error_at(
                        "public_key",
                        key,
                        format!("list {:?}: public_key is set but signature is not; add signature: minisign", l.name),
                    ));
                }
            };
            let format = match l.format {
                FormatSpec::Auto => FormatChoice::Auto,
                FormatSpec::Fixed(f) => FormatChoice::Fixed(f),
            };
            let category = if !is_block {
                if let Some(c) = &l.category {
                    return Err(self.error_at(
                        "category",
                        c,
                        format!("allowlist {:?} cannot have a category", l.name),
                    ));
                }
                None
            } else {
                let wanted = l.category.clone().unwrap_or_else(|| l.name.clone());
                if !categories.iter().any(|c| c.name == wanted) {
                    if l.category.is_some() {
                        let defined: Vec<&str> =
                            categories.iter().map(|c| c.name.as_str()).collect();
                        return Err(self.error_at(
                            "category",
                            &wanted,
                            format!(
                                "list {:?} names category {wanted:?}, which is not defined under categories: (defined: {})",
                                l.name,
                                if defined.is_empty() { "none".to_string() } else { defined.join(", ") }
                            ),
                        ));
                    }
                    categories.push(Category {
                        name: wanted.clone(),
                        action: default_action,
                        reason: None,
                        alternatives: Vec::new(),
                    });
                }
                Some(wanted)
            };
            lists.push(ListSource {
                name: l.name.clone(),
                path,
                category,
                format,
                remote,
                public_key,
            });
        }

        let block = BlockSettings {
            ttl: raw.block.ttl.unwrap_or(60),
            redirect_v4: raw.block.redirect.as_ref().and_then(|r| r.ipv4),
            redirect_v6: raw.block.redirect.as_ref().and_then(|r| r.ipv6),
        };
        let redirects = default_action == Action::Redirect
            || categories.iter().any(|c| c.action == Action::Redirect);
        if redirects && block.redirect_v4.is_none() && block.redirect_v6.is_none() {
            return Err(self.error_at(
                "action",
                "redirect",
                "action redirect is used, but block.redirect has no ipv4 or ipv6 address".into(),
            ));
        }

        let listen = raw.listen.unwrap_or_else(RawListen::builtin);
        let tls = match (&raw.blockpage.tls_cert, &raw.blockpage.tls_key) {
            (Some(cert), Some(key)) => {
                let cert_path = self.base.join(cert);
                let key_path = self.base.join(key);
                for (k, shown, path) in
                    [("tls_cert", cert, &cert_path), ("tls_key", key, &key_path)]
                {
                    if !path.is_file() {
                        return Err(self.error_at(
                            k,
                            shown,
                            format!(
                                "blockpage.{k}: file {} does not exist or is not a file",
                                path.display()
                            ),
                        ));
                    }
                }
                Some(TlsFiles {
                    cert: cert_path,
                    key: key_path,
                })
            }
            (None, None) => None,
            (Some(c), None) => {
                return Err(self.error_at(
                    "tls_cert",
                    c,
                    "blockpage.tls_cert is set but blockpage.tls_key is not; give both".into(),
                ));
            }
            (None, Some(k)) => {
                return Err(self.error_at(
                    "tls_key",
                    k,
                    "blockpage.tls_key is set but blockpage.tls_cert is not; give both".into(),
                ));
            }
        };
        if let Some(https) = &listen.https
            && tls.is_none()
        {
            return Err(self.error_at(
                "https",
                &https.0.to_string(),
                "listen.https needs blockpage.tls_cert and blockpage.tls_key (a PEM certificate chain and its key)".into(),
            ));
        }
        let client = match (
            raw.log.client.unwrap_or(ClientSpec::Full),
            raw.log.client_hash_key,
        ) {
            (ClientSpec::Hashed, Some(key)) if !key.trim().is_empty() => ClientShow::Hashed { key },
            (ClientSpec::Hashed, _) => {
                return Err(self.error_at(
                    "client",
                    "hashed",
                    "log.client: hashed needs log.client_hash_key, a secret of your choosing (keep it out of version control)".into(),
                ));
            }
            (ClientSpec::Full, _) => ClientShow::Full,
            (ClientSpec::Subnet, _) => ClientShow::Subnet,
            (ClientSpec::None, _) => ClientShow::None,
        };
        let admin_token = match &listen.admin_token_file {
            None => None,
            Some(file) => {
                let path = self.base.join(file);
                let at = |why: String| {
                    self.error_at(
                        "admin_token_file",
                        file,
                        format!("listen.admin_token_file: {}: {why}", path.display()),
                    )
                };
                let bytes = crate::lists::source::read_regular_file(&path, 4096)
                    .map_err(|e| at(e.to_string()))?;
                let text = String::from_utf8(bytes).map_err(|_| at("is not UTF-8 text".into()))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(at("is empty; put the token in it".into()));
                }
                if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(at(
                        "holds spaces or control characters inside the token; it must be one word"
                            .into(),
                    ));
                }
                Some(AdminToken(token.to_owned()))
            }
        };
        Ok(Config {
            listen: Listen {
                dns: listen
                    .dns
                    .map(|v| v.into_iter().map(|a| a.0).collect())
                    .unwrap_or_else(|| vec![SocketAddr::from(([127, 0, 0, 1], 5353))]),
                http: listen.http.map(|a| a.0),
                https: listen.https.map(|a| a.0),
                admin: listen.admin.map(|a| a.0),
                admin_token,
            },
            blockpage: BlockPage {
                organisation: raw.blockpage.organisation,
                contact: raw.blockpage.contact,
                tls,
            },
            log: LogSettings {
                queries: raw.log.queries.unwrap_or(LogQueries::Blocked),
                client,
            },
            stats: StatsSettings {
                window: raw.stats.window.map_or(Duration::from_secs(3600), |d| d.0),
            },
            upstream: Upstream {
                servers,
                timeout: raw.upstream.timeout.map_or(Duration::from_secs(2), |d| d.0),
            },
            cache_size: raw.cache.size.unwrap_or(100_000),
            serve_stale: raw
                .cache
                .serve_stale
                .map_or(Duration::from_secs(86_400), |d| d.0),
            block,
            categories,
            lists,
            state_dir,
            tls_ca,
            guard,
            access,
            limits,
        })
    }
}

/// Finds `key: value` (value possibly quoted) in the text; returns the
/// 1-based line and column of the value.
fn locate(text: &str, key: &str, value: &str) -> Option<(usize, usize)> {
    for (i, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(k) = line[from..].find(key) {
            let k = from + k;
            from = k + key.len();
            let boundary = k == 0
                || !line.as_bytes()[k - 1].is_ascii_alphanumeric()
                    && line.as_bytes()[k - 1] != b'_';
            let rest = &line[from..];
            let Some(after_colon) = rest.strip_prefix(':') else {
                continue;
            };
            if !boundary {
                continue;
            }
            let trimmed = after_colon.trim_start();
            let col = line.len() - trimmed.len() + 1;
            let bare = trimmed.trim_start_matches(['"', '\'', '[']);
            if value.is_empty() || bare.starts_with(value) || trimmed.contains(value) {
                return Some((i + 1, col));
            }
        }
    }
    None
}

/// This host's addresses, read once (lazily) for the loop check.
#[derive(Default)]
struct HostAddresses(std::cell::OnceCell<Vec<IpAddr>>);

impl HostAddresses {
    /// Whether a query sent to `upstream` reaches `listener`: the same
    /// address and port, or the listener's wildcard address and port in
    /// the same family with `upstream` on this host (loopback or one of
    /// its interfaces).
    fn is_listener(&self, listener: SocketAddr, upstream: SocketAddr) -> bool {
        if listener.port() != upstream.port() {
            return false;
        }
        let (l, u) = (listener.ip(), upstream.ip().to_canonical());
        if l == u {
            return true;
        }
        l.is_unspecified()
            && l.is_ipv4() == u.is_ipv4()
            && (u.is_loopback() || u.is_unspecified() || self.all().contains(&u))
    }

    fn all(&self) -> &[IpAddr] {
        self.0.get_or_init(interface_addresses)
    }
}

/// The addresses of this host's interfaces (`getifaddrs`); none if it fails.
fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we walk read-only and
    // free with freeifaddrs; each sockaddr is read as the family it says.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut p = head;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

/// Nameservers from `/etc/resolv.conf`, port 53.
fn system_nameservers() -> Result<Vec<SocketAddr>, String> {
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("cannot read /etc/resolv.conf: {e}"))?;
    let servers: Vec<SocketAddr> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some("nameserver"))
                .then(|| parts.next())
                .flatten()
                // Strip an IPv6 zone (`fe80::1%eth0`): we cannot use it.
                .and_then(|a| a.split('%').next())
                .and_then(|a| a.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect();
    if servers.is_empty() {
        Err("/etc/resolv.conf names no nameserver".into())
    } else {
        Ok(servers)
    }
}

// ---- The YAML schema ------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<RawListen>,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    block: RawBlock,
    #[serde(default)]
    categories: BTreeMap<String, RawCategory>,
    #[serde(default)]
    lists: Vec<RawList>,
    #[serde(default)]
    allowlists: Vec<RawList>,
    #[serde(default)]
    blockpage: RawBlockpage,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    stats: RawStats,
    state_dir: Option<String>,
    tls_ca: Option<String>,
    #[serde(default)]
    guard: RawGuard,
    #[serde(default)]
    access: RawAccess,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    upstream_inflight: Option<usize>,
    tcp_connections: Option<usize>,
    tcp_idle: Option<DurationSpec>,
    client_qps: Option<u32>,
    client_burst: Option<u32>,
    ipv4_prefix: Option<u8>,
    ipv6_prefix: Option<u8>,
    over_limit: Option<OverLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccess {
    allow: Option<Vec<String>>,
    refused: Option<Refusal>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuard {
    max_shrink: Option<Percent>,
    protected: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlockpage {
    organisation: Option<String>,
    contact: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    queries: Option<LogQueries>,
    client: Option<ClientSpec>,
    client_hash_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStats {
    window: Option<DurationSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    dns: Option<Vec<ListenAddr>>,
    http: Option<ListenAddr>,
    https: Option<ListenAddr>,
    admin: Option<ListenAddr>,
    admin_token_file: Option<String>,
}

impl RawListen {
    /// With no `listen:` section at all, serve DNS and admin on loopback.
    fn builtin() -> Self {
        Self {
            dns: None,
            http: None,
            https: None,
            admin: Some(ListenAddr(SocketAddr::from(([127, 0, 0, 1], 9154)))),
            admin_token_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    #[serde(default = "default_servers")]
    servers: Vec<UpstreamSpec>,
    timeout: Option<DurationSpec>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            servers: default_servers(),
            timeout: None,
        }
    }
}

fn default_servers() -> Vec<UpstreamSpec> {
    vec![UpstreamSpec::System]
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    size: Option<usize>,
    serve_stale: Option<MaybeZeroDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    action: Option<Action>,
    ttl: Option<u32>,
    redirect: Option<RawRedirect>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedirect {
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCategory {
    action: Option<Action>,
    reason: Option<String>,
    #[serde(default)]
    alternatives: Vec<AlternativeSpec>,
}

/// An alternative: `"Attend Anywhere"` or `{name: ..., url: https://...}`.
#[derive(Debug)]
struct AlternativeSpec(Alternative);

impl<'de> Deserialize<'de> for AlternativeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AlternativeSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name, or {name: NAME, url: https://...}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<AlternativeSpec, E> {
                Ok(AlternativeSpec(Alternative {
                    name: s.to_owned(),
                    url: None,
                }))
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AlternativeSpec, A::Error> {
                let (mut name, mut url) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "name" => name = Some(map.next_value::<String>()?),
                        "url" => {
                            let u: String = map.next_value()?;
                            url = Some(check_url(&u).map_err(de::Error::custom)?);
                        }
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown field `{other}` in an alternative, expected `name` or `url`"
                            )));
                        }
                    }
                }
                let name =
                    name.ok_or_else(|| de::Error::custom("an alternative needs a `name`"))?;
                Ok(AlternativeSpec(Alternative { name, url }))
            }
        }
        d.deserialize_any(V)
    }
}

/// A link the block page may show: `http://` or `https://` and a host,
/// nothing a browser would run (`javascript:`) or misread.
fn check_url(u: &str) -> Result<String, String> {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or_else(|| format!("{u:?} is not a link; expected an https:// (or http://) URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty()
        || u.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '<' || c == '>')
    {
        return Err(format!(
            "{u:?} is not a usable link; expected an https:// URL with a host and no spaces or quotes"
        ));
    }
    Ok(u.to_owned())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawList {
    name: String,
    category: Option<String>,
    path: Option<String>,
    url: Option<String>,
    #[serde(default)]
    format: FormatSpec,
    refresh: Option<WrittenDuration>,
    signature: Option<SignatureSpec>,
    public_key: Option<String>,
}

/// A list's URL: `https://`, or `http://` only when written so; a host, and
/// nothing a request line could be confused by.
fn check_list_url(u: &str) -> Result<String, String> {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or_else(|| format!("{u:?} is not a list URL; expected https://host/path (or http:// when the server has no TLS)"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{u:?} is not a usable list URL; expected https://host/path with no spaces"
        ));
    }
    Ok(u.to_owned())
}

/// A minisign public key: the base64 line of a `.pub` file (its comment
/// line may be pasted too).
fn check_public_key(key: &str) -> Result<String, String> {
    let line = key
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .unwrap_or("");
    minisign_verify::PublicKey::from_base64(line)
        .map(|_| line.to_owned())
        .map_err(|_| {
            "public_key is not a minisign public key; expected the base64 line of the .pub file (it starts with RW)".to_owned()
        })
}

/// The file name of a remote list's copy in `state_dir`: its name, with
/// anything but letters, digits, `-`, `_` and `.` replaced, and a hash of
/// the name when that changed it (two names must never share a copy).
pub fn state_file_name(list: &str) -> String {
    let clean: String = list
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == list && !list.is_empty() {
        format!("{clean}.list")
    } else {
        // FNV-1a: stable across versions and machines, which a state
        // directory outliving the binary needs.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in list.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{clean}-{h:016x}.list")
    }
}

/// A share of a list's rules: `"50%"`, or a bare number of percent.
#[derive(Debug, Clone, Copy)]
struct Percent(u8);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn check<E: de::Error>(n: u64, shown: &str) -> Result<Percent, E> {
            u8::try_from(n)
                .ok()
                .filter(|n| *n <= 100)
                .map(Percent)
                .ok_or_else(|| E::custom(format!("{shown} is not a percentage from 0% to 100%")))
        }
        impl Visitor<'_> for V {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage like \"50%\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Percent, E> {
                check(n, &n.to_string())
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Percent, E> {
                check(u64::try_from(n).unwrap_or(u64::MAX), &n.to_string())
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Percent, E> {
                let n = s
                    .trim()
                    .strip_suffix('%')
                    .unwrap_or(s)
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| {
                        E::custom(format!(
                            "{s:?} is not a percentage; expected a whole number and %, like \"50%\""
                        ))
                    })?;
                check(n, &format!("{s:?}"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Implements `Deserialize` from a string through a visitor, so a parse
/// failure carries the YAML position.
macro_rules! from_str_visitor {
    ($ty:ty, $expecting:literal, $parse:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        let parse: fn(&str) -> Result<$ty, String> = $parse;
                        parse(s).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

#[derive(Debug, Clone, Copy)]
struct ListenAddr(SocketAddr);

from_str_visitor!(ListenAddr, "an address like \"127.0.0.1:5353\"", |s| {
    s.parse().map(ListenAddr).map_err(|_| {
        format!(
            "{s:?} is not an address; expected IP:PORT like \"127.0.0.1:5353\" or \"[::1]:5353\""
        )
    })
});

#[derive(Debug, Clone, Copy)]
enum UpstreamSpec {
    Addr(SocketAddr),
    System,
}

from_str_visitor!(UpstreamSpec, "\"IP:PORT\" or \"system\"", |s| {
    if s == "system" {
        return Ok(UpstreamSpec::System);
    }
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map(UpstreamSpec::Addr)
        .map_err(|_| format!("{s:?} is not an upstream; expected \"IP:PORT\" (e.g. \"192.0.2.53:53\") or \"system\""))
});

#[derive(Debug, Clone, Copy)]
struct DurationSpec(Duration);

/// A duration where `0` means "off".
#[derive(Debug, Clone, Copy)]
struct MaybeZeroDuration(Duration);

from_str_visitor!(MaybeZeroDuration, "a duration like \"1d\" or 0", |s| {
    if s.trim() == "0" {
        return Ok(MaybeZeroDuration(Duration::ZERO));
    }
    parse_duration(s)
        .map(MaybeZeroDuration)
        .ok_or_else(|| format!("{s:?} is not a duration; expected a number with a unit: ms, s, m, h or d (e.g. \"1d\"), or 0 for off"))
});

from_str_visitor!(DurationSpec, "a duration like \"500ms\" or \"2s\"", |s| {
    parse_duration(s)
        .filter(|d| !d.is_zero())
        .map(DurationSpec)
        .ok_or_else(|| format!("{s:?} is not a duration; expected a positive number with a unit: ms, s, m, h or d (e.g. \"500ms\", \"2s\")"))
});

#[derive(Debug, Clone, Copy)]
struct SignatureSpec;

from_str_visitor!(SignatureSpec, "minisign", |s| {
    if s == "minisign" {
        Ok(SignatureSpec)
    } else {
        Err(format!("unknown signature scheme {s:?}; expected minisign"))
    }
});

/// A duration that remembers how it was written, to locate later errors.
#[derive(Debug, Clone)]
struct WrittenDuration(Duration, String);

from_str_visitor!(WrittenDuration, "a duration like \"1h\"", |s| {
    parse_duration(s)
        .filter(|d| !d.is_zero())
        .map(|d| WrittenDuration(d, s.to_owned()))
        .ok_or_else(|| format!("{s:?} is not a duration; expected a positive number with a unit: ms, s, m or h (e.g. \"30m\", \"1h\")"))
});

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        "d" => n.checked_mul(86_400).map(Duration::from_secs),
        _ => None,
    }
}

/// "a, b, c or d", for messages listing what a key accepts.
fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

from_str_visitor!(Action, "an action", |s| {
    Action::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Action::CONFIGURABLE.iter().map(|a| a.as_str()).collect();
        format!("unknown action {s:?}; expected {}", one_of(&names))
    })
});

from_str_visitor!(OverLimit, "drop or refuse", |s| {
    [OverLimit::Drop, OverLimit::Refuse]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| {
            format!("unknown value {s:?} for limits.over_limit; expected drop or refuse")
        })
});

from_str_visitor!(Refusal, "refuse or drop", |s| {
    [Refusal::Refuse, Refusal::Drop]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| format!("unknown value {s:?} for access.refused; expected refuse or drop"))
});

from_str_visitor!(LogQueries, "blocked, all or none", |s| {
    LogQueries::NAMES
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = LogQueries::NAMES.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown value {s:?} for log.queries; expected {}",
                one_of(&names)
            )
        })
});

/// `log.client` as written; `hashed` is checked for its key afterwards.
#[derive(Debug, Clone, Copy)]
enum ClientSpec {
    Full,
    Subnet,
    Hashed,
    None,
}

from_str_visitor!(ClientSpec, "full, subnet, hashed or none", |s| {
    const NAMES: [(&str, ClientSpec); 4] = [
        ("full", ClientSpec::Full),
        ("subnet", ClientSpec::Subnet),
        ("hashed", ClientSpec::Hashed),
        ("none", ClientSpec::None),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown value {s:?} for log.client; expected {}",
                one_of(&names)
            )
        })
});

#[derive(Debug, Clone, Copy, Default)]
enum FormatSpec {
    #[default]
    Auto,
    Fixed(Format),
}

impl FormatSpec {
    /// Every name `format:` accepts.
    fn names() -> Vec<&'static str> {
        std::iter::once("auto")
            .chain(Format::ALL.iter().map(|f| f.as_str()))
            .collect()
    }
}

from_str_visitor!(FormatSpec, "a list format", |s| {
    match s {
        "auto" => Ok(FormatSpec::Auto),
        other => Format::parse(other).map(FormatSpec::Fixed).ok_or_else(|| {
            format!(
                "unknown format {other:?}; expected {}",
                one_of(&FormatSpec::names())
            )
        }),
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "zoom.us\n").unwrap();
        Config::parse(text, Path::new("t.yaml"), dir.path())
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const GOOD: &str = "\
listen:
  dns: [\"127.0.0.1:5353\"]
  admin: \"127.0.0.1:9154\"
upstream:
  servers: [\"127.0.0.1:5300\", \"[::1]:53\"]
  timeout: 500ms
cache:
  size: 10
block:
  action: nodata
  ttl: 30
  redirect:
    ipv4: 10.0.0.1
categories:
  video:
    action: redirect
    reason: \"not approved\"
    alternatives: [Teams]
lists:
  - name: v
    category: video
    path: a.txt
    format: domains
  - name: plain
    path: a.txt
allowlists:
  - name: ok
    path: a.txt
";

    #[test]
    fn full_example_validates() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.upstream.timeout, Duration::from_millis(500));
        assert_eq!(c.upstream.servers.len(), 2);
        assert_eq!(c.cache_size, 10);
        assert_eq!(c.block.ttl, 30);
        assert_eq!(c.lists.len(), 3);
        assert_eq!(c.lists[2].category, None);
        // "plain" names no category: an implicit one with the default action.
        let plain = c.categories.iter().find(|c| c.name == "plain").unwrap();
        assert_eq!(plain.action, Action::Nodata);
        let video = c.categories.iter().find(|c| c.name == "video").unwrap();
        assert_eq!(video.action, Action::Redirect);
    }

    #[test]
    fn empty_config_uses_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.dns, vec![SocketAddr::from(([127, 0, 0, 1], 5353))]);
        assert_eq!(
            c.listen.admin,
            Some(SocketAddr::from(([127, 0, 0, 1], 9154)))
        );
        assert_eq!(c.upstream.timeout, Duration::from_secs(2));
    }

    #[test]
    fn errors_carry_line_and_column() {
        assert_eq!(
            err("listen:\n  dnss: []\n"),
            "t.yaml:2:3: listen: unknown field `dnss`, expected one of `dns`, `http`, `https`, `admin`, `admin_token_file`"
        );
        let e = err("upstream:\n  servers: [\"127.0.0.1:53\"]\n  timeout: 2 parsecs\n");
        assert!(
            e.starts_with("t.yaml:3:12: upstream.timeout: \"2 parsecs\" is not a duration"),
            "{e}"
        );
        let e = err("listen:\n  dns: [\"localhost\"]\n");
        assert!(
            e.starts_with("t.yaml:2:9: listen.dns[0]: \"localhost\" is not an address"),
            "{e}"
        );
        let e = err("block:\n  action: drop\n");
        assert!(
            e.starts_with("t.yaml:2:11: block.action: unknown action \"drop\""),
            "{e}"
        );
    }

    #[test]
    fn cross_field_errors_are_located() {
        let e = err(
            "upstream: {servers: [\"127.0.0.1:53\"]}\nlists:\n  - name: v\n    category: nope\n    path: a.txt\n",
        );
        assert!(
            e.starts_with("t.yaml:4:15: list \"v\" names category \"nope\""),
            "{e}"
        );
        let e = err(
            "upstream: {servers: [\"127.0.0.1:53\"]}\nlists:\n  - name: v\n    path: missing.txt\n",
        );
        assert!(e.starts_with("t.yaml:4:11: list \"v\": file"), "{e}");
        assert!(e.contains("missing.txt does not exist"), "{e}");
    }

    #[test]
    fn redirect_needs_an_address() {
        let e = err("upstream: {servers: [\"127.0.0.1:53\"]}\nblock:\n  action: redirect\n");
        assert!(e.contains("block.redirect has no ipv4 or ipv6"), "{e}");
    }

    #[test]
    fn staff_and_monitoring_keys() {
        let c = parse(
            "upstream: {servers: [\"192.0.2.53:53\"]}\n\
             listen: {dns: [\"127.0.0.1:53\"], http: \"127.0.0.1:8080\"}\n\
             blockpage: {organisation: Trust, contact: IG}\n\
             categories:\n  v:\n    alternatives:\n      - Attend Anywhere\n      - {name: Teams, url: \"https://teams.microsoft.com\"}\n\
             log: {queries: all, client: hashed, client_hash_key: s3cret}\n\
             stats: {window: 10m}\n",
        )
        .unwrap();
        assert_eq!(
            c.listen.http,
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        assert_eq!(c.blockpage.organisation.as_deref(), Some("Trust"));
        let v = c.categories.iter().find(|c| c.name == "v").unwrap();
        assert_eq!(v.alternatives[0].url, None);
        assert_eq!(
            v.alternatives[1].url.as_deref(),
            Some("https://teams.microsoft.com")
        );
        assert_eq!(c.log.queries, LogQueries::All);
        assert_eq!(
            c.log.client,
            ClientShow::Hashed {
                key: "s3cret".into()
            }
        );
        assert_eq!(c.stats.window, Duration::from_secs(600));
        // The defaults: block page off, blocked queries logged with their client.
        let d = parse("").unwrap();
        assert_eq!((d.listen.http, d.listen.https), (None, None));
        assert_eq!(d.log.queries, LogQueries::Blocked);
        assert_eq!(d.log.client, ClientShow::Full);
        assert_eq!(d.stats.window, Duration::from_secs(3600));
    }

    #[test]
    fn staff_and_monitoring_mistakes_are_located() {
        let e = err("log:\n  client: hashed\n");
        assert!(
            e.starts_with("t.yaml:2:11: log.client: hashed needs log.client_hash_key"),
            "{e}"
        );
        let e = err("log:\n  queries: some\n");
        assert!(e.contains("expected blocked, all or none"), "{e}");
        let e = err("listen:\n  https: \"127.0.0.1:8443\"\n");
        assert!(
            e.starts_with("t.yaml:2:10: listen.https needs blockpage.tls_cert"),
            "{e}"
        );
        let e = err("blockpage:\n  tls_cert: a.txt\n");
        assert!(e.contains("tls_key is not"), "{e}");
        let e = err("blockpage:\n  tls_cert: nope.pem\n  tls_key: a.txt\n");
        assert!(
            e.starts_with("t.yaml:2:13: blockpage.tls_cert: file"),
            "{e}"
        );
        let e =
            err("categories:\n  v:\n    alternatives: [{name: X, url: \"javascript:alert(1)\"}]\n");
        assert!(e.contains("is not a link"), "{e}");
        let e = err("categories:\n  v:\n    alternatives: [{name: X, link: \"https://x\"}]\n");
        assert!(e.contains("unknown field `link`"), "{e}");
    }

    #[test]
    fn names_come_from_one_table() {
        let e = err(
            "upstream: {servers: [\"127.0.0.1:53\"]}\nlists:\n  - {name: v, path: a.txt, format: csv}\n",
        );
        assert!(
            e.contains("expected auto, domains, hosts, adblock, wildcard or rpz"),
            "{e}"
        );
        let e = err("block:\n  action: drop\n");
        assert!(
            e.contains("expected nxdomain, nodata, refused, redirect or monitor"),
            "{e}"
        );
    }

    #[test]
    fn client_burst_0_is_the_default() {
        let burst = |yaml: &str| {
            parse(&format!(
                "upstream: {{servers: [\"127.0.0.1:53\"]}}\n{yaml}"
            ))
            .unwrap()
            .limits
            .rate
            .map(|r| r.burst)
        };
        assert_eq!(
            burst("limits: {client_qps: 5, client_burst: 0}\n"),
            Some(10)
        );
        assert_eq!(burst("limits: {client_qps: 5}\n"), Some(10));
        assert_eq!(burst("limits: {client_qps: 5, client_burst: 7}\n"), Some(7));
        assert_eq!(burst("limits: {client_qps: 0, client_burst: 7}\n"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
