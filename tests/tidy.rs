//! Repository hygiene: every Rust file says what it is for, and the README's op table lists
//! exactly the ops the frontend imports.

mod common;

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.is_dir() && name != "target" && !name.starts_with('.') {
            rust_files(&p, out);
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let root = common::repo_root();
    let mut files = Vec::new();
    for dir in [
        "src", "ir", "frontend", "passes", "backends", "tests", "benches",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20);
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap_or_default()
                .starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! doc line:\n{}",
        missing.join("\n")
    );
}

#[test]
fn readme_lists_every_supported_op() {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let table: String = readme
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| format!("{l}\n"))
        .collect();
    let listed = |op: &str| {
        table
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == op)
    };
    let missing: Vec<&str> = kiln_frontend::supported_ops()
        .filter(|op| !listed(op))
        .collect();
    assert!(missing.is_empty(), "README's op table lacks: {missing:?}");
}
