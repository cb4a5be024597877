//! CLI examples under `commands/` run as tests (trycmd), one or more files per subcommand.
//! Regenerate expected output after an intended change with
//! `TRYCMD=overwrite cargo test --test cli` and review the diff.

#[test]
fn cli_examples() {
    trycmd::TestCases::new()
        .register_bin(
            "timproxy",
            std::path::Path::new(env!("CARGO_BIN_EXE_timproxy")),
        )
        .case("commands/*.toml")
        .case("commands/*.md");
}
