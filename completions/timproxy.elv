
use builtin;
use str;

set edit:completion:arg-completer[timproxy] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'timproxy'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'timproxy'= {
            cand --config 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]'
            cand --log-level 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]'
            cand --log-format 'Log line format'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand serve 'Run the proxy: inbound, outbound, admin and information listeners plus background jobs'
            cand gen-ca 'Create the interception CA, or a leaf certificate signed by it'
            cand fetch-federation 'Fetch, verify and store the federation list once'
            cand check-health 'Probe a running instance''s admin listener (for container HEALTHCHECKs)'
            cand reload 'Make a running instance re-read its configuration (through its admin listener) and report the outcome'
            cand migrate 'Apply or list database migrations (SQLite or PostgreSQL)'
            cand spec-check 'Validate artefacts (config, permission configs, federation lists, endpoint lists) against Matrix v1.11 and TIM rules'
            cand generate 'Regenerate man pages and shell completions (maintainers)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'timproxy;serve'= {
            cand --config 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]'
            cand --log-level 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]'
            cand --log-format 'Log line format'
            cand --no-migrate 'Do not apply pending database migrations on start'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'timproxy;gen-ca'= {
            cand --out 'Directory to write ca.crt and ca.key into (created if missing)'
            cand --cn 'Common name of the CA'
            cand --org 'Organization name of the CA'
            cand --days 'Validity in days'
            cand --key-type 'Key algorithm'
            cand --format 'Output format'
            cand --config 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]'
            cand --log-level 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]'
            cand --log-format 'Log line format'
            cand --force 'Overwrite existing files'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand leaf 'Issue a serverAuth + clientAuth leaf certificate signed by an existing CA'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'timproxy;gen-ca;leaf'= {
            cand --ca 'Directory holding ca.crt and ca.key'
            cand --host 'DNS name for the certificate (repeatable; the first is also the common name)'
            cand --ip 'IP address for the certificate (repeatable)'
            cand --out 'Directory to write leaf.crt and leaf.key into (created if missing)'
            cand --days 'Validity in days'
            cand --format 'Output format'
            cand --config 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]'
            cand --log-level 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]'
            cand --log-format 'Log line format'
            cand --force 'Overwrite existing files'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'timproxy;gen-ca;help'= {
            cand leaf 'Issue a serverAuth + clientAuth leaf certificate signed by an existing CA'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'timproxy;gen-ca;help;leaf'= {
        }
        &'timproxy;gen-ca;help;help'= {
        }
        &'timproxy;fetch-federation'= {
            cand --source 'Where to fetch from: an http(s) URL or a file (JSON or JWS, told apart by content) [default: federation.source of the configuration]'
            cand --trust-anchor 'PEM trust anchor for signed (JWS) lists; repeatable [default: federation.trust_anchors]'
            cand --out 'Write the verified list to FILE as registration-service JSON'
            cand --format 'Summary format'
            cand --config 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]'
            cand --log-level 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]'
            cand --log-format 'Log line format'
            cand --store 'Save the verified list in the database (federation_snapshots), as `serve` would'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'timproxy;check-health'= {
            cand --url 'Admin base URL [default: http://<admin.listen from the config>]'
            cand --timeout 'Give up after this long (e.g. 500ms, 3s)'
            cand --format 'Output format'
            cand --config 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]'
            cand --log-level 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]'
            cand --log-format 'Log line format'
            cand --ready 'Check readiness (all components) instead of liveness'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'timproxy;reload'= {
            cand --url 'Admin base URL [default: http://<admin.listen from the config>]'
            cand --token-file 'File holding the operator token [default: admin.token / admin.token_file from the config]'
            cand --timeout 'Give up after this long (e.g. 10s)'
            cand --format 'Output format'
            cand --config 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]'
            cand --log-level 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]'
            cand --log-format 'Log line format'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'timproxy;migrate'= {
            cand --database-url 'Database URL (sqlite://PATH or postgres://…) [default: database.url from the config]'
            cand --format 'Output format'
            cand --config 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]'
            cand --log-level 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]'
            cand --log-format 'Log line format'
            cand --status 'List applied and pending migrations; change nothing'
            cand --dry-run 'List the migrations that would be applied; change nothing'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'timproxy;spec-check'= {
            cand --kind 'Treat every file as this kind instead of detecting it'
            cand --format 'Output format (json: one document with all diagnostics and a summary)'
            cand --extra-endpoint 'Also allow this endpoint, like inbound.extra_endpoints (repeatable; --config adds the configured ones)'
            cand --permission-type 'Schema for bare permission-config content [default: legacy if it has only domainExceptions, else pro]'
            cand --config 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]'
            cand --log-level 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]'
            cand --log-format 'Log line format'
            cand --matrix-only 'Check endpoints against the Matrix v1.11 table only, not the TIM endpoint blocks'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'timproxy;generate'= {
            cand --out-dir 'Directory that holds `man/` and `completions/`'
            cand --config 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]'
            cand --log-level 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]'
            cand --log-format 'Log line format'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'timproxy;help'= {
            cand serve 'Run the proxy: inbound, outbound, admin and information listeners plus background jobs'
            cand gen-ca 'Create the interception CA, or a leaf certificate signed by it'
            cand fetch-federation 'Fetch, verify and store the federation list once'
            cand check-health 'Probe a running instance''s admin listener (for container HEALTHCHECKs)'
            cand reload 'Make a running instance re-read its configuration (through its admin listener) and report the outcome'
            cand migrate 'Apply or list database migrations (SQLite or PostgreSQL)'
            cand spec-check 'Validate artefacts (config, permission configs, federation lists, endpoint lists) against Matrix v1.11 and TIM rules'
            cand generate 'Regenerate man pages and shell completions (maintainers)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'timproxy;help;serve'= {
        }
        &'timproxy;help;gen-ca'= {
            cand leaf 'Issue a serverAuth + clientAuth leaf certificate signed by an existing CA'
        }
        &'timproxy;help;gen-ca;leaf'= {
        }
        &'timproxy;help;fetch-federation'= {
        }
        &'timproxy;help;check-health'= {
        }
        &'timproxy;help;reload'= {
        }
        &'timproxy;help;migrate'= {
        }
        &'timproxy;help;spec-check'= {
        }
        &'timproxy;help;generate'= {
        }
        &'timproxy;help;help'= {
        }
    ]
    $completions[$command]
}
