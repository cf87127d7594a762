//! The policy: which names are blocked, by which rule, and what to do.
//! No DNS wire types live here; names arrive as label slices.

pub mod name;
pub mod rule;

pub use name::{DomainName, NameError};
pub use rule::{Scope, Verdict};
