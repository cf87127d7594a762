//! The matcher held against a naive reference: a `Vec` of rules scanned
//! linearly, with the SPEC's matching rules written out the obvious way.

use std::path::Path;

use proptest::prelude::*;

use super::*;

fn category(action: Action) -> Category {
    Category {
        name: "c".into(),
        action,
        reason: None,
        alternatives: vec![],
    }
}

/// A blocklist of category "c" named (and with a path) `name`.
fn input<'a>(name: &'a str, rules: &'a [Rule<'a>]) -> ListInput<'a, [Rule<'a>]> {
    ListInput {
        name,
        path: Path::new(name),
        category: Some("c"),
        rules,
    }
}

fn rule(name: &str, line: u32, scope: Scope, verdict: Verdict) -> Rule<'_> {
    Rule {
        name,
        scope,
        verdict,
        line,
        action: None,
    }
}

/// The obviously-correct matcher.
fn reference(rules: &[(String, Scope, Verdict)], query: &str) -> Option<(usize, Verdict)> {
    let q = query.to_ascii_lowercase();
    let depth = |name: &str| name.split('.').count();
    let matches = |name: &str, scope: Scope| {
        let below =
            q.len() > name.len() && q.ends_with(name) && q[..q.len() - name.len()].ends_with('.');
        match scope {
            Scope::Subtree => q == name || below,
            Scope::Below => below,
            Scope::Exact => q == name,
        }
    };
    let best_depth = rules
        .iter()
        .filter(|(n, s, _)| matches(n, *s))
        .map(|(n, _, _)| depth(n))
        .max()?;
    let at_best = || {
        rules
            .iter()
            .enumerate()
            .filter(|(_, (n, s, _))| matches(n, *s) && depth(n) == best_depth)
    };
    at_best()
        .find(|(_, (_, _, v))| *v == Verdict::Allow)
        .or_else(|| at_best().next())
        .map(|(i, (_, _, v))| (i, *v))
}

fn policy_of(rules: &[(String, Scope, Verdict)]) -> Policy {
    // One list per rule keeps rule indices equal to positions in `rules`.
    let singles: Vec<[Rule<'_>; 1]> = rules
        .iter()
        .map(|(name, scope, verdict)| [rule(name, 1, *scope, *verdict)])
        .collect();
    let names: Vec<String> = (0..rules.len()).map(|i| format!("l{i}")).collect();
    let lists: Vec<ListInput<'_, [Rule<'_>]>> = singles
        .iter()
        .zip(&names)
        .map(|(r, name)| ListInput {
            name,
            path: Path::new("x"),
            category: Some("c"),
            rules: &r[..],
        })
        .collect();
    build(vec![category(Action::Nxdomain)], &lists).unwrap()
}

fn outcome(p: &Policy, query: &str) -> Option<(usize, Verdict)> {
    let labels: Vec<&[u8]> = query.rsplit('.').map(str::as_bytes).collect();
    match p.decide(labels) {
        Decision::Forward => None,
        Decision::Allow(hit) => Some((usize::from(hit.list_id.0), Verdict::Allow)),
        Decision::Block { hit, .. } => Some((usize::from(hit.list_id.0), Verdict::Block)),
    }
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("zoom".to_string()),
        Just("notzoom".to_string()),
        Just("us".to_string()),
        Just("evil".to_string()),
        "[a-z0-9_-]{1,12}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..5).prop_map(|l| l.join("."))
}

fn any_rule() -> impl Strategy<Value = (String, Scope, Verdict)> {
    (
        name(),
        prop_oneof![Just(Scope::Subtree), Just(Scope::Below), Just(Scope::Exact)],
        prop_oneof![Just(Verdict::Block), Just(Verdict::Allow)],
    )
}

/// Randomly upper-cases letters: lookups must not care.
fn recase(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn trie_agrees_with_linear_scan(
        rules in prop::collection::vec(any_rule(), 0..40),
        queries in prop::collection::vec((name(), any::<u64>()), 1..40),
    ) {
        let p = policy_of(&rules);
        for (q, mask) in &queries {
            let q = recase(q, *mask);
            prop_assert_eq!(outcome(&p, &q), reference(&rules, &q), "query {}", q);
        }
        // Every rule's own name, and one level below it, are interesting too.
        for (n, _, _) in &rules {
            for q in [n.clone(), format!("x.{n}"), format!("not{n}"), format!("{n}.evil.test")] {
                prop_assert_eq!(outcome(&p, &q), reference(&rules, &q), "query {}", q);
            }
        }
    }
}

