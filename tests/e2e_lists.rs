//! The IG team's local lists in a running server (SPEC "The IG team's
//! lists"): every trigger (a rename over the file, a ConfigMap-style
//! symlink swap, an in-place write, SIGHUP), the guard rails (shrink kept
//! then forced, protected names rejected per line, allowlists untouched),
//! "must look like a list" for emptied, truncated and garbage files, a FIFO
//! or device in a list's place, 200 concurrent reloads sharing a rebuild,
//! monitor mode, and Unicode names.

mod common;

use common::cli;
use common::dns::Q;
use common::{FakeUpstream, Setup, Sinkhole};
use hickory_proto::op::ResponseCode;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// Far above the 2 s SPEC promises: this test proves the trigger works,
/// the reload benchmark measures how fast.
const DEADLINE: Duration = Duration::from_secs(15);

fn rcode(sh: &Sinkhole, name: &str) -> ResponseCode {
    sh.udp(&Q::a(name)).rcode()
}

/// Waits until `name` gets `want`, polling every 20 ms.
fn wait_for(sh: &Sinkhole, name: &str, want: ResponseCode) {
    let start = Instant::now();
    loop {
        let got = rcode(sh, name);
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{name}: still {got:?}, wanted {want:?}\n{}",
            sh.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn list_status(v: &serde_json::Value, name: &str) -> serde_json::Value {
    v["lists"]
        .as_array()
        .and_then(|a| a.iter().find(|l| l["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("{name} in {v}"))
}

/// Writes `text` beside `path` and renames it over: an editor's save.
fn rename_over(path: &Path, text: &str) {
    let tmp = path.with_extension("swp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// Ten rules, so the shrink guard has something to guard.
const TEN: &str =
    "a0.test\na1.test\na2.test\na3.test\na4.test\na5.test\na6.test\na7.test\na8.test\na9.test\n";

fn server(up: &FakeUpstream, ads: &str) -> Sinkhole {
    Setup::new()
        .upstream(up.addr())
        .category("ads", Some("nxdomain"), "Advertising", &[])
        .list("ads", Some("ads"), ads)
        .serve()
}

#[test]
fn a_rename_over_the_file_is_in_service_without_a_trigger() {
    let up = FakeUpstream::start();
    let sh = server(&up, TEN);
    assert_eq!(rcode(&sh, "new.test"), ResponseCode::NoError);
    rename_over(&sh.setup.list_path("ads"), &format!("{TEN}new.test\n"));
    wait_for(&sh, "www.new.test", ResponseCode::NXDomain);
    assert_eq!(rcode(&sh, "a0.test"), ResponseCode::NXDomain);
    assert!(
        sh.logs().contains("\"event\":\"list_taken\""),
        "{}",
        sh.logs()
    );
}

#[test]
fn an_in_place_write_is_in_service_without_a_trigger() {
    let up = FakeUpstream::start();
    let sh = server(&up, TEN);
    fs::write(sh.setup.list_path("ads"), format!("{TEN}inplace.test\n")).unwrap();
    wait_for(&sh, "inplace.test", ResponseCode::NXDomain);
}

#[test]
fn a_configmap_symlink_swap_is_in_service_without_a_trigger() {
    // Kubernetes mounts a ConfigMap as DIR/..2026_v1/list.txt, a symlink
    // DIR/..data -> ..2026_v1, and DIR/list.txt -> ..data/list.txt; an
    // update writes ..2026_v2 and renames a new ..data symlink over the old.
    let up = FakeUpstream::start();
    let setup = Setup::new()
        .upstream(up.addr())
        .category("ads", Some("nxdomain"), "Advertising", &[])
        .list("ads", Some("ads"), TEN);
    let dir = setup.dir().join("cm");
    fs::create_dir_all(dir.join("..v1")).unwrap();
    fs::write(dir.join("..v1/ads.txt"), TEN).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/ads.txt", dir.join("ads.txt")).unwrap();
    // Point the list at the ConfigMap's file.
    let list = setup.list_path("ads");
    fs::remove_file(&list).unwrap();
    std::os::unix::fs::symlink(dir.join("ads.txt"), &list).unwrap();
    let sh = setup.serve();
    assert_eq!(rcode(&sh, "a1.test"), ResponseCode::NXDomain);
    assert_eq!(rcode(&sh, "swapped.test"), ResponseCode::NoError);

    fs::create_dir_all(dir.join("..v2")).unwrap();
    fs::write(dir.join("..v2/ads.txt"), format!("{TEN}swapped.test\n")).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    fs::remove_dir_all(dir.join("..v1")).unwrap();
    wait_for(&sh, "swapped.test", ResponseCode::NXDomain);
}

#[test]
fn sighup_reloads_and_an_unchanged_list_builds_nothing() {
    let up = FakeUpstream::start();
    let sh = server(&up, TEN);
    let builds = sh.metric("sinkhole_policy_builds_total", &[]);
    let ok = sh.metric("sinkhole_reloads_total", &[("result", "ok")]);
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -HUP {}", sh.pid())])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    while sh.metric("sinkhole_reloads_total", &[("result", "ok")]) <= ok {
        assert!(start.elapsed() < DEADLINE, "SIGHUP reloaded: {}", sh.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        sh.metric("sinkhole_policy_builds_total", &[]),
        builds,
        "the same bytes build no new policy"
    );
    assert_eq!(rcode(&sh, "a9.test"), ResponseCode::NXDomain);
}

#[test]
fn a_list_that_shrinks_too_much_is_kept_until_forced() {
    let up = FakeUpstream::start();
    let sh = server(&up, TEN);
    // 10 → 2 rules: 80% lost, more than the default 50%.
    rename_over(&sh.setup.list_path("ads"), "a0.test\nonly.test\n");
    let r = sh.post("/reload");
    assert_eq!(r.status, 422, "{}", r.body);
    let ads = list_status(&r.json(), "ads");
    assert_eq!(ads["status"], "kept", "{ads}");
    assert_eq!(ads["rules"], 10, "{ads}");
    let error = ads["error"].as_str().unwrap();
    assert!(
        error.contains("has 2 rules, down from 10") && error.contains("max_shrink"),
        "{error}"
    );
    assert_eq!(
        rcode(&sh, "a5.test"),
        ResponseCode::NXDomain,
        "still blocked"
    );
    assert_eq!(rcode(&sh, "only.test"), ResponseCode::NoError);
    assert!(
        sh.logs().contains("\"event\":\"list_kept\""),
        "{}",
        sh.logs()
    );

    let r = sh.post("/reload?force=true");
    assert_eq!(r.status, 200, "{}", r.body);
    let ads = list_status(&r.json(), "ads");
    assert_eq!(
        (ads["status"].as_str(), ads["rules"].as_u64()),
        (Some("ok"), Some(2))
    );
    assert_eq!(rcode(&sh, "a5.test"), ResponseCode::NoError, "forced");
    assert_eq!(rcode(&sh, "only.test"), ResponseCode::NXDomain);
    assert_eq!(sh.post("/reload?force=maybe").status, 400);
}

#[test]
fn emptied_truncated_and_garbage_files_are_kept() {
    let up = FakeUpstream::start();
    let sh = server(&up, TEN);
    let path = sh.setup.list_path("ads");
    let cases: [(&str, Vec<u8>); 5] = [
        ("zero bytes", vec![]),
        (
            "comments only",
            b"# nothing here yet\n! nor here\n".to_vec(),
        ),
        ("truncated", b"a0.test\na1.te".to_vec()),
        (
            "random bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect(),
        ),
        (
            "an HTML page",
            b"<!DOCTYPE html><html><body>Login</body></html>".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let tmp = path.with_extension("new");
        fs::write(&tmp, &bytes).unwrap();
        fs::rename(&tmp, &path).unwrap();
        let r = sh.post("/reload");
        assert_eq!(r.status, 422, "{what}: {}", r.body);
        let ads = list_status(&r.json(), "ads");
        assert_eq!(ads["status"], "kept", "{what}: {ads}");
        assert_eq!(ads["rules"], 10, "{what}: {ads}");
        for n in ["a0.test", "a7.test"] {
            assert_eq!(rcode(&sh, n), ResponseCode::NXDomain, "{what}: {n}");
        }
    }
    // The error says what the file is.
    fs::write(&path, b"\x00\x01binary").unwrap();
    let ads = list_status(&sh.post("/reload").json(), "ads");
    assert!(ads["error"].as_str().unwrap().contains("binary"), "{ads}");
}

#[test]
fn a_fifo_or_device_in_a_lists_place_is_refused_without_a_hang() {
    let up = FakeUpstream::start();
    let mut sh = server(&up, TEN);
    let path = sh.setup.list_path("ads");
    fs::remove_file(&path).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let r = sh.post("/reload");
    assert_eq!(r.status, 422, "{}", r.body);
    let ads = list_status(&r.json(), "ads");
    assert!(ads["error"].as_str().unwrap().contains("FIFO"), "{ads}");
    assert_eq!(rcode(&sh, "a3.test"), ResponseCode::NXDomain);

    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    let ads = list_status(&sh.post("/reload").json(), "ads");
    assert!(ads["error"].as_str().unwrap().contains("device"), "{ads}");

    // Reloads still run, and SIGTERM still ends the process.
    rename_over(&path, &format!("{TEN}after.test\n"));
    assert_eq!(sh.post("/reload").status, 200);
    assert_eq!(rcode(&sh, "after.test"), ResponseCode::NXDomain);
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", sh.pid())])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = sh.wait_exit(Duration::from_secs(15)).expect("exits");
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn protected_names_are_rejected_per_line_and_allowlists_untouched() {
    let up = FakeUpstream::start();
    let list = "zoom.us\nnhs.uk\nuk\nx.nhs.uk\nnotnhs.uk\n";
    let setup = Setup::new()
        .upstream(up.addr())
        .category("ads", Some("nxdomain"), "Advertising", &[])
        .list("ads", Some("ads"), list)
        .allowlist("allow", "nhs.uk\n");
    let config = setup.write_config();
    let out = cli::check(&config);
    assert_eq!(out.code, Some(1), "check exits 1: {}", out.show());
    let path = setup.list_path("ads");
    for (line, _) in [(2, "nhs.uk"), (3, "uk"), (4, "x.nhs.uk")] {
        let want = format!("{}:{line}: blocks protected name nhs.uk", path.display());
        assert!(out.stdout.contains(&want), "{want} in:\n{}", out.show());
    }
    assert!(!out.stdout.contains(":5: blocks"), "{}", out.show());

    let sh = setup.serve();
    assert_eq!(rcode(&sh, "zoom.us"), ResponseCode::NXDomain);
    assert_eq!(rcode(&sh, "notnhs.uk"), ResponseCode::NXDomain);
    for n in ["nhs.uk", "www.nhs.uk", "x.nhs.uk", "example.uk"] {
        assert_eq!(rcode(&sh, n), ResponseCode::NoError, "{n} not blocked");
    }
    assert_eq!(
        sh.metric(
            "sinkhole_list_rejected_rules_total",
            &[("list", "ads"), ("reason", "protected")]
        ),
        3.0
    );
    assert_eq!(
        sh.metric(
            "sinkhole_list_rejected_rules_total",
            &[("list", "allow"), ("reason", "protected")]
        ),
        0.0
    );
    let logs = sh.logs();
    assert!(
        logs.contains("\"event\":\"rule_rejected\"")
            && logs.contains("blocks protected name nhs.uk"),
        "{logs}"
    );
}

#[test]
fn the_protected_set_is_configurable() {
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .category("ads", Some("nxdomain"), "Advertising", &[])
        .list("ads", Some("ads"), "nhs.uk\nteams.microsoft.com\n")
        .yaml("guard:\n  protected: [microsoft.com]\n  max_shrink: 90%\n")
        .serve();
    // Replacing the default: nhs.uk is no longer protected here.
    assert_eq!(rcode(&sh, "nhs.uk"), ResponseCode::NXDomain);
    assert_eq!(rcode(&sh, "teams.microsoft.com"), ResponseCode::NoError);
}

#[test]
fn two_hundred_concurrent_reloads_share_a_rebuild() {
    let up = FakeUpstream::start();
    let big: String = (0..200_000).map(|i| format!("n{i}.bulk.test\n")).collect();
    let sh = server(&up, &big);
    let rss = || -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", sh.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let steady = rss();
    let builds = sh.metric("sinkhole_policy_builds_total", &[]);
    rename_over(&sh.setup.list_path("ads"), &format!("{big}extra.test\n"));
    let admin = sh.admin;
    let threads: Vec<_> = (0..200)
        .map(|_| std::thread::spawn(move || common::http::post(admin, "/reload", "").status))
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let built = sh.metric("sinkhole_policy_builds_total", &[]) - builds;
    // One rebuild for the change (the watcher's or the first request's);
    // the rest found nothing new.
    assert_eq!(built, 1.0, "{}", sh.logs());
    assert_eq!(rcode(&sh, "extra.test"), ResponseCode::NXDomain);
    let after = rss();
    assert!(
        after < steady + steady / 2,
        "RSS back near steady state: {steady} kB before, {after} kB after"
    );
}

#[test]
fn monitored_lists_answer_normally_and_count_and_log() {
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .category("ads", Some("nxdomain"), "Advertising", &[])
        .category("trial", Some("monitor"), "New IG list on trial", &["Teams"])
        .list("ads", Some("ads"), "ads.test\n")
        .list("trial", Some("trial"), "zoom.us\nads.test\n")
        .yaml("log:\n  queries: blocked\n")
        .with_blockpage()
        .serve();
    // The block page treats a monitored name as not blocked.
    let page = common::http::raw(
        sh.http.unwrap(),
        b"GET / HTTP/1.1\r\nHost: zoom.us\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(page.status, 404, "{}", page.body);
    let r = sh.udp(&Q::a("us04web.zoom.us"));
    assert_eq!(r.rcode(), ResponseCode::NoError);
    assert_eq!(r.a_addrs().len(), 1, "answered from upstream: {}", r.dump());
    assert_eq!(up.count_for("us04web.zoom.us"), 1);
    // Enforcement never weakens: the trial list names ads.test too.
    assert_eq!(rcode(&sh, "ads.test"), ResponseCode::NXDomain);
    assert_eq!(
        sh.metric(
            "sinkhole_monitored_total",
            &[("category", "trial"), ("list", "trial")]
        ),
        1.0
    );
    assert_eq!(
        sh.metric("sinkhole_queries_total", &[("outcome", "allowed")]),
        1.0
    );
    let start = Instant::now();
    let line = loop {
        let found = sh.logs().lines().find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v["event"] == "monitored")
        });
        if let Some(v) = found {
            break v;
        }
        assert!(start.elapsed() < DEADLINE, "monitored line: {}", sh.logs());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(line["name"], "us04web.zoom.us");
    assert_eq!(line["action"], "monitor");
    assert_eq!(line["category"], "trial");
    assert_eq!(line["list"], "trial");
    assert_eq!(line["rule"], "zoom.us");
    let e = sh.get("/explain?name=zoom.us").json();
    assert_eq!(e["verdict"], "monitor", "{e}");
    assert_eq!(e["list"], "trial", "{e}");
}

#[test]
fn unicode_list_lines_block_their_punycode_names() {
    let up = FakeUpstream::start();
    let sh = server(&up, "bücher.example\nзум.рф\n");
    assert_eq!(rcode(&sh, "xn--bcher-kva.example"), ResponseCode::NXDomain);
    assert_eq!(rcode(&sh, "www.xn--g1aku.xn--p1ai"), ResponseCode::NXDomain);
    assert_eq!(sh.metric("sinkhole_list_rules", &[("list", "ads")]), 2.0);
}
