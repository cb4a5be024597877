//! The checked-in man pages and completions must match the CLI definition.

#[test]
fn man_pages_and_completions_are_current() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for (rel, content) in timproxy::commands::generate::generated_files().unwrap() {
        match std::fs::read(root.join(&rel)) {
            Ok(existing) if existing == content => {}
            _ => stale.push(rel.display().to_string()),
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files {stale:?}; regenerate with: cargo run -- generate"
    );
}
