//! The monitoring assets in `deploy/monitoring/`: the alert rules pass
//! promtool's checks and their unit tests, every metric the rules and the
//! dashboard use is exported by a running server (with the label values they
//! select on), the dashboard is importable Grafana JSON with the expected
//! panels, and a real Prometheus, configured from the example
//! `prometheus.yml`, scrapes a running server and sees exactly the queries
//! sent, evaluates every alert rule without error and accepts every
//! dashboard query.
//!
//! `promtool` and `prometheus` come from the Debian package `prometheus`.
//! Without it these tests print "skipping: ..." and pass, except under CI
//! (`CI` set), where its absence is a failure of `.ci/run`.

mod common;

use common::dns::Q;
use common::http;
use common::{FakeUpstream, ResponseCode, Setup, Sinkhole, ports};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long Prometheus may take to start, scrape, or evaluate rules.
const DEADLINE: Duration = Duration::from_secs(30);
/// How often to ask Prometheus again while waiting.
const POLL: Duration = Duration::from_millis(100);

const BLOCKED_QUERIES: usize = 7;
const ALLOWED_QUERIES: usize = 5;

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

fn read(name: &str) -> String {
    let p = monitoring_dir().join(name);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------
// Finding the Prometheus tools
// ---------------------------------------------------------------------------

/// `program`'s path; `None` (after saying so) when it is absent and this is
/// not CI, where its absence is a failure of `.ci/run`.
fn require(program: &str, package: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from));
    if let Some(p) = dirs
        .into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
    {
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

// ---------------------------------------------------------------------------
// Metric names and selectors used by the assets
// ---------------------------------------------------------------------------

/// Every `sinkhole_*` name in `text` (rules, comments, annotations, panels).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("sinkhole_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].trim_end_matches('_');
        if name.len() > "sinkhole_".len() {
            names.insert(name.to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// The PromQL expressions of the alert rules.
fn alert_exprs() -> Vec<(String, String)> {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("alerts.yml")).expect("alerts.yml is YAML");
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().expect("alerts.yml: groups") {
        for rule in group["rules"].as_sequence().expect("alerts.yml: rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("a rule names its alert")
                .to_string();
            let expr = rule["expr"]
                .as_str()
                .expect("a rule has an expr")
                .to_string();
            out.push((name, expr));
        }
    }
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&read("dashboard.json"))
        .unwrap_or_else(|e| panic!("deploy/monitoring/dashboard.json is not valid JSON: {e}"))
}

/// Every panel, rows' nested panels included (collapsed rows nest theirs).
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// (panel title, expr) of every dashboard query.
fn dashboard_exprs(dash: &Value) -> Vec<(String, String)> {
    panels(dash)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_string())))
        })
        .collect()
}

/// `(metric, label, value)` for every exact `label="value"` matcher on a
/// `sinkhole_*` selector in `expr` (regex and negative matchers, and
/// values with dashboard variables, are skipped).
fn exact_matchers(expr: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("sinkhole_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let metric = &tail[..end];
        rest = &tail[end..];
        let Some(body) = rest.strip_prefix('{') else {
            continue;
        };
        let Some(close) = body.find('}') else {
            continue;
        };
        for m in body[..close].split(',') {
            let Some((label, value)) = m.split_once('=') else {
                continue;
            };
            let label = label.trim();
            if label.ends_with('!') || value.starts_with('~') {
                continue;
            }
            let value = value.trim().trim_matches('"');
            if !value.contains('$') {
                out.push((metric.to_string(), label.to_string(), value.to_string()));
            }
        }
    }
    out
}

/// `# TYPE` lines of a scrape: family name → type.
fn families(metrics: &str) -> BTreeMap<String, String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// Whether the scrape declares a family that `name` belongs to: the name
/// itself, a counter typed without its `_total` (OpenMetrics style, as
/// prometheus-client prints it), or a histogram's `_bucket`/`_sum`/`_count`.
fn exported(families: &BTreeMap<String, String>, name: &str) -> bool {
    if families.contains_key(name) {
        return true;
    }
    if let Some(base) = name.strip_suffix("_total")
        && families.get(base).is_some_and(|t| t == "counter")
    {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .and_then(|base| families.get(base))
            .is_some_and(|t| t == "histogram" || t == "summary")
    })
}

// ---------------------------------------------------------------------------
// promtool
// ---------------------------------------------------------------------------

