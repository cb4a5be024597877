//! CLI examples under `commands/` run as tests: a changed message is a reviewed diff.

#[test]
fn cli_examples() {
    trycmd::TestCases::new().case("commands/*.toml");
}