#[test]
fn spec_cases() {
    let r = |n: &str, s, v| (n.to_string(), s, v);
    let rules = vec![
        r("zoom.us", Scope::Subtree, Verdict::Block),
        r("support.zoom.us", Scope::Subtree, Verdict::Allow),
        r("example.com", Scope::Subtree, Verdict::Allow),
        r("ads.example.com", Scope::Subtree, Verdict::Block),
        r("zoomgov.com", Scope::Below, Verdict::Block),
    ];
    let p = policy_of(&rules);
    assert_eq!(outcome(&p, "us04web.zoom.us"), Some((0, Verdict::Block)));
    assert_eq!(outcome(&p, "ZOOM.US"), Some((0, Verdict::Block)));
    assert_eq!(outcome(&p, "a.support.zoom.us"), Some((1, Verdict::Allow)));
    assert_eq!(outcome(&p, "notzoom.us"), None);
    assert_eq!(outcome(&p, "zoom.us.evil.test"), None);
    assert_eq!(outcome(&p, "www.example.com"), Some((2, Verdict::Allow)));
    assert_eq!(outcome(&p, "x.ads.example.com"), Some((3, Verdict::Block)));
    assert_eq!(outcome(&p, "zoomgov.com"), None);
    assert_eq!(outcome(&p, "www.zoomgov.com"), Some((4, Verdict::Block)));
}

#[test]
fn rule_text_names_the_matching_suffix() {
    let rules = vec![
        ("zoom.us".to_string(), Scope::Subtree, Verdict::Block),
        ("zoomgov.com".to_string(), Scope::Below, Verdict::Block),
    ];
    let p = policy_of(&rules);
    let q = DomainName::parse("US04WEB.zoom.us").unwrap();
    let Decision::Block { hit, .. } = p.decide_name(&q) else {
        panic!("not blocked")
    };
    assert_eq!(hit.rule_text(&q), "zoom.us");
    let q = DomainName::parse("a.b.zoomgov.com").unwrap();
    let Decision::Block { hit, .. } = p.decide_name(&q) else {
        panic!("not blocked")
    };
    assert_eq!(hit.rule_text(&q), "*.zoomgov.com");
}

#[test]
fn unknown_category_is_an_error() {
    let none: [Rule<'_>; 0] = [];
    let lists = [ListInput {
        name: "l",
        path: Path::new("x"),
        category: Some("nope"),
        rules: &none[..],
    }];
    assert!(matches!(
        build(vec![], &lists),
        Err(PolicyError::UnknownCategory { .. })
    ));
}

#[test]
fn hits_name_their_list_and_line_with_empty_lists_between() {
    let empty: Vec<Rule<'_>> = vec![];
    let a = vec![
        rule("a1.test", 3, Scope::Subtree, Verdict::Block),
        rule("a2.test", 9, Scope::Subtree, Verdict::Block),
    ];
    let b = vec![rule("b1.test", 1, Scope::Subtree, Verdict::Block)];
    let lists = [
        input("empty-first", &empty),
        input("a", &a),
        input("empty-middle", &empty),
        input("b", &b),
        input("empty-last", &empty),
    ];
    let p = build(vec![category(Action::Nxdomain)], &lists).unwrap();
    for (query, want_list, want_line) in [
        ("a1.test", "a", 3),
        ("x.a2.test", "a", 9),
        ("b1.test", "b", 1),
    ] {
        let q = DomainName::parse(query).unwrap();
        let Decision::Block { hit, .. } = p.decide_name(&q) else {
            panic!("{query} not blocked")
        };
        assert_eq!(
            (hit.list.name.as_str(), hit.line()),
            (want_list, want_line),
            "{query}"
        );
    }
}

#[test]
fn a_rule_with_its_own_action_overrides_its_category() {
    // RPZ states an action per name: `nodata.test CNAME *.` in a list whose
    // category says nxdomain. Rules without one keep the category's.
    let mut own = rule("nodata.test", 2, Scope::Exact, Verdict::Block);
    own.action = Some(Action::Nodata);
    let rules = [
        rule("plain.test", 1, Scope::Subtree, Verdict::Block),
        own,
        rule("x.nodata.test", 3, Scope::Subtree, Verdict::Block),
    ];
    let lists = [ListInput {
        name: "rpz",
        path: Path::new("rpz"),
        category: Some("c"),
        rules: &rules[..],
    }];
    let p = build(vec![category(Action::Nxdomain)], &lists).unwrap();
    let action = |q: &str| match p.decide_name(&DomainName::parse(q).unwrap()) {
        Decision::Block { action, .. } => Some(action),
        _ => None,
    };
    assert_eq!(action("nodata.test"), Some(Action::Nodata));
    assert_eq!(action("plain.test"), Some(Action::Nxdomain));
    assert_eq!(action("a.x.nodata.test"), Some(Action::Nxdomain));
    assert_eq!(action("other.nodata.test"), None, "exact rule: name only");
}

#[test]
fn an_allowlist_ignores_actions_and_verdicts_of_its_rules() {
    let mut r = rule("ok.test", 1, Scope::Subtree, Verdict::Block);
    r.action = Some(Action::Refused);
    let rules = [r];
    let lists = [ListInput {
        name: "allow",
        path: Path::new("allow"),
        category: None,
        rules: &rules[..],
    }];
    let p = build(vec![], &lists).unwrap();
    assert!(matches!(
        p.decide_name(&DomainName::parse("ok.test").unwrap()),
        Decision::Allow(_)
    ));
}
