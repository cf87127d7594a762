//! Stage 2, access: may this client ask at all?
//!
//! A pass-through until access control and rate limits land (SPEC "Holding
//! up"): then a refusal here answers REFUSED with EDE 18, or nothing, and is
//! counted as `outcome="refused"`. It sits before the policy so a refused
//! client learns nothing about what is blocked.

use super::request::Request;

/// What the access stage says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
}

/// Who may query. Admits everyone for now.
#[derive(Debug, Default, Clone)]
pub struct Access;

impl Access {
    #[inline]
    pub fn check(&self, _req: &Request<'_>) -> Admission {
        Admission::Admit
    }
}
