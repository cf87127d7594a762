//! Stage 3, policy: asks the snapshot in service (`crate::policy`) about
//! the query's name, walking its wire labels, and says whether it is
//! blocked and how.

use std::sync::Arc;

use arc_swap::Guard;

use super::answers::Blocked;
use super::parse::Query;
use super::record::{Decided, RuleRef};
use crate::policy::{Decision, Live, Policy, RuleHit};

/// The policy stage: a handle on the snapshot in service.
pub struct PolicyStage {
    live: Arc<Live>,
}

/// The stage's verdict, borrowing names from the snapshot for the answer.
pub enum Verdict<'p> {
    Block {
        decided: Decided,
        answer: Blocked<'p>,
    },
    Pass(Decided),
}

/// A monitored list's match, asked only when some list is monitored.
fn monitored(policy: &Policy, q: &Query<'_>, allowed_depth: usize) -> Option<Decided> {
    let m = policy.monitored(q.labels().from_top(), allowed_depth)?;
    Some(Decided::Monitored {
        rule: rule_ref(&m.hit),
        category: m.category_id,
    })
}

fn rule_ref(hit: &RuleHit<'_>) -> RuleRef {
    RuleRef {
        list: hit.list_id,
        rule: hit.index as u32,
        depth: hit.depth.min(usize::from(u8::MAX)) as u8,
        below_only: hit.below_only,
    }
}

impl PolicyStage {
    pub fn new(live: Arc<Live>) -> Self {
        Self { live }
    }

    /// The snapshot to decide with; the query finishes on it even if a
    /// reload swaps in another meanwhile.
    #[inline]
    pub fn snapshot(&self) -> Guard<Arc<Policy>> {
        self.live.load()
    }

    #[inline]
    pub fn check<'p>(&self, policy: &'p Policy, q: &Query<'_>) -> Verdict<'p> {
        match policy.decide(q.labels().from_top()) {
            Decision::Forward if policy.monitors() => {
                Verdict::Pass(monitored(policy, q, 0).unwrap_or(Decided::Unlisted))
            }
            Decision::Forward => Verdict::Pass(Decided::Unlisted),
            Decision::Allow(hit) if policy.monitors() => Verdict::Pass(
                monitored(policy, q, hit.depth).unwrap_or(Decided::Allowed(rule_ref(&hit))),
            ),
            Decision::Allow(hit) => Verdict::Pass(Decided::Allowed(rule_ref(&hit))),
            Decision::Block {
                hit,
                category_id,
                category,
                action,
            } => Verdict::Block {
                decided: Decided::Blocked {
                    rule: rule_ref(&hit),
                    category: category_id,
                    action,
                },
                answer: Blocked {
                    action,
                    rule_depth: hit.depth,
                    category: &category.name,
                    list: &hit.list.name,
                },
            },
        }
    }
}
