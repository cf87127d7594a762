//! What one list line means to the policy, independent of its format.

/// Which names a rule covers, relative to its own name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The name and every name below it (`example.com`, `||example.com^`).
    Subtree,
    /// Only names strictly below it (`*.example.com`).
    Below,
    /// Only the name itself (RPZ's plain owner names).
    Exact,
}

/// Whether a matching rule lets the name through or stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Block,
    Allow,
}
