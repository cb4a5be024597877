
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'timproxy' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'timproxy'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'timproxy' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the proxy: inbound, outbound, admin and information listeners plus background jobs')
            [CompletionResult]::new('gen-ca', 'gen-ca', [CompletionResultType]::ParameterValue, 'Create the interception CA, or a leaf certificate signed by it')
            [CompletionResult]::new('fetch-federation', 'fetch-federation', [CompletionResultType]::ParameterValue, 'Fetch, verify and store the federation list once')
            [CompletionResult]::new('check-health', 'check-health', [CompletionResultType]::ParameterValue, 'Probe a running instance''s admin listener (for container HEALTHCHECKs)')
            [CompletionResult]::new('reload', 'reload', [CompletionResultType]::ParameterValue, 'Make a running instance re-read its configuration (through its admin listener) and report the outcome')
            [CompletionResult]::new('migrate', 'migrate', [CompletionResultType]::ParameterValue, 'Apply or list database migrations (SQLite or PostgreSQL)')
            [CompletionResult]::new('spec-check', 'spec-check', [CompletionResultType]::ParameterValue, 'Validate artefacts (config, permission configs, federation lists, endpoint lists) against Matrix v1.11 and TIM rules')
            [CompletionResult]::new('generate', 'generate', [CompletionResultType]::ParameterValue, 'Regenerate man pages and shell completions (maintainers)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'timproxy;serve' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format')
            [CompletionResult]::new('--no-migrate', '--no-migrate', [CompletionResultType]::ParameterName, 'Do not apply pending database migrations on start')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'timproxy;gen-ca' {
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Directory to write ca.crt and ca.key into (created if missing)')
            [CompletionResult]::new('--cn', '--cn', [CompletionResultType]::ParameterName, 'Common name of the CA')
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'Organization name of the CA')
            [CompletionResult]::new('--days', '--days', [CompletionResultType]::ParameterName, 'Validity in days')
            [CompletionResult]::new('--key-type', '--key-type', [CompletionResultType]::ParameterName, 'Key algorithm')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Overwrite existing files')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('leaf', 'leaf', [CompletionResultType]::ParameterValue, 'Issue a serverAuth + clientAuth leaf certificate signed by an existing CA')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'timproxy;gen-ca;leaf' {
            [CompletionResult]::new('--ca', '--ca', [CompletionResultType]::ParameterName, 'Directory holding ca.crt and ca.key')
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'DNS name for the certificate (repeatable; the first is also the common name)')
            [CompletionResult]::new('--ip', '--ip', [CompletionResultType]::ParameterName, 'IP address for the certificate (repeatable)')
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Directory to write leaf.crt and leaf.key into (created if missing)')
            [CompletionResult]::new('--days', '--days', [CompletionResultType]::ParameterName, 'Validity in days')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Overwrite existing files')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'timproxy;gen-ca;help' {
            [CompletionResult]::new('leaf', 'leaf', [CompletionResultType]::ParameterValue, 'Issue a serverAuth + clientAuth leaf certificate signed by an existing CA')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'timproxy;gen-ca;help;leaf' {
            break
        }
        'timproxy;gen-ca;help;help' {
            break
        }
        'timproxy;fetch-federation' {
            [CompletionResult]::new('--source', '--source', [CompletionResultType]::ParameterName, 'Where to fetch from: an http(s) URL or a file (JSON or JWS, told apart by content) [default: federation.source of the configuration]')
            [CompletionResult]::new('--trust-anchor', '--trust-anchor', [CompletionResultType]::ParameterName, 'PEM trust anchor for signed (JWS) lists; repeatable [default: federation.trust_anchors]')
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Write the verified list to FILE as registration-service JSON')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Summary format')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format')
            [CompletionResult]::new('--store', '--store', [CompletionResultType]::ParameterName, 'Save the verified list in the database (federation_snapshots), as `serve` would')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'timproxy;check-health' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Admin base URL [default: http://<admin.listen from the config>]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up after this long (e.g. 500ms, 3s)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format')
            [CompletionResult]::new('--ready', '--ready', [CompletionResultType]::ParameterName, 'Check readiness (all components) instead of liveness')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'timproxy;reload' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Admin base URL [default: http://<admin.listen from the config>]')
            [CompletionResult]::new('--token-file', '--token-file', [CompletionResultType]::ParameterName, 'File holding the operator token [default: admin.token / admin.token_file from the config]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up after this long (e.g. 10s)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'timproxy;migrate' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'Database URL (sqlite://PATH or postgres://…) [default: database.url from the config]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format')
            [CompletionResult]::new('--status', '--status', [CompletionResultType]::ParameterName, 'List applied and pending migrations; change nothing')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'List the migrations that would be applied; change nothing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'timproxy;spec-check' {
            [CompletionResult]::new('--kind', '--kind', [CompletionResultType]::ParameterName, 'Treat every file as this kind instead of detecting it')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format (json: one document with all diagnostics and a summary)')
            [CompletionResult]::new('--extra-endpoint', '--extra-endpoint', [CompletionResultType]::ParameterName, 'Also allow this endpoint, like inbound.extra_endpoints (repeatable; --config adds the configured ones)')
            [CompletionResult]::new('--permission-type', '--permission-type', [CompletionResultType]::ParameterName, 'Schema for bare permission-config content [default: legacy if it has only domainExceptions, else pro]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format')
            [CompletionResult]::new('--matrix-only', '--matrix-only', [CompletionResultType]::ParameterName, 'Check endpoints against the Matrix v1.11 table only, not the TIM endpoint blocks')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'timproxy;generate' {
            [CompletionResult]::new('--out-dir', '--out-dir', [CompletionResultType]::ParameterName, 'Directory that holds `man/` and `completions/`')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'timproxy;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the proxy: inbound, outbound, admin and information listeners plus background jobs')
            [CompletionResult]::new('gen-ca', 'gen-ca', [CompletionResultType]::ParameterValue, 'Create the interception CA, or a leaf certificate signed by it')
            [CompletionResult]::new('fetch-federation', 'fetch-federation', [CompletionResultType]::ParameterValue, 'Fetch, verify and store the federation list once')
            [CompletionResult]::new('check-health', 'check-health', [CompletionResultType]::ParameterValue, 'Probe a running instance''s admin listener (for container HEALTHCHECKs)')
            [CompletionResult]::new('reload', 'reload', [CompletionResultType]::ParameterValue, 'Make a running instance re-read its configuration (through its admin listener) and report the outcome')
            [CompletionResult]::new('migrate', 'migrate', [CompletionResultType]::ParameterValue, 'Apply or list database migrations (SQLite or PostgreSQL)')
            [CompletionResult]::new('spec-check', 'spec-check', [CompletionResultType]::ParameterValue, 'Validate artefacts (config, permission configs, federation lists, endpoint lists) against Matrix v1.11 and TIM rules')
            [CompletionResult]::new('generate', 'generate', [CompletionResultType]::ParameterValue, 'Regenerate man pages and shell completions (maintainers)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'timproxy;help;serve' {
            break
        }
        'timproxy;help;gen-ca' {
            [CompletionResult]::new('leaf', 'leaf', [CompletionResultType]::ParameterValue, 'Issue a serverAuth + clientAuth leaf certificate signed by an existing CA')
            break
        }
        'timproxy;help;gen-ca;leaf' {
            break
        }
        'timproxy;help;fetch-federation' {
            break
        }
        'timproxy;help;check-health' {
            break
        }
        'timproxy;help;reload' {
            break
        }
        'timproxy;help;migrate' {
            break
        }
        'timproxy;help;spec-check' {
            break
        }
        'timproxy;help;generate' {
            break
        }
        'timproxy;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
