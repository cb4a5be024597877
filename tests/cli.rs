//! CLI examples under `commands/` run as tests (trycmd). Regenerate expected output after an
//! intended change with `TRYCMD=overwrite cargo test --test cli` and review the diff.

#[test]
fn cli_examples() {
    trycmd::TestCases::new()
        .case("commands/*.toml")
        .case("commands/*.md");
}
