# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_timproxy_global_optspecs
    string join \n config= log-level= log-format= h/help V/version
end

function __fish_timproxy_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_timproxy_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_timproxy_using_subcommand
    set -l cmd (__fish_timproxy_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c timproxy -n "__fish_timproxy_needs_command" -l config -d 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]' -r -F
complete -c timproxy -n "__fish_timproxy_needs_command" -l log-level -d 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]' -r
complete -c timproxy -n "__fish_timproxy_needs_command" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_needs_command" -s h -l help -d 'Print help'
complete -c timproxy -n "__fish_timproxy_needs_command" -s V -l version -d 'Print version'
complete -c timproxy -n "__fish_timproxy_needs_command" -f -a "serve" -d 'Run the proxy: inbound, outbound, admin and information listeners plus background jobs'
complete -c timproxy -n "__fish_timproxy_needs_command" -f -a "gen-ca" -d 'Create the interception CA, or a leaf certificate signed by it'
complete -c timproxy -n "__fish_timproxy_needs_command" -f -a "fetch-federation" -d 'Fetch, verify and store the federation list once'
complete -c timproxy -n "__fish_timproxy_needs_command" -f -a "check-health" -d 'Probe a running instance\'s admin listener (for container HEALTHCHECKs)'
complete -c timproxy -n "__fish_timproxy_needs_command" -f -a "reload" -d 'Make a running instance re-read its configuration (through its admin listener) and report the outcome'
complete -c timproxy -n "__fish_timproxy_needs_command" -f -a "migrate" -d 'Apply or list database migrations (SQLite or PostgreSQL)'
complete -c timproxy -n "__fish_timproxy_needs_command" -f -a "spec-check" -d 'Validate artefacts (config, permission configs, federation lists, endpoint lists) against Matrix v1.11 and TIM rules'
complete -c timproxy -n "__fish_timproxy_needs_command" -f -a "generate" -d 'Regenerate man pages and shell completions (maintainers)'
complete -c timproxy -n "__fish_timproxy_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c timproxy -n "__fish_timproxy_using_subcommand serve" -l config -d 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand serve" -l log-level -d 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand serve" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand serve" -l no-migrate -d 'Do not apply pending database migrations on start'
complete -c timproxy -n "__fish_timproxy_using_subcommand serve" -s h -l help -d 'Print help'
complete -c timproxy -n "__fish_timproxy_using_subcommand serve" -s V -l version -d 'Print version'
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and not __fish_seen_subcommand_from leaf help" -l out -d 'Directory to write ca.crt and ca.key into (created if missing)' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and not __fish_seen_subcommand_from leaf help" -l cn -d 'Common name of the CA' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and not __fish_seen_subcommand_from leaf help" -l org -d 'Organization name of the CA' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and not __fish_seen_subcommand_from leaf help" -l days -d 'Validity in days' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and not __fish_seen_subcommand_from leaf help" -l key-type -d 'Key algorithm' -r -f -a "p256\t''
p384\t''
ed25519\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and not __fish_seen_subcommand_from leaf help" -l format -d 'Output format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and not __fish_seen_subcommand_from leaf help" -l config -d 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and not __fish_seen_subcommand_from leaf help" -l log-level -d 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and not __fish_seen_subcommand_from leaf help" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and not __fish_seen_subcommand_from leaf help" -l force -d 'Overwrite existing files'
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and not __fish_seen_subcommand_from leaf help" -s h -l help -d 'Print help'
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and not __fish_seen_subcommand_from leaf help" -s V -l version -d 'Print version'
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and not __fish_seen_subcommand_from leaf help" -f -a "leaf" -d 'Issue a serverAuth + clientAuth leaf certificate signed by an existing CA'
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and not __fish_seen_subcommand_from leaf help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and __fish_seen_subcommand_from leaf" -l ca -d 'Directory holding ca.crt and ca.key' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and __fish_seen_subcommand_from leaf" -l host -d 'DNS name for the certificate (repeatable; the first is also the common name)' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and __fish_seen_subcommand_from leaf" -l ip -d 'IP address for the certificate (repeatable)' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and __fish_seen_subcommand_from leaf" -l out -d 'Directory to write leaf.crt and leaf.key into (created if missing)' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and __fish_seen_subcommand_from leaf" -l days -d 'Validity in days' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and __fish_seen_subcommand_from leaf" -l format -d 'Output format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and __fish_seen_subcommand_from leaf" -l config -d 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and __fish_seen_subcommand_from leaf" -l log-level -d 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and __fish_seen_subcommand_from leaf" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and __fish_seen_subcommand_from leaf" -l force -d 'Overwrite existing files'
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and __fish_seen_subcommand_from leaf" -s h -l help -d 'Print help'
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and __fish_seen_subcommand_from leaf" -s V -l version -d 'Print version'
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and __fish_seen_subcommand_from help" -f -a "leaf" -d 'Issue a serverAuth + clientAuth leaf certificate signed by an existing CA'
complete -c timproxy -n "__fish_timproxy_using_subcommand gen-ca; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c timproxy -n "__fish_timproxy_using_subcommand fetch-federation" -l source -d 'Where to fetch from: an http(s) URL or a file (JSON or JWS, told apart by content) [default: federation.source of the configuration]' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand fetch-federation" -l trust-anchor -d 'PEM trust anchor for signed (JWS) lists; repeatable [default: federation.trust_anchors]' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand fetch-federation" -l out -d 'Write the verified list to FILE as registration-service JSON' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand fetch-federation" -l format -d 'Summary format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand fetch-federation" -l config -d 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand fetch-federation" -l log-level -d 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand fetch-federation" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand fetch-federation" -l store -d 'Save the verified list in the database (federation_snapshots), as `serve` would'
complete -c timproxy -n "__fish_timproxy_using_subcommand fetch-federation" -s h -l help -d 'Print help'
complete -c timproxy -n "__fish_timproxy_using_subcommand fetch-federation" -s V -l version -d 'Print version'
complete -c timproxy -n "__fish_timproxy_using_subcommand check-health" -l url -d 'Admin base URL [default: http://<admin.listen from the config>]' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand check-health" -l timeout -d 'Give up after this long (e.g. 500ms, 3s)' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand check-health" -l format -d 'Output format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand check-health" -l config -d 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand check-health" -l log-level -d 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand check-health" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand check-health" -l ready -d 'Check readiness (all components) instead of liveness'
complete -c timproxy -n "__fish_timproxy_using_subcommand check-health" -s h -l help -d 'Print help'
complete -c timproxy -n "__fish_timproxy_using_subcommand check-health" -s V -l version -d 'Print version'
complete -c timproxy -n "__fish_timproxy_using_subcommand reload" -l url -d 'Admin base URL [default: http://<admin.listen from the config>]' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand reload" -l token-file -d 'File holding the operator token [default: admin.token / admin.token_file from the config]' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand reload" -l timeout -d 'Give up after this long (e.g. 10s)' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand reload" -l format -d 'Output format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand reload" -l config -d 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand reload" -l log-level -d 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand reload" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand reload" -s h -l help -d 'Print help'
complete -c timproxy -n "__fish_timproxy_using_subcommand reload" -s V -l version -d 'Print version'
complete -c timproxy -n "__fish_timproxy_using_subcommand migrate" -l database-url -d 'Database URL (sqlite://PATH or postgres://…) [default: database.url from the config]' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand migrate" -l format -d 'Output format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand migrate" -l config -d 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand migrate" -l log-level -d 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand migrate" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand migrate" -l status -d 'List applied and pending migrations; change nothing'
complete -c timproxy -n "__fish_timproxy_using_subcommand migrate" -l dry-run -d 'List the migrations that would be applied; change nothing'
complete -c timproxy -n "__fish_timproxy_using_subcommand migrate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c timproxy -n "__fish_timproxy_using_subcommand migrate" -s V -l version -d 'Print version'
complete -c timproxy -n "__fish_timproxy_using_subcommand spec-check" -l kind -d 'Treat every file as this kind instead of detecting it' -r -f -a "openapi\t'OpenAPI 3 or Swagger 2 document (YAML or JSON)'
endpoints\t'Lines `METHOD /path` (`#` comments)'
permission-config\t'Permission config content or a `{type, content}` account-data event'
config\t'timproxy configuration file'
federation-list\t'Federation list (registration-service JSON or VZD JWS)'
reference-config\t'Reference Messenger Proxy application.yml: prints the equivalent timproxy.yaml'"
complete -c timproxy -n "__fish_timproxy_using_subcommand spec-check" -l format -d 'Output format (json: one document with all diagnostics and a summary)' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand spec-check" -l extra-endpoint -d 'Also allow this endpoint, like inbound.extra_endpoints (repeatable; --config adds the configured ones)' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand spec-check" -l permission-type -d 'Schema for bare permission-config content [default: legacy if it has only domainExceptions, else pro]' -r -f -a "pro\t'de.gematik.tim.account.permissionconfig.pro.v1'
epa\t'de.gematik.tim.account.permissionconfig.epa.v1'
legacy\t'de.gematik.tim.account.permissionconfig.v1 (TI-M Basis)'"
complete -c timproxy -n "__fish_timproxy_using_subcommand spec-check" -l config -d 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand spec-check" -l log-level -d 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand spec-check" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand spec-check" -l matrix-only -d 'Check endpoints against the Matrix v1.11 table only, not the TIM endpoint blocks'
complete -c timproxy -n "__fish_timproxy_using_subcommand spec-check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c timproxy -n "__fish_timproxy_using_subcommand spec-check" -s V -l version -d 'Print version'
complete -c timproxy -n "__fish_timproxy_using_subcommand generate" -l out-dir -d 'Directory that holds `man/` and `completions/`' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand generate" -l config -d 'Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]' -r -F
complete -c timproxy -n "__fish_timproxy_using_subcommand generate" -l log-level -d 'Log filter: error, warn, info, debug, trace, or a tracing directive [default: admin.log_level_default from the config, else info]' -r
complete -c timproxy -n "__fish_timproxy_using_subcommand generate" -l log-format -d 'Log line format' -r -f -a "text\t''
json\t''"
complete -c timproxy -n "__fish_timproxy_using_subcommand generate" -s h -l help -d 'Print help'
complete -c timproxy -n "__fish_timproxy_using_subcommand generate" -s V -l version -d 'Print version'
complete -c timproxy -n "__fish_timproxy_using_subcommand help; and not __fish_seen_subcommand_from serve gen-ca fetch-federation check-health reload migrate spec-check generate help" -f -a "serve" -d 'Run the proxy: inbound, outbound, admin and information listeners plus background jobs'
complete -c timproxy -n "__fish_timproxy_using_subcommand help; and not __fish_seen_subcommand_from serve gen-ca fetch-federation check-health reload migrate spec-check generate help" -f -a "gen-ca" -d 'Create the interception CA, or a leaf certificate signed by it'
complete -c timproxy -n "__fish_timproxy_using_subcommand help; and not __fish_seen_subcommand_from serve gen-ca fetch-federation check-health reload migrate spec-check generate help" -f -a "fetch-federation" -d 'Fetch, verify and store the federation list once'
complete -c timproxy -n "__fish_timproxy_using_subcommand help; and not __fish_seen_subcommand_from serve gen-ca fetch-federation check-health reload migrate spec-check generate help" -f -a "check-health" -d 'Probe a running instance\'s admin listener (for container HEALTHCHECKs)'
complete -c timproxy -n "__fish_timproxy_using_subcommand help; and not __fish_seen_subcommand_from serve gen-ca fetch-federation check-health reload migrate spec-check generate help" -f -a "reload" -d 'Make a running instance re-read its configuration (through its admin listener) and report the outcome'
complete -c timproxy -n "__fish_timproxy_using_subcommand help; and not __fish_seen_subcommand_from serve gen-ca fetch-federation check-health reload migrate spec-check generate help" -f -a "migrate" -d 'Apply or list database migrations (SQLite or PostgreSQL)'
complete -c timproxy -n "__fish_timproxy_using_subcommand help; and not __fish_seen_subcommand_from serve gen-ca fetch-federation check-health reload migrate spec-check generate help" -f -a "spec-check" -d 'Validate artefacts (config, permission configs, federation lists, endpoint lists) against Matrix v1.11 and TIM rules'
complete -c timproxy -n "__fish_timproxy_using_subcommand help; and not __fish_seen_subcommand_from serve gen-ca fetch-federation check-health reload migrate spec-check generate help" -f -a "generate" -d 'Regenerate man pages and shell completions (maintainers)'
complete -c timproxy -n "__fish_timproxy_using_subcommand help; and not __fish_seen_subcommand_from serve gen-ca fetch-federation check-health reload migrate spec-check generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c timproxy -n "__fish_timproxy_using_subcommand help; and __fish_seen_subcommand_from gen-ca" -f -a "leaf" -d 'Issue a serverAuth + clientAuth leaf certificate signed by an existing CA'
