//! A real Unbound (Debian package) on a loopback port, serving a static
//! local zone `test.internal.`; killed on drop.

use crate::common::dns::{self, Q};
use crate::common::ports;
use hickory_proto::rr::RecordType;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The local data Unbound serves (besides the zone's SOA).
pub const LOCAL_DATA: &[&str] = &[
    "www.test.internal. 300 IN A 192.0.2.10",
    "www.test.internal. 300 IN AAAA 2001:db8::10",
    "blocked.test.internal. 300 IN A 192.0.2.66",
    "mail.test.internal. 300 IN MX 10 mx.test.internal.",
    "mx.test.internal. 300 IN A 192.0.2.25",
];

pub struct Unbound {
    child: Child,
    pub addr: SocketAddr,
    dir: TempDir,
}

/// Where the unbound binary is, if installed.
pub fn binary() -> Option<PathBuf> {
    find("unbound")
}

/// Finds a program on the PATH or in the sbin directories.
fn find(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// `program`'s path; `None` (after saying so) when it is absent and this
/// is not CI, where its absence is a failure of `.ci/run`.
fn require(program: &str, package: &str) -> Option<PathBuf> {
    if let Some(p) = find(program) {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{program} is not installed but CI is set: .ci/run must install the Debian package `{package}`"
        );
    }
    eprintln!("skipping: {program} not installed (Debian package {package})");
    None
}

/// The signed zones of [`Unbound::start_validating_or_skip`].
pub const SIGNED_ZONE: &str = "signed.test";
pub const EXPIRED_ZONE: &str = "expired.test";

impl Unbound {
    /// Starts Unbound, or returns None (after printing "skipping: unbound not
    /// installed") when it is absent. Under CI (`CI` set) absence is a failure.
    pub fn start_or_skip() -> Option<Unbound> {
        let bin = require("unbound", "unbound")?;
        Some(Self::start(&bin, config))
    }

    /// A validating Unbound (module `validator iterator`, EDE on) serving two
    /// zones signed here with ldns: `signed.test` (`www` A 192.0.2.80,
    /// valid: answers carry AD to clients that ask) and `expired.test`
    /// (`www` A 192.0.2.81, signatures expired in 2020: bogus, SERVFAIL
    /// with an Extended DNS Error). Trust anchors for both are configured.
    pub fn start_validating_or_skip() -> Option<Unbound> {
        let bin = require("unbound", "unbound")?;
        let keygen = require("ldns-keygen", "ldnsutils")?;
        let signzone = require("ldns-signzone", "ldnsutils")?;
        Some(Self::start(&bin, |dir, port| {
            let mut anchors = Vec::new();
            let mut zones = Vec::new();
            for (zone, addr, expire) in [
                (SIGNED_ZONE, "192.0.2.80", None),
                (EXPIRED_ZONE, "192.0.2.81", Some("20200101000000")),
            ] {
                let (anchor, signed) = sign(dir, zone, addr, expire, &keygen, &signzone);
                anchors.push(anchor);
                zones.push((zone, signed));
            }
            validating_config(dir, port, &anchors, &zones)
        }))
    }

    /// An Unbound on `port` that forwards everything but `test.internal.`
    /// (its readiness probe) to `to`, as a site resolver pointed at
    /// sinkhole would.
    pub fn forwarder_on_or_skip(port: u16, to: SocketAddr) -> Option<Unbound> {
        let bin = require("unbound", "unbound")?;
        Some(Self::start_on(&bin, Some(port), |dir, port| {
            let mut c = server_clause(dir, port, "iterator");
            c += "    do-not-query-localhost: no\n";
            c += "    local-zone: \"test.internal.\" static\n";
            c += "    local-data: \"www.test.internal. 300 IN A 192.0.2.10\"\n";
            c += &format!(
                "forward-zone:\n    name: \".\"\n    forward-addr: {}@{}\n",
                to.ip(),
                to.port()
            );
            c += "remote-control:\n    control-enable: no\n";
            c
        }))
    }

    fn start(bin: &std::path::Path, make_config: impl Fn(&str, u16) -> String) -> Unbound {
        Self::start_on(bin, None, make_config)
    }

    fn start_on(
        bin: &std::path::Path,
        fixed_port: Option<u16>,
        make_config: impl Fn(&str, u16) -> String,
    ) -> Unbound {
        let mut failures = String::new();
        for attempt in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("unbound-e2e-")
                .tempdir()
                .unwrap();
            let port = fixed_port.unwrap_or_else(ports::free_port);
            let conf = dir.path().join("unbound.conf");
            fs::write(&conf, make_config(dir.path().to_str().unwrap(), port)).unwrap();
            let log = dir.path().join("unbound.log");
            let mut child = Command::new(bin)
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(File::create(dir.path().join("unbound.stdout")).unwrap())
                .stderr(File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let start = Instant::now();
            let result = loop {
                if let Some(s) = child.try_wait().unwrap() {
                    break Err(format!("unbound exited early with {s}"));
                }
                // Ready means a response to this probe (QR set, same ID) came
                // back, not merely some datagram.
                let probe = Q::new("www.test.internal", RecordType::A).bytes();
                match dns::udp_raw(addr, &probe, Duration::from_millis(200)) {
                    Some(r) if r.len() >= 12 && r[..2] == probe[..2] && r[2] & 0x80 != 0 => {
                        break Ok(());
                    }
                    // Refused at once while the port is unbound: poll, don't spin.
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
                if start.elapsed() > Duration::from_secs(20) {
                    break Err("unbound did not answer within 20s".to_string());
                }
            };
            match result {
                Ok(()) => return Unbound { child, addr, dir },
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    failures += &format!(
                        "attempt {attempt}: {why}\n{}\n",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        panic!("could not start unbound:\n{failures}");
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- unbound log ---\n{}", self.log());
        }
    }
}

/// The `server:` clause every test Unbound starts with: loopback, one
/// thread, in the foreground, everything in `dir`.
fn server_clause(dir: &str, port: u16, modules: &str) -> String {
    format!(
        r#"server:
    interface: 127.0.0.1
    port: {port}
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    do-daemonize: no
    chroot: ""
    username: ""
    pidfile: ""
    directory: "{dir}"
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    module-config: "{modules}"
"#
    )
}

fn config(dir: &str, port: u16) -> String {
    let mut c = server_clause(dir, port, "iterator");
    c += r#"    local-zone: "test.internal." static
    local-data: "test.internal. 300 IN SOA ns.test.internal. hostmaster.test.internal. 1 3600 600 86400 120"
"#;
    for d in LOCAL_DATA {
        c += &format!("    local-data: \"{d}\"\n");
    }
    // a TXT RRset of ~4 KB: over UDP at a 1232-byte limit Unbound must set TC
    for i in 0..20 {
        c += &format!(
            "    local-data: 'big.test.internal. 300 IN TXT \"{i:02}{}\"'\n",
            "x".repeat(198)
        );
    }
    c += "remote-control:\n    control-enable: no\n";
    c
}

/// Writes `zone` (SOA, NS, `www` A `addr`) into `dir`, makes a key and signs
/// it (signatures expiring at `expire`, YYYYMMDDhhmmss, when given).
/// Returns the trust-anchor file (the key's DS) and the signed zone file.
fn sign(
    dir: &str,
    zone: &str,
    addr: &str,
    expire: Option<&str>,
    keygen: &std::path::Path,
    signzone: &std::path::Path,
) -> (String, String) {
    let zonefile = format!("{dir}/{zone}.zone");
    fs::write(
        &zonefile,
        format!(
            "$ORIGIN {zone}.\n$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 300\n\
             @ IN NS ns\nns IN A 127.0.0.1\nwww IN A {addr}\n"
        ),
    )
    .unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let key = run(Command::new(keygen).args(["-a", "ECDSAP256SHA256", "-k", zone]));
    let mut sign = Command::new(signzone);
    sign.arg("-n");
    if let Some(e) = expire {
        sign.args(["-i", "20190101000000", "-e", e]);
    }
    run(sign.args([&zonefile, &key]));
    (format!("{dir}/{key}.ds"), format!("{zonefile}.signed"))
}

fn validating_config(dir: &str, port: u16, anchors: &[String], zones: &[(&str, String)]) -> String {
    let mut c = server_clause(dir, port, "validator iterator");
    c += r#"    do-not-query-localhost: no
    ede: yes
    val-log-level: 2
    # Bogus answers are not cached, so every query gets the fresh reason.
    val-bogus-ttl: 0
    local-zone: "test." nodefault
    local-zone: "internal." static
    local-data: "www.test.internal. 300 IN A 192.0.2.10"
"#;
    for a in anchors {
        c += &format!("    trust-anchor-file: \"{a}\"\n");
    }
    for (zone, file) in zones {
        c += &format!(
            "auth-zone:\n    name: \"{zone}.\"\n    zonefile: \"{file}\"\n    \
             for-upstream: yes\n    for-downstream: no\n    fallback-enabled: no\n"
        );
    }
    c += "remote-control:\n    control-enable: no\n";
    c
}
