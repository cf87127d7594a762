//! The answer to "why is this name blocked (or not)?", shared by the
//! `explain` command and the admin endpoint.

use serde::Serialize;

use super::{Decision, DomainName, Policy};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Explanation {
    pub name: String,
    /// `block`, `allow` (an allow rule matched), `monitor` (a monitored
    /// list would block it; it is answered as unlisted) or `forward`
    /// (nothing matched).
    pub verdict: &'static str,
    pub action: Option<&'static str>,
    /// The rule as it would be written: `zoom.us` or `*.zoom.us`.
    pub rule: Option<String>,
    pub list: Option<String>,
    pub path: Option<String>,
    pub line: Option<u32>,
    pub category: Option<String>,
    pub reason: Option<String>,
    pub alternatives: Vec<String>,
    /// Echoed when given; per-network policy is not configurable yet, so it
    /// does not change the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// With a client: `allow` when `access.allow` admits it, else what it
    /// gets instead of any decision: `refuse` (REFUSED, EDE 18) or `drop`
    /// (no answer). Set by the caller, who knows the access stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<&'static str>,
}

impl Explanation {
    pub fn new(policy: &Policy, name: &DomainName, client: Option<String>) -> Self {
        let mut e = Explanation {
            name: name.to_string(),
            verdict: "forward",
            action: None,
            rule: None,
            list: None,
            path: None,
            line: None,
            category: None,
            reason: None,
            alternatives: Vec::new(),
            client,
            access: None,
        };
        let decision = policy.decide_name(name);
        let allowed_depth = match decision {
            Decision::Allow(hit) => hit.depth,
            _ => 0,
        };
        let monitored = match decision {
            Decision::Block { .. } => None,
            _ => policy.monitored(name.labels().rev(), allowed_depth),
        };
        let mut describe = |category: &super::Category, action: super::Action| {
            e.action = Some(action.as_str());
            e.category = Some(category.name.clone());
            e.reason = category.reason.clone();
            e.alternatives = category
                .alternatives
                .iter()
                .map(|a| a.name.clone())
                .collect();
        };
        let (hit, verdict) = match (decision, monitored) {
            (_, Some(m)) => {
                describe(m.category, super::Action::Monitor);
                (m.hit, "monitor")
            }
            (Decision::Forward, None) => return e,
            (Decision::Allow(hit), None) => (hit, "allow"),
            (
                Decision::Block {
                    hit,
                    category,
                    action,
                    ..
                },
                None,
            ) => {
                describe(category, action);
                (hit, "block")
            }
        };
        e.verdict = verdict;
        e.rule = Some(hit.rule_text(name));
        e.list = Some(hit.list.name.clone());
        e.path = Some(hit.list.path.display().to_string());
        e.line = Some(hit.line());
        e
    }

    /// A few lines for a person at a terminal.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if let (Some(access), Some(client)) = (self.access, &self.client) {
            s.push_str(&match access {
                "allow" => format!("client {client}: allowed by access.allow\n"),
                "refuse" => format!(
                    "client {client}: REFUSED with EDE 18 (outside access.allow); it gets no decision. For an allowed client:\n"
                ),
                _ => format!(
                    "client {client}: DROPPED, no answer (outside access.allow); it gets no decision. For an allowed client:\n"
                ),
            });
        }
        match self.verdict {
            "block" => {
                s.push_str(&format!(
                    "{}: BLOCKED ({})\n",
                    self.name,
                    self.action.unwrap_or("")
                ));
            }
            "allow" => s.push_str(&format!(
                "{}: ALLOWED by an allow rule (forwarded upstream)\n",
                self.name
            )),
            "monitor" => s.push_str(&format!(
                "{}: MONITORED: a list on trial would block it; answered normally, counted and logged\n",
                self.name
            )),
            _ => s.push_str(&format!(
                "{}: not on any list (forwarded upstream)\n",
                self.name
            )),
        }
        if let (Some(rule), Some(list), Some(path), Some(line)) =
            (&self.rule, &self.list, &self.path, self.line)
        {
            s.push_str(&format!(
                "  rule:     {rule}\n  list:     {list} ({path}:{line})\n"
            ));
        }
        if let Some(c) = &self.category {
            s.push_str(&format!("  category: {c}\n"));
        }
        if let Some(a) = self.action {
            s.push_str(&format!("  action:   {a}\n"));
        }
        if let Some(r) = &self.reason {
            s.push_str(&format!("  reason:   {r}\n"));
        }
        if !self.alternatives.is_empty() {
            s.push_str(&format!(
                "  use instead: {}\n",
                self.alternatives.join(", ")
            ));
        }
        s
    }
}
