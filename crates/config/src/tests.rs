use super::*;

/// Loads `text` and returns the problems it must have.
fn problems(text: &str) -> Vec<Problem> {
    match Config::from_toml_str(text, "siegel.toml") {
        Ok(l) => panic!("accepted: {:?}", l.config),
        Err(ConfigError::Invalid { origin, problems }) => {
            assert_eq!(origin, "siegel.toml");
            problems
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// The single problem `text` must produce, as printed.
fn one_problem(text: &str) -> String {
    let err = Config::from_toml_str(text, "siegel.toml").expect_err("must be refused");
    let shown = err.to_string();
    assert_eq!(
        shown.lines().count(),
        1,
        "expected one problem, got:\n{shown}"
    );
    shown
}

fn ok(text: &str) -> Loaded {
    Config::from_toml_str(text, "siegel.toml").unwrap_or_else(|e| panic!("refused:\n{e}"))
}

#[test]
fn defaults_are_safe_and_as_documented() {
    let d = Config::defaults();
    assert_eq!(d.server.data_dir, PathBuf::from("./siegel-data"));
    assert_eq!(
        d.smtp.listen,
        vec!["127.0.0.1:2525".parse().expect("literal")]
    );
    assert!(!d.smtp.hostname.is_empty());
    assert_eq!(d.smtp.trusted_networks.len(), 2);
    assert!(d.smtp.trusted_networks[0].contains(&"127.1.2.3".parse::<IpAddr>().expect("literal")));
    assert!(
        !d.smtp
            .trusted_networks
            .iter()
            .any(|n| n.contains(&"10.0.0.1".parse::<IpAddr>().expect("literal")))
    );
    assert_eq!(d.smtp.max_message_size, 52_428_800);
    assert_eq!(d.smtp.command_timeout, Duration::from_secs(300));
    assert_eq!(d.queue.retry.len(), 7);
    assert_eq!(d.queue.max_lifetime, Duration::from_secs(432_000));
    assert_eq!(
        d.admin.listen,
        Some("127.0.0.1:8025".parse().expect("literal"))
    );
    assert_eq!(d.log.format, LogFormat::Text);
    assert_eq!(Config::default(), d);
}

#[test]
fn empty_file_means_defaults() {
    let l = ok("");
    assert_eq!(l.config, Config::defaults());
    assert!(l.warnings.is_empty());
}

#[test]
fn example_parses_to_the_defaults_without_warnings() {
    let l = Config::from_toml_str(Config::example(), "<example>").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.config, Config::defaults());
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

/// Each declared setting must be in the example, set or (for settings
/// without a default value) commented out — so the example stays complete
/// when someone adds a setting.
#[test]
fn example_documents_every_setting() {
    // Uncomment the user block so that its keys are asked for too.
    let text = Config::example()
        .replace("# [[smtp.submission.users]]", "[[smtp.submission.users]]")
        .replace("# name = ", "name = ")
        .replace("# password_hash = ", "password_hash = ");
    let (_, cx) = parse_text(&text).unwrap_or_else(|p| panic!("{p:?}"));
    assert!(cx.problems.is_empty(), "{:?}", cx.problems);
    assert!(
        cx.asked.len() > 30,
        "suspiciously few settings: {:?}",
        cx.asked
    );
    for key in &cx.asked {
        if cx.present(key) {
            continue;
        }
        let last = key.rsplit('.').next().unwrap_or(key);
        assert!(
            Config::example().contains(&format!("# {last} = ")),
            "setting `{key}` is neither set nor shown commented out in example.toml"
        );
    }
}

#[test]
fn a_full_config_is_read() {
    let l = ok(r#"
[server]
data_dir = "/var/lib/siegel"
[smtp]
listen = ["0.0.0.0:25", "[::]:25"]
hostname = "MX.Example.COM"
trusted_networks = ["10.0.0.0/8", "192.0.2.7"]
max_message_size = 1024
max_recipients = 50
max_line_length = 1000
command_timeout = "30s"
data_timeout = "1h30m"
[smtp.submission]
listen = ["0.0.0.0:587"]
[[smtp.submission.users]]
name = "alice@example.com"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
[domains]
internal = ["Example.com", "bücher.example"]
[routing]
inbound_relay = "[2001:db8::25]:25"
outbound_relay = "smarthost.example:587"
routes = { "Partner.Example" = "mx.partner.example:25" }
[tls]
cert = "/etc/siegel/cert.pem"
key = "/etc/siegel/key.pem"
policy = { "bank.example" = "required", "other.example" = "opportunistic" }
[queue]
retry = ["10s", "1m"]
max_lifetime = "2h"
[admin]
listen = "off"
[database]
url = "postgres://localhost/siegel"
[dns]
nameservers = ["192.0.2.53"]
[log]
level = "info,siegel_smtp_in=debug"
format = "json"
"#);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let c = l.config;
    assert_eq!(c.smtp.listen.len(), 2);
    assert_eq!(c.smtp.hostname, "mx.example.com");
    assert_eq!(c.smtp.trusted_networks[1].prefix_len(), 32);
    assert_eq!(c.smtp.max_message_size, 1024);
    assert_eq!(c.smtp.data_timeout, Duration::from_secs(5400));
    assert_eq!(c.smtp.submission.users[0].name, "alice@example.com");
    assert!(
        c.smtp.submission.users[0]
            .password_hash
            .expose()
            .starts_with("$argon2id$")
    );
    assert_eq!(c.domains.internal, ["example.com", "xn--bcher-kva.example"]);
    assert_eq!(
        c.routing.inbound_relay.as_deref(),
        Some("[2001:db8::25]:25")
    );
    assert_eq!(
        c.routing.routes.get("partner.example").map(String::as_str),
        Some("mx.partner.example:25")
    );
    assert_eq!(c.tls.policy_for("bank.example"), TlsPolicy::Required);
    assert_eq!(
        c.tls.policy_for("unlisted.example"),
        TlsPolicy::Opportunistic
    );
    assert_eq!(
        c.queue.retry,
        [Duration::from_secs(10), Duration::from_secs(60)]
    );
    assert_eq!(c.admin.listen, None);
    assert_eq!(
        c.dns.nameservers,
        ["192.0.2.53:53".parse().expect("literal")]
    );
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn each_kind_of_error_names_file_line_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[smtp]\nlisten = [\"127.0.0.1:25\", \"foo\"]",
            "siegel.toml:2: key `smtp.listen[1]`",
            "not a socket address: \"foo\"",
        ),
        (
            "[smtp]\nmax_recipients = \"many\"",
            "siegel.toml:2: key `smtp.max_recipients`",
            "expected an integer, found a string",
        ),
        (
            "[smtp]\nmax_recipients = 0",
            "siegel.toml:2: key `smtp.max_recipients`",
            "greater than zero",
        ),
        (
            "[smtp]\n\nmax_message_size = \"5X\"",
            "siegel.toml:3: key `smtp.max_message_size`",
            "not a size",
        ),
        (
            "[smtp]\nmax_message_size = -1",
            "siegel.toml:2: key `smtp.max_message_size`",
            "greater than zero",
        ),
        (
            "[smtp]\nmax_line_length = 80",
            "siegel.toml:2: key `smtp.max_line_length`",
            "at least 1000",
        ),
        (
            "[smtp]\ncommand_timeout = 300",
            "siegel.toml:2: key `smtp.command_timeout`",
            "duration",
        ),
        (
            "[smtp]\ndata_timeout = \"0s\"",
            "siegel.toml:2: key `smtp.data_timeout`",
            "greater than zero",
        ),
        (
            "[smtp]\ntrusted_networks = [\"10.0.0.0/40\"]",
            "siegel.toml:2: key `smtp.trusted_networks[0]`",
            "not a network",
        ),
        (
            "[smtp]\nhostname = \"bad host\"",
            "siegel.toml:2: key `smtp.hostname`",
            "not a valid domain",
        ),
        (
            "[domains]\ninternal = [\"ok.example\", \"-bad\"]",
            "siegel.toml:2: key `domains.internal[1]`",
            "not a valid domain",
        ),
        (
            "[routing]\ninbound_relay = \"2001:db8::1:25\"",
            "siegel.toml:2: key `routing.inbound_relay`",
            "brackets",
        ),
        (
            "[routing]\noutbound_relay = \"relay.example\"",
            "siegel.toml:2: key `routing.outbound_relay`",
            "missing port",
        ),
        (
            "[routing.routes]\n\"partner.example\" = \"mx:0\"",
            "siegel.toml:2: key `routing.routes.\"partner.example\"`",
            "not a port",
        ),
        (
            "[routing.routes]\n\"bad..example\" = \"mx:25\"",
            "siegel.toml:2: key `routing.routes.\"bad..example\"`",
            "not a valid domain",
        ),
        (
            "[tls.policy]\n\"bank.example\" = \"always\"",
            "siegel.toml:2: key `tls.policy.\"bank.example\"`",
            "\"opportunistic\" or \"required\"",
        ),
        (
            "[tls]\ncert = \"/c.pem\"",
            "siegel.toml:2: key `tls.cert`",
            "both or neither",
        ),
        (
            "[tls]\nkey = \"/k.pem\"",
            "siegel.toml:2: key `tls.key`",
            "both or neither",
        ),
        (
            "[queue]\nretry = []",
            "siegel.toml:2: key `queue.retry`",
            "at least one",
        ),
        (
            "[queue]\nretry = [\"soon\"]",
            "siegel.toml:2: key `queue.retry[0]`",
            "not a duration",
        ),
        (
            "[smtp]\nlisten = [\"nope\"]",
            "siegel.toml:2: key `smtp.listen[0]`",
            "not a socket address",
        ),
        (
            "[queue]\nretry = [\"1h\"]\nmax_lifetime = \"30m\"",
            "siegel.toml:3: key `queue.max_lifetime`",
            "shorter than the first retry",
        ),
        (
            "[admin]\nlisten = \"nowhere\"",
            "siegel.toml:2: key `admin.listen`",
            "or \"off\"",
        ),
        (
            "[log]\nlevel = \"infos\"",
            "siegel.toml:2: key `log.level`",
            "unknown level",
        ),
        (
            "[log]\nformat = \"xml\"",
            "siegel.toml:2: key `log.format`",
            "\"text\" or \"json\"",
        ),
        (
            "[smtp]\nlisten = []",
            "siegel.toml:2: key `smtp.listen`",
            "at least one",
        ),
        (
            "smtp = 5",
            "siegel.toml:1: key `smtp`",
            "expected a table, found an integer",
        ),
        (
            "[dns]\nnameservers = \"192.0.2.53\"",
            "siegel.toml:2: key `dns.nameservers`",
            "expected an array, found a string",
        ),
        (
            "[server]\ndata_dir = \"\"",
            "siegel.toml:2: key `server.data_dir`",
            "must not be empty",
        ),
        (
            "[smtp]\nlisten = [\"127.0.0.1:25\"]\n[smtp.submission]\nlisten = [\"127.0.0.1:25\"]",
            "siegel.toml:4: key `smtp.submission.listen[0]`",
            "already used by `smtp.listen[0]`",
        ),
        (
            "[admin]\nlisten = \"127.0.0.1:2525\"",
            "siegel.toml:2: key `admin.listen`",
            "already used by `smtp.listen[0]`",
        ),
        ("[smtp\nlisten = 1", "siegel.toml:1: TOML syntax", ""),
    ];
    for (text, prefix, message) in cases {
        let shown = one_problem(text);
        assert!(
            shown.starts_with(prefix),
            "{text:?}: {shown:?} does not start with {prefix:?}"
        );
        assert!(
            shown.contains(message),
            "{text:?}: {shown:?} does not contain {message:?}"
        );
    }
}

#[test]
fn all_problems_are_reported_in_file_order() {
    let text = r#"
[smtp]
listen = ["nope"]
max_recipients = -3
command_timeout = "soon"

[routing]
inbound_relay = "mx"

[log]
format = "yaml"
"#;
    let p = problems(text);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "smtp.listen[0]",
            "smtp.max_recipients",
            "smtp.command_timeout",
            "routing.inbound_relay",
            "log.format"
        ]
    );
    let lines: Vec<Option<usize>> = p.iter().map(|p| p.line).collect();
    assert_eq!(lines, [Some(3), Some(4), Some(5), Some(8), Some(11)]);
    // The Display form has one line per problem.
    let shown = Config::from_toml_str(text, "f.toml")
        .expect_err("invalid")
        .to_string();
    assert_eq!(shown.lines().count(), 5, "{shown}");
    assert!(shown.lines().all(|l| l.starts_with("f.toml:")), "{shown}");
}

#[test]
fn unknown_keys_are_warnings_with_a_hint() {
    let l = ok("[smtp]\nlisen = [\"0.0.0.0:25\"]\n\n[colour]\nx = 1\n[routing.routes]\n");
    assert_eq!(
        l.warnings,
        [
            "siegel.toml:2: key `smtp.lisen`: unknown key, ignored (did you mean `smtp.listen`?)",
            "siegel.toml:4: key `colour`: unknown key, ignored",
        ]
    );
    // The typo leaves the default in force, which is why it must be visible.
    assert_eq!(l.config.smtp.listen, Config::defaults().smtp.listen);
}

#[test]
fn unknown_keys_inside_user_blocks_are_warned_about() {
    let l = ok(
        "[[smtp.submission.users]]\nname = \"bob\"\npassword_hash = \"$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA\"\npasword = \"x\"\n",
    );
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(
        l.warnings[0].contains("`smtp.submission.users[0].pasword`"),
        "{:?}",
        l.warnings
    );
}

#[test]
fn suspicious_but_legal_settings_warn() {
    let l = ok(
        "[domains]\ninternal = [\"example.com\", \"EXAMPLE.com\"]\n[smtp.submission]\nlisten = [\"127.0.0.1:587\"]\n",
    );
    assert_eq!(l.config.domains.internal, ["example.com"]);
    let all = l.warnings.join("\n");
    assert!(
        all.contains("`domains.internal`: \"example.com\" is listed more than once"),
        "{all}"
    );
    assert!(all.contains("`routing.inbound_relay`"), "{all}");
    assert!(
        all.contains("siegel.toml:4: key `smtp.submission.listen`: no `[[smtp.submission.users]]`"),
        "{all}"
    );
}

#[test]
fn sizes_in_config() {
    for (written, bytes) in [
        ("1048576", 1_048_576),
        ("\"50M\"", 52_428_800),
        ("\"50MiB\"", 52_428_800),
        ("\"10KB\"", 10_000),
    ] {
        let l = ok(&format!("[smtp]\nmax_message_size = {written}"));
        assert_eq!(l.config.smtp.max_message_size, bytes, "{written}");
    }
}

#[test]
fn ipv6_next_hops_and_listeners() {
    let l = ok(
        "[smtp]\nlisten = [\"[::1]:2525\"]\n[routing]\noutbound_relay = \"[2001:DB8::1]:587\"\n",
    );
    assert_eq!(
        l.config.smtp.listen[0],
        "[::1]:2525".parse().expect("literal")
    );
    assert_eq!(
        l.config.routing.outbound_relay.as_deref(),
        Some("[2001:db8::1]:587")
    );
}

#[test]
fn a_clash_with_a_default_says_so() {
    let p = problems("[smtp]\nlisten = [\"127.0.0.1:8025\"]\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "admin.listen");
    assert!(p[0].message.contains("this is the default"), "{p:?}");
}

#[test]
fn domains_written_twice_in_routes_are_refused() {
    let p = problems("[routing.routes]\n\"a.example\" = \"mx:25\"\n\"A.example\" = \"mx2:25\"\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].message.contains("more than once"), "{p:?}");
}

#[test]
fn submission_users_are_checked_and_secret() {
    let plain = "hunter2-plaintext";
    let p = problems(&format!(
        "[[smtp.submission.users]]\nname = \"alice\"\npassword_hash = \"{plain}\"\n[[smtp.submission.users]]\nname = \"bob\"\n"
    ));
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "smtp.submission.users[0].password_hash",
            "smtp.submission.users[1]"
        ],
        "{p:?}"
    );
    assert!(p[1].message.contains("missing password_hash"), "{p:?}");
    assert!(
        !format!("{p:?}").contains(plain),
        "a secret was echoed: {p:?}"
    );

    let hash = "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA";
    let l = ok(&format!(
        "[[smtp.submission.users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n"
    ));
    assert!(
        !format!("{:?}", l.config).contains(hash),
        "Debug shows the hash"
    );

    let p = problems(&format!(
        "[[smtp.submission.users]]\nname = \"a\"\npassword_hash = \"{hash}\"\n[[smtp.submission.users]]\nname = \"a\"\npassword_hash = \"{hash}\"\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "smtp.submission.users[1].name");
}

#[test]
fn unreadable_file_is_a_read_error() {
    let missing = Path::new("/nonexistent/siegel-config-test.toml");
    match Config::load(missing) {
        Err(ConfigError::Read { path, .. }) => assert_eq!(path, missing),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("siegel-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("siegel.toml");
    std::fs::write(&file, "[smtp]\nmax_recipients = 0\n").expect("write");
    let shown = Config::load(&file).expect_err("invalid").to_string();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        shown.starts_with(&format!("{}:2: key `smtp.max_recipients`", file.display())),
        "{shown}"
    );
}

#[test]
fn policy_section_is_read_and_checked() {
    let l = ok(r#"
[domains]
internal = ["example.com"]
[routing]
inbound_relay = "127.0.0.1:2526"
[tls.policy]
"bank.example" = "required"
[policy]
subject_keywords = ["[geheim]"]
honour_sensitivity = false
confidential_domains = ["Partner.Example"]
confidential_recipients = ["Boss@Partner.example"]
encrypt_when_key_known = false
verified_tls_enough = ["bank.example"]
gina_sender_domains = ["example.com"]
confidential_without_method = "hold"
"#);
    let p = &l.config.policy;
    assert_eq!(p.rules.subject_keywords, ["[geheim]"]);
    assert!(!p.rules.honour_sensitivity);
    assert!(p.rules.honour_siegel_header);
    assert_eq!(p.rules.confidential_domains, ["partner.example"]);
    assert_eq!(
        p.rules.confidential_recipients[0].domain(),
        "partner.example"
    );
    assert!(!p.encrypt_when_key_known);
    assert!(p.verified_tls_enough_for("bank.example"));
    assert!(!p.verified_tls_enough_for("other.example"));
    assert!(p.gina_enabled_for("example.com", &[]));
    assert!(!p.gina_enabled_for("other.example", &[]));
    assert_eq!(p.confidential_without_method, NoMethod::Hold);
    // Default: GINA for every internal domain.
    let d = Config::defaults().policy;
    assert!(d.gina_enabled_for("example.com", &["example.com".to_owned()]));
    assert!(!d.gina_enabled_for("example.com", &[]));
}

#[test]
fn policy_problems_name_their_key() {
    let e = Config::from_toml_str(
        r#"
[policy]
subject_keywords = ["", " x"]
purview_labels = ["not-a-guid"]
verified_tls_enough = ["partner.example"]
confidential_without_method = "drop"
confidential_recipients = ["no address"]
"#,
        "p.toml",
    )
    .err()
    .unwrap_or_else(|| panic!("accepted"))
    .to_string();
    for want in [
        "key `policy.subject_keywords[0]`: a keyword must not be empty",
        "key `policy.subject_keywords[1]`",
        "key `policy.purview_labels[0]`",
        "key `policy.verified_tls_enough[0]`: \"partner.example\" needs `tls.policy.\"partner.example\" = \"required\"`",
        "key `policy.confidential_without_method`: expected \"bounce\" or \"hold\"",
        "key `policy.confidential_recipients[0]`: not a mail address",
    ] {
        assert!(e.contains(want), "missing {want:?} in\n{e}");
    }
}

#[test]
fn mpki_and_smime_sections_parse_and_refuse_nonsense() {
    let l = Config::from_toml_str(
        "[mpki]\nauto_enroll = false\nkey_type = \"p256\"\nvalidity_days = 90\ncrl_url = \"http://gw.example/crl/ca.crl\"\n[smime]\ncipher = \"gcm\"\ntrust_bundles = [\"/etc/roots.pem\"]\n",
        "<t>",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!l.config.mpki.auto_enroll);
    assert_eq!(l.config.mpki.key_type, KeyType::P256);
    assert_eq!(l.config.mpki.validity_days, 90);
    assert_eq!(
        l.config.mpki.crl_url.as_deref(),
        Some("http://gw.example/crl/ca.crl")
    );
    assert_eq!(l.config.smime.cipher, SmimeCipher::Gcm);
    assert_eq!(l.config.smime.trust_bundles.len(), 1);
    for bad in [
        "[mpki]\nkey_type = \"rsa1024\"\n",
        "[mpki]\nvalidity_days = 0\n",
        "[mpki]\ncrl_url = \"ftp://x/crl\"\n",
        "[smime]\ncipher = \"des\"\n",
    ] {
        assert!(Config::from_toml_str(bad, "<t>").is_err(), "{bad}");
    }
}

#[test]
fn openpgp_section_parses_and_refuses_nonsense() {
    let d = ok("").config;
    assert_eq!(d.openpgp.key_type, PgpKeyType::Cv25519);
    assert!(d.openpgp.auto_enroll && d.openpgp.autocrypt);
    let c =
        ok("[openpgp]\nkey_type = \"rsa3072\"\nauto_enroll = false\nautocrypt = false\n").config;
    assert_eq!(c.openpgp.key_type, PgpKeyType::Rsa3072);
    assert!(!c.openpgp.auto_enroll && !c.openpgp.autocrypt);
    for (bad, key) in [
        ("[openpgp]\nkey_type = \"dsa\"\n", "openpgp.key_type"),
        ("[openpgp]\nautocrypt = \"yes\"\n", "openpgp.autocrypt"),
    ] {
        let e = Config::from_toml_str(bad, "<t>").unwrap_err().to_string();
        assert!(e.contains(key), "{bad}: {e}");
    }
    let typo = ok("[openpgp]\nauto_enrol = false\n");
    assert!(typo.config.openpgp.auto_enroll);
    assert!(
        typo.warnings
            .iter()
            .any(|w| w.contains("openpgp.auto_enrol") && w.contains("unknown key")),
        "{:?}",
        typo.warnings
    );
}

#[test]
fn portal_and_gina_settings() {
    let l = ok(r#"
[portal]
listen = "0.0.0.0:443"
public_url = "https://secure.example.com/"
session_idle = "10m"
[gina]
container_expiry = "30d"
default_language = "en"
password_min_length = 12
password_history = 0
lock_after = 3
notification_from = "Secure@Example.com"
"#);
    let c = l.config;
    assert_eq!(
        c.portal.public_url, "https://secure.example.com",
        "no trailing slash"
    );
    assert_eq!(c.portal.session_idle, Duration::from_secs(600));
    assert_eq!(c.gina.container_expiry, Duration::from_secs(30 * 86_400));
    assert_eq!(c.gina.password_min_length, 12);
    assert_eq!(c.gina.password_history, 0);
    assert_eq!(c.gina.lock_after, 3);
    assert_eq!(
        c.gina.notification_from.unwrap().as_str(),
        "Secure@example.com"
    );
    let off = ok("[portal]\nlisten = \"off\"\n");
    assert_eq!(off.config.portal.listen, None);

    assert!(
        one_problem("[portal]\npublic_url = \"http://secure.example.com\"\n").contains("https://")
    );
    assert!(one_problem("[gina]\ndefault_language = \"fr\"\n").contains("de, en"));
    assert!(one_problem("[portal]\ncert = \"/x.pem\"\n").contains("portal.key"));
    assert!(one_problem("[portal]\nsession_idle = \"2d\"\n").contains("session_max"));
    assert!(one_problem("[gina]\nlock_after = 0\n").contains("between 1 and"));
    assert!(
        one_problem("[admin]\nlisten = \"127.0.0.1:8443\"\n").contains("portal.listen"),
        "the portal's default address is taken into account"
    );
    let short = ok("[gina]\npassword_min_length = 6\n");
    assert!(
        short
            .warnings
            .iter()
            .any(|w| w.contains("password_min_length"))
    );
}

#[test]
fn filter_section_is_read() {
    let l = ok(r#"
[filter]
clamd = "unix:/run/clamav/clamd.ctl"
spamd = "Spamd.Example:783"
spamd_user = "siegel"
virus_action = "quarantine"
spam_action = "quarantine"
spam_reject_score = 12.5
virus_directions = ["inbound"]
spam_directions = ["inbound", "outbound"]
virus_max_scan_size = "100MiB"
spam_max_scan_size = "1M"
connect_timeout = "2s"
scan_timeout = "30s"
fail_open = true
"#);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let f = l.config.filter;
    assert_eq!(
        f.clamd,
        Some(ScannerAddress::Unix("/run/clamav/clamd.ctl".into()))
    );
    assert_eq!(
        f.spamd,
        Some(ScannerAddress::Tcp("spamd.example:783".into()))
    );
    assert_eq!(
        f.spamd.as_ref().map(ToString::to_string).as_deref(),
        Some("tcp:spamd.example:783")
    );
    assert_eq!(f.spamd_user.as_deref(), Some("siegel"));
    assert_eq!(f.virus_action, VirusAction::Quarantine);
    assert_eq!(f.spam_action, SpamAction::Quarantine);
    assert_eq!(
        f.spam_reject_score,
        Some(siegel_types::SpamScore::from_thousandths(12_500))
    );
    assert_eq!(f.virus_directions, [siegel_types::Direction::Inbound]);
    assert_eq!(f.spam_directions.len(), 2);
    assert_eq!(f.virus_max_scan_size, 100 << 20);
    assert_eq!(f.spam_max_scan_size, 1 << 20);
    assert_eq!(f.connect_timeout, Duration::from_secs(2));
    assert_eq!(f.scan_timeout, Duration::from_secs(30));
    assert!(f.fail_open);

    // The other spellings of an address and a score.
    let f = ok("[filter]\nclamd = \"tcp:127.0.0.1:3310\"\nspamd = \"unix:/run/spamd.sock\"\nspam_reject_score = 15\n")
        .config
        .filter;
    assert_eq!(f.clamd, Some(ScannerAddress::Tcp("127.0.0.1:3310".into())));
    assert_eq!(
        f.spamd,
        Some(ScannerAddress::Unix("/run/spamd.sock".into()))
    );
    assert_eq!(
        f.spam_reject_score,
        Some(siegel_types::SpamScore::points(15))
    );
}

#[test]
fn filter_defaults_scan_nothing_until_a_scanner_is_set() {
    let f = Config::defaults().filter;
    assert_eq!((f.clamd, f.spamd), (None, None));
    assert_eq!(f.virus_action, VirusAction::Reject);
    assert_eq!(f.spam_action, SpamAction::Tag);
    assert!(
        !f.fail_open,
        "unscanned mail must not be delivered by default"
    );
    assert_eq!(f.spam_max_scan_size, 500 * 1024);
    assert_eq!(
        f.virus_max_scan_size,
        Config::defaults().smtp.max_message_size,
        "by default every accepted mail fits the virus scan"
    );
}

#[test]
fn filter_problems_name_their_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[filter]\nclamd = \"unix:clamd.ctl\"",
            "key `filter.clamd`",
            "must be absolute",
        ),
        (
            "[filter]\nclamd = \"127.0.0.1\"",
            "key `filter.clamd`",
            "missing port",
        ),
        (
            "[filter]\nspamd = \"tcp:spamd:0\"",
            "key `filter.spamd`",
            "not a port",
        ),
        (
            "[filter]\nvirus_action = \"tag\"",
            "key `filter.virus_action`",
            "\"reject\" or \"quarantine\"",
        ),
        (
            "[filter]\nspam_action = \"drop\"",
            "key `filter.spam_action`",
            "\"tag\", \"quarantine\" or \"reject\"",
        ),
        (
            "[filter]\nspam_reject_score = 0",
            "key `filter.spam_reject_score`",
            "greater than zero",
        ),
        (
            "[filter]\nspam_reject_score = \"high\"",
            "key `filter.spam_reject_score`",
            "not a spam score",
        ),
        (
            "[filter]\nspam_reject_score = true",
            "key `filter.spam_reject_score`",
            "expected a score",
        ),
        (
            "[filter]\nvirus_directions = [\"in\"]",
            "key `filter.virus_directions[0]`",
            "\"inbound\" or \"outbound\"",
        ),
        (
            "[filter]\nspamd_user = \"two words\"",
            "key `filter.spamd_user`",
            "not a user name",
        ),
        (
            "[filter]\nvirus_max_scan_size = 0",
            "key `filter.virus_max_scan_size`",
            "greater than zero",
        ),
        (
            "[filter]\nscan_timeout = \"5\"",
            "key `filter.scan_timeout`",
            "duration",
        ),
        (
            "[filter]\nconnect_timeout = \"1m\"\nscan_timeout = \"30s\"",
            "siegel.toml:3: key `filter.scan_timeout`",
            "shorter than `filter.connect_timeout`",
        ),
        (
            "[filter]\nfail_open = \"no\"",
            "key `filter.fail_open`",
            "true or false",
        ),
    ];
    for (text, at, why) in cases {
        let shown = one_problem(text);
        assert!(
            shown.contains(at) && shown.contains(why),
            "{text:?}: {shown}"
        );
    }
}

#[test]
fn filter_warns_about_settings_that_cannot_work() {
    let l = ok(
        "[filter]\nspam_action = \"reject\"\nvirus_action = \"quarantine\"\nvirus_directions = [\"inbound\", \"inbound\"]\n",
    );
    let w = l.warnings.join("\n");
    assert!(
        w.contains("key `filter.spam_action`: has no effect: `filter.spamd` is not set"),
        "{w}"
    );
    assert!(
        w.contains("key `filter.virus_action`: has no effect: `filter.clamd` is not set"),
        "{w}"
    );
    assert!(
        w.contains("key `filter.virus_directions`: Inbound is listed more than once"),
        "{w}"
    );

    let l = ok("[filter]\nclamd = \"tcp:127.0.0.1:3310\"\nvirus_directions = []\n");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("no mail is virus-scanned")),
        "{:?}",
        l.warnings
    );

    let l = ok("[smtp]\nmax_message_size = \"100M\"\n[filter]\nclamd = \"tcp:127.0.0.1:3310\"\n");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("filter.virus_max_scan_size") && w.contains("quarantine")),
        "{:?}",
        l.warnings
    );
    // With fail_open the admin has chosen to deliver such mail unscanned.
    let l = ok(
        "[smtp]\nmax_message_size = \"100M\"\n[filter]\nclamd = \"tcp:127.0.0.1:3310\"\nfail_open = true\n",
    );
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);

    let l = ok(
        "[filter]\nspamd = \"127.0.0.1:783\"\nspam_action = \"reject\"\nspam_reject_score = 20\n",
    );
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("filter.spam_reject_score")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn wkd_section() {
    let d = Config::defaults().wkd;
    assert!(d.enabled);
    assert_eq!(d.cache_ttl, Duration::from_secs(86_400));
    assert_eq!(d.negative_ttl, Duration::from_secs(3600));
    let c = ok("[wkd]\nenabled = false\ncache_ttl = \"2d\"\nnegative_ttl = \"10m\"\n").config;
    assert!(!c.wkd.enabled);
    assert_eq!(c.wkd.cache_ttl, Duration::from_secs(2 * 86_400));
    assert_eq!(c.wkd.negative_ttl, Duration::from_secs(600));
    assert!(one_problem("[wkd]\nenabled = \"yes\"\n").contains("wkd.enabled"));
    assert!(one_problem("[wkd]\ncache_ttl = \"forever\"\n").contains("wkd.cache_ttl"));
    assert!(one_problem("[wkd]\ncache_ttl = \"60d\"\n").contains("30 days"));
    assert!(one_problem("[wkd]\nnegative_ttl = \"2d\"\n").contains("wkd.cache_ttl"));
    assert!(
        ok("[wkd]\nttl = \"1h\"\n")
            .warnings
            .iter()
            .any(|w| w.to_string().contains("ttl"))
    );
}

#[test]
fn users_section_reads_address_patterns_and_refuses_nonsense() {
    use siegel_types::{Address, AddressPattern};
    let d = ok("").config;
    assert!(
        d.users.onboard.is_empty(),
        "nobody is onboarded unless named"
    );
    let noreply = Address::parse("noreply@example.com").unwrap();
    assert!(d.users.exclude.iter().any(|p| p.matches(&noreply)));
    let c = ok("[users]\nonboard = [\"Example.COM\", \"bob@example.org\"]\nexclude = []\n").config;
    assert_eq!(
        c.users.onboard,
        vec![
            AddressPattern::Domain("example.com".into()),
            AddressPattern::Address(Address::parse("bob@example.org").unwrap()),
        ]
    );
    assert!(c.users.exclude.is_empty());
    for bad in [
        "[users]\nonboard = [\"not a domain!\"]\n",
        "[users]\nonboard = \"*\"\n",
    ] {
        let e = Config::from_toml_str(bad, "<t>").unwrap_err().to_string();
        assert!(e.contains("users.onboard"), "{bad}: {e}");
    }
}
