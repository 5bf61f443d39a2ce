//! kiln-backends: placeholder crate; its work arrives with later issues.
