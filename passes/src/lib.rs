//! kiln-passes: placeholder crate; its work arrives with later issues.