fn promtool(bin: &Path, args: &[&str]) {
    let out = Command::new(bin)
        .args(args)
        .current_dir(monitoring_dir())
        .output()
        .unwrap_or_else(|e| panic!("run promtool: {e}"));
    assert!(
        out.status.success(),
        "`promtool {}` in deploy/monitoring failed ({}):\n{}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let Some(bin) = require("promtool", "prometheus") else {
        return;
    };
    promtool(&bin, &["check", "rules", "alerts.yml"]);
    promtool(&bin, &["test", "rules", "alerts.test.yml"]);
    promtool(&bin, &["check", "config", "prometheus.yml"]);
}

#[test]
fn every_alert_rule_has_a_unit_test_and_runbook_annotations() {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("alerts.yml")).expect("alerts.yml is YAML");
    let tests: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("alerts.test.yml")).expect("alerts.test.yml is YAML");
    let cases: Vec<&serde_yaml_ng::Value> = tests["tests"]
        .as_sequence()
        .expect("alerts.test.yml: tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().into_iter().flatten())
        .collect();
    let groups = doc["groups"].as_sequence().expect("groups");
    assert!(
        groups
            .iter()
            .any(|g| g["name"].as_str() == Some("sinkhole")),
        "alerts.yml has no group named \"sinkhole\""
    );
    let mut problems = Vec::new();
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
    {
        let Some(name) = rule["alert"].as_str() else {
            continue;
        };
        if !name.starts_with("Sinkhole") {
            problems.push(format!("{name}: alert names start with \"Sinkhole\""));
        }
        if rule["for"].as_str().is_none() {
            problems.push(format!("{name}: no `for:`"));
        }
        if rule["labels"]["severity"].as_str().is_none() {
            problems.push(format!("{name}: no severity label"));
        }
        for a in ["summary", "description"] {
            if rule["annotations"][a]
                .as_str()
                .is_none_or(|s| s.trim().is_empty())
            {
                problems.push(format!("{name}: no {a} annotation"));
            }
        }
        // Each alert has a case where it fires and one where it stays quiet.
        let (firing, quiet) = cases
            .iter()
            .filter(|c| c["alertname"].as_str() == Some(name))
            .fold((0, 0), |(f, q), c| {
                let fires = c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
                if fires { (f + 1, q) } else { (f, q + 1) }
            });
        if firing == 0 || quiet == 0 {
            problems.push(format!(
                "{name}: alerts.test.yml has {firing} firing and {quiet} not-firing case(s); want both"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "alerts.yml:\n  {}",
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// The dashboard
// ---------------------------------------------------------------------------

#[test]
fn dashboard_is_importable_grafana_json_with_the_expected_panels() {
    let dash = dashboard();
    assert!(
        dash["title"].as_str().is_some_and(|t| !t.is_empty()),
        "dashboard has no title"
    );
    assert!(dash["uid"].as_str().is_some(), "dashboard has no uid");
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(
        (36..=41).contains(&schema),
        "schemaVersion {schema}: expected one Grafana 10+ writes (~38)"
    );
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let ds_var = vars
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .expect("a Prometheus data source template variable");
    let ds_name = ds_var["name"].as_str().expect("data source variable name");
    let ds_refs = [format!("${{{ds_name}}}"), format!("${ds_name}")];

    // Grafana's built-in panels only: no plugin to install.
    const BUILT_IN: &[&str] = &[
        "row",
        "timeseries",
        "stat",
        "gauge",
        "bargauge",
        "state-timeline",
        "status-history",
        "table",
        "text",
        "barchart",
        "heatmap",
        "piechart",
    ];
    let all = panels(&dash);
    let mut ids = BTreeSet::new();
    let mut problems = Vec::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or("(untitled)");
        let kind = p["type"].as_str().unwrap_or("");
        if !BUILT_IN.contains(&kind) {
            problems.push(format!(
                "{title}: panel type {kind:?} is not built into Grafana"
            ));
        }
        match p["id"].as_u64() {
            Some(id) if !ids.insert(id) => problems.push(format!("{title}: duplicate id {id}")),
            None => problems.push(format!("{title}: no numeric id")),
            _ => {}
        }
        let g = &p["gridPos"];
        let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
        if !matches!((x, w, h), (Some(x), Some(w), Some(h)) if w > 0 && h > 0 && x + w <= 24) {
            problems.push(format!("{title}: bad gridPos {g}"));
        }
        if kind == "row" {
            continue;
        }
        let uid = p["datasource"]["uid"].as_str().unwrap_or("");
        if !ds_refs.iter().any(|r| r == uid) {
            problems.push(format!(
                "{title}: data source {uid:?} is not the template variable"
            ));
        }
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if targets.is_empty()
            || targets
                .iter()
                .any(|t| t["expr"].as_str().is_none_or(|e| e.trim().is_empty()))
        {
            problems.push(format!(
                "{title}: a panel without a query, or an empty query"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard.json:\n  {}",
        problems.join("\n  ")
    );

    // The panels an on-call engineer looks for: (title keywords, metric).
    let wanted: &[(&[&str], &str)] = &[
        (&["outcome"], "sinkhole_queries_total"),
        (&["categor"], "sinkhole_blocked_total"),
        (
            &["upstream", "latency"],
            "sinkhole_upstream_duration_seconds_bucket",
        ),
        (&["upstream", "health"], "sinkhole_upstream_up"),
        (&["cache", "hit"], "sinkhole_cache_lookups_total"),
        (&["list", "size"], "sinkhole_list_rules"),
        (&["reload"], "sinkhole_reloads_total"),
    ];
    let exprs = dashboard_exprs(&dash);
    let mut missing = Vec::new();
    for (words, metric) in wanted {
        let found = exprs.iter().any(|(title, expr)| {
            let t = title.to_lowercase();
            words.iter().all(|w| t.contains(w)) && expr.contains(metric)
        });
        if !found {
            missing.push(format!("a panel titled with {words:?} querying {metric}"));
        }
    }
    for q in ["0.5", "0.99"] {
        let p = format!(
            "histogram_quantile({q}, sum by (upstream, le) (rate(sinkhole_upstream_duration_seconds_bucket"
        );
        if !exprs.iter().any(|(_, e)| e.contains(&p)) {
            missing.push(format!("upstream latency quantile {q} per upstream"));
        }
    }
    assert!(
        missing.is_empty(),
        "dashboard.json lacks:\n  {}",
        missing.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// The metrics they use exist
// ---------------------------------------------------------------------------

fn server(up: &FakeUpstream) -> Sinkhole {
    Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n")
        .serve()
}

#[test]
fn every_metric_the_alerts_and_dashboard_use_is_exported() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    assert_eq!(sh.udp(&Q::a("ads.test")).rcode(), ResponseCode::NXDomain);
    assert_eq!(sh.udp(&Q::a("allowed.test")).rcode(), ResponseCode::NoError);
    let metrics = sh.metrics();
    let families = families(&metrics);

    // name → the files that use it
    let mut used: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for file in ["alerts.yml", "dashboard.json"] {
        for name in metric_names(&read(file)) {
            used.entry(name).or_default().insert(file);
        }
    }
    assert!(
        used.contains_key("sinkhole_queries_total"),
        "found no sinkhole_* names in deploy/monitoring (extraction broken?)"
    );

    let mut missing = Vec::new();
    for (name, files) in &used {
        if !exported(&families, name) {
            let files: Vec<&str> = files.iter().copied().collect();
            missing.push(format!("{name} (used in {})", files.join(", ")));
        }
    }

    // Label values the rules and panels select on (outcome="error",
    // result="hit", ...) must be series the server registers.
    let mut exprs: Vec<(String, String)> = alert_exprs()
        .into_iter()
        .map(|(n, e)| (format!("alerts.yml: {n}"), e))
        .collect();
    exprs.extend(
        dashboard_exprs(&dashboard())
            .into_iter()
            .map(|(t, e)| (format!("dashboard.json: {t}"), e)),
    );
    let mut bad_values = BTreeSet::new();
    for (place, expr) in &exprs {
        for (metric, label, value) in exact_matchers(expr) {
            if exported(&families, &metric)
                && http::metric_opt(&metrics, &metric, &[(&label, &value)]).is_none()
            {
                bad_values.insert(format!("{metric}{{{label}=\"{value}\"}} (in {place})"));
            }
        }
    }

    let mut report = String::new();
    if !missing.is_empty() {
        report += &format!(
            "metrics used by deploy/monitoring that the server does not export \
             (no `# TYPE` line for them in /metrics):\n  {}\n",
            missing.join("\n  ")
        );
    }
    if !bad_values.is_empty() {
        report += &format!(
            "selectors in deploy/monitoring that match no series the server exports:\n  {}\n",
            bad_values.into_iter().collect::<Vec<_>>().join("\n  ")
        );
    }
    assert!(
        report.is_empty(),
        "{report}families in /metrics: {}",
        families.keys().cloned().collect::<Vec<_>>().join(", ")
    );
}

// ---------------------------------------------------------------------------
// A real Prometheus
// ---------------------------------------------------------------------------

/// A `prometheus` process on a loopback port with its config and TSDB in a
/// temp dir. Killed on drop; its log is printed when the test is failing.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus with deploy/monitoring/prometheus.yml (and the
    /// alerts.yml beside it), changed only to scrape `target` every second
    /// and to evaluate rules every second, and waits until it is ready.
    fn start(bin: &Path, target: SocketAddr) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("sinkhole-prometheus-")
            .tempdir()
            .expect("tempdir");
        let mut config: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&read("prometheus.yml")).expect("prometheus.yml is YAML");
        config["global"]["scrape_interval"] = "1s".into();
        config["global"]["evaluation_interval"] = "1s".into();
        let job = config["scrape_configs"]
            .as_sequence_mut()
            .expect("prometheus.yml: scrape_configs")
            .iter_mut()
            .find(|j| j["job_name"].as_str() == Some("sinkhole"))
            .expect("prometheus.yml: a scrape config with job_name: sinkhole");
        job["static_configs"] =
            serde_yaml_ng::from_str(&format!("[{{targets: [\"{target}\"]}}]")).unwrap();
        let config_path = dir.path().join("prometheus.yml");
        fs::write(&config_path, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
        fs::copy(
            monitoring_dir().join("alerts.yml"),
            dir.path().join("alerts.yml"),
        )
        .unwrap();

        let mut failures = String::new();
        for attempt in 0..3 {
            let addr = ports::free_addr();
            let log = dir.path().join(format!("prometheus-{attempt}.log"));
            let log_file = File::create(&log).unwrap();
            let mut child = Command::new(bin)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            match wait_ready(&mut child, addr) {
                Ok(()) => {
                    return Prometheus {
                        child,
                        addr,
                        log,
                        _dir: dir,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    failures +=
                        &format!("attempt {attempt}: {why}\n--- prometheus log ---\n{text}\n");
                    // only a port taken meanwhile (by another process) is worth a retry
                    if !text.contains("address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("prometheus did not become ready:\n{failures}");
    }

    /// GET `path` as JSON; None while Prometheus cannot answer.
    fn get_json(&self, path: &str) -> Option<Value> {
        let r = http::try_get(self.addr, path).ok()?;
        serde_json::from_str(&r.body).ok()
    }

    /// An instant query: `Ok(samples)` as (labels, value), or `Err(error)`
    /// when Prometheus rejects the query.
    fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let v = self
            .get_json(&path)
            .ok_or_else(|| format!("no JSON answer to {path}"))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        Ok(result
            .iter()
            .filter_map(|s| {
                let labels = s["metric"]
                    .as_object()?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect();
                let value = s["value"][1].as_str()?.parse().ok()?;
                Some((labels, value))
            })
            .collect())
    }

    /// Polls `check` every [`POLL`] until it is [`Poll::Done`]; panics
    /// when it is [`Poll::Failed`], or with the last state seen after
    /// [`DEADLINE`].
    fn wait_for<T>(&self, what: &str, mut check: impl FnMut(&Self) -> Poll<T>) -> T {
        let start = Instant::now();
        loop {
            let last = match check(self) {
                Poll::Done(t) => return t,
                Poll::Failed(why) => panic!("waiting for {what}: {why}"),
                Poll::NotYet(state) => state,
            };
            if start.elapsed() > DEADLINE {
                panic!("waiting for {what}: not within {DEADLINE:?}; last seen: {last}");
            }
            std::thread::sleep(POLL);
        }
    }
}

/// One series of an instant query's answer: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// One look at Prometheus while waiting for something.
enum Poll<T> {
    Done(T),
    /// Not there yet; the state seen, for the timeout message.
    NotYet(String),
    /// Can never get there: stop now.
    Failed(String),
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- prometheus log ---\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Polls `/-/ready` until 200 (or the process exits).
fn wait_ready(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            return Err(format!("prometheus exited early with {status}"));
        }
        if let Ok(r) = http::try_get(addr, "/-/ready")
            && r.status == 200
        {
            return Ok(());
        }
        if start.elapsed() > DEADLINE {
            return Err(format!("/-/ready not 200 within {DEADLINE:?}"));
        }
        std::thread::sleep(POLL);
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A dashboard query with Grafana's variables replaced by values that work
/// in a plain instant query.
fn without_grafana_variables(expr: &str) -> String {
    [
        ("$__rate_interval", "1m"),
        ("$__interval", "1m"),
        ("$__range", "5m"),
        ("$instance", ".+"),
        ("$job", "sinkhole"),
    ]
    .iter()
    .fold(expr.to_string(), |e, (var, value)| e.replace(var, value))
}

#[test]
fn prometheus_scrapes_the_exact_query_counts_and_evaluates_every_rule() {
    let Some(bin) = require("prometheus", "prometheus") else {
        return;
    };
    let up = FakeUpstream::start();
    let sh = server(&up);
    let prom = Prometheus::start(&bin, sh.admin);

    prom.wait_for("Prometheus to scrape sinkhole (up == 1)", |p| {
        match p.query(r#"up{job="sinkhole"}"#) {
            Ok(up) if up.len() == 1 && up[0].1 == 1.0 => Poll::Done(()),
            other => Poll::NotYet(format!("up{{job=\"sinkhole\"}}: {other:?}")),
        }
    });

    for _ in 0..BLOCKED_QUERIES {
        let r = sh.udp(&Q::a("ads.test"));
        assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.dump());
    }
    for i in 0..ALLOWED_QUERIES {
        // distinct names: none is answered from the cache
        let r = sh.udp(&Q::a(&format!("allowed-{i}.test")));
        assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
    }

    let want: BTreeMap<String, f64> = [
        ("blocked", BLOCKED_QUERIES as f64),
        ("allowed", ALLOWED_QUERIES as f64),
        ("cached", 0.0),
        ("refused", 0.0),
        ("error", 0.0),
    ]
    .into_iter()
    .map(|(o, n)| (o.to_string(), n))
    .collect();
    prom.wait_for("Prometheus to count exactly the queries sent", |p| {
        let samples = match p.query(r#"sinkhole_queries_total{job="sinkhole"}"#) {
            Ok(s) => s,
            Err(e) => return Poll::NotYet(e),
        };
        let got: BTreeMap<String, f64> = samples
            .into_iter()
            .map(|(l, v)| (l.get("outcome").cloned().unwrap_or_default(), v))
            .collect();
        let state = format!("sinkhole_queries_total by outcome {got:?}, want {want:?}");
        if got == want {
            Poll::Done(())
        } else if want.iter().any(|(o, n)| got.get(o).is_some_and(|v| v > n)) {
            Poll::Failed(format!("more queries counted than sent: {state}"))
        } else {
            Poll::NotYet(state)
        }
    });

    // Every alert rule is loaded and evaluates without error.
    let alerts: BTreeSet<String> = alert_exprs().into_iter().map(|(n, _)| n).collect();
    prom.wait_for("every alert rule to be evaluated without error", |p| {
        let Some(v) = p.get_json("/api/v1/rules") else {
            return Poll::NotYet("no answer from /api/v1/rules".into());
        };
        let rules: Vec<&Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["name"] == "sinkhole")
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let loaded: BTreeSet<String> = rules
            .iter()
            .filter_map(|r| r["name"].as_str().map(String::from))
            .collect();
        if loaded.is_empty() {
            return Poll::NotYet("no rule group sinkhole loaded yet".into());
        }
        if loaded != alerts {
            return Poll::Failed(format!(
                "group sinkhole in Prometheus has {loaded:?}, alerts.yml {alerts:?}"
            ));
        }
        let broken: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] == "err")
            .map(|r| format!("{}: {}", r["name"], r["lastError"]))
            .collect();
        if !broken.is_empty() {
            return Poll::Failed(format!("rules failing: {}", broken.join("; ")));
        }
        let unevaluated: Vec<&str> = rules
            .iter()
            .filter(|r| r["health"] != "ok")
            .filter_map(|r| r["name"].as_str())
            .collect();
        if unevaluated.is_empty() {
            Poll::Done(())
        } else {
            Poll::NotYet(format!("not evaluated yet: {unevaluated:?}"))
        }
    });

    // Prometheus accepts every dashboard query (Grafana variables filled in).
    let rejected: Vec<String> = dashboard_exprs(&dashboard())
        .into_iter()
        .filter_map(|(title, expr)| {
            let q = without_grafana_variables(&expr);
            prom.query(&q)
                .err()
                .map(|e| format!("{title}: {q}\n    {e}"))
        })
        .collect();
    assert!(
        rejected.is_empty(),
        "Prometheus rejects dashboard queries:\n  {}",
        rejected.join("\n  ")
    );
}
