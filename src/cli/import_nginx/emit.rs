//! A [`Plan`] written as a commented route file. Every scalar is either plain text that YAML
//! cannot read as anything but a string, or a double-quoted JSON string (a JSON string is a
//! valid YAML double-quoted scalar); the result is read back by `config::parse` before use.

use std::fmt::Write as _;

use super::plan::{Comment, Commented, Plan, Target};

/// The route file text of `plan`.
pub fn route_file(plan: &Plan) -> String {
    let mut out = String::new();
    line(
        &mut out,
        0,
        &format!(
            "frontgate route file imported by `frontgate import-nginx` from {}.",
            plan.source
        ),
    );
    line(
        &mut out,
        0,
        "Every nginx directive without an equivalent is a `# not mapped:` comment; review them,",
    );
    line(&mut out, 0, "then: frontgate check --config routes.yaml");
    if !plan.comments.is_empty() {
        line(&mut out, 0, "");
        comments(&mut out, 0, &plan.comments);
    }
    out.push('\n');

    out.push_str("listen:\n");
    for listen in &plan.listen {
        comments(&mut out, 2, &listen.comments);
        let _ = writeln!(out, "  - {}", scalar(&listen.value));
    }
    if let Some(accept) = &plan.accept_proxy_protocol_from {
        comments(&mut out, 0, &accept.comments);
        let _ = writeln!(out, "accept_proxy_protocol_from: {}", list(&accept.value));
    }
    if !plan.timeouts.is_empty() {
        out.push_str("timeouts:\n");
        for timeout in &plan.timeouts {
            comments(&mut out, 2, &timeout.comments);
            let (key, value) = &timeout.value;
            let _ = writeln!(out, "  {key}: {}", scalar(value));
        }
    }
    out.push_str("\nroutes:\n");
    if plan.routes.is_empty() {
        line(&mut out, 2, "(none: nginx did not route by server name)");
    }
    for route in &plan.routes {
        comments(&mut out, 2, &route.comments);
        let _ = writeln!(out, "  - sni: {}", one_or_list(&route.value.sni));
        target_keys(&mut out, 4, &route.value.target);
    }
    for (key, target) in [("default", &plan.default), ("non_tls", &plan.non_tls)] {
        if let Some(target) = target {
            target_section(&mut out, key, target);
        }
    }
    out
}

fn target_section(out: &mut String, key: &str, target: &Commented<Target>) {
    out.push('\n');
    let _ = writeln!(out, "{key}:");
    comments(out, 2, &target.comments);
    target_keys(out, 2, &target.value);
}

fn target_keys(out: &mut String, indent: usize, target: &Target) {
    let pad = " ".repeat(indent);
    let _ = writeln!(out, "{pad}to: {}", one_or_list(&target.to));
    if target.proxy_protocol {
        let _ = writeln!(out, "{pad}proxy_protocol: v1");
    }
}

fn comments(out: &mut String, indent: usize, comments: &[Comment]) {
    for comment in comments {
        match comment {
            Comment::Note(text) => line(out, indent, text),
            Comment::NotMapped(u) => line(
                out,
                indent,
                &format!("not mapped: {}: `{}`: {}", u.at, u.text, u.why),
            ),
        }
    }
}

/// One `# ` comment line; control characters (a newline from a quoted nginx string) become
/// spaces so the comment cannot end early.
fn line(out: &mut String, indent: usize, text: &str) {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let comment = format!("# {clean}");
    let _ = writeln!(out, "{}{}", " ".repeat(indent), comment.trim_end());
}

fn one_or_list(values: &[String]) -> String {
    match values {
        [one] => scalar(one),
        _ => list(values),
    }
}

fn list(values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|v| scalar(v)).collect();
    format!("[{}]", items.join(", "))
}

/// `text` as a YAML scalar that reads back as this exact string.
fn scalar(text: &str) -> String {
    let plain_chars = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'));
    let starts_well = text
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    let lower = text.to_ascii_lowercase();
    let reserved = matches!(
        lower.as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
    );
    let numeric = text.parse::<f64>().is_ok() || lower.starts_with("0x") || lower.starts_with("0o");
    if plain_chars && starts_well && !reserved && !numeric && !text.ends_with(':') {
        text.to_string()
    } else {
        serde_json::Value::String(text.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::Place;
    use super::super::plan::Route;
    use super::super::stream::Unmapped;
    use super::*;
    use crate::config::{Action, ProxyProtocol};

    #[test]
    fn scalars_that_yaml_would_misread_are_quoted() {
        assert_eq!(scalar("127.0.0.1:8443"), "127.0.0.1:8443");
        assert_eq!(scalar("proxy.example.com"), "proxy.example.com");
        for (text, quoted) in [
            ("*.cdn.example.com", "\"*.cdn.example.com\""),
            ("[::]:443", "\"[::]:443\""),
            ("::1/128", "\"::1/128\""),
            ("443", "\"443\""),
            ("on", "\"on\""),
            ("1e5", "\"1e5\""),
            ("a\"b", "\"a\\\"b\""),
        ] {
            assert_eq!(scalar(text), quoted);
        }
    }

    #[test]
    fn the_file_reads_back_as_yaml_with_every_comment_on_its_own_line() {
        let plan = Plan {
            source: "x.conf".to_string(),
            comments: vec![Comment::NotMapped(Unmapped {
                at: Place {
                    file: "x.conf".to_string(),
                    line: 3,
                },
                text: "log_format a \"b\nc\";".to_string(),
                why: "why".to_string(),
            })],
            listen: vec![Commented::new("[::]:443".to_string())],
            accept_proxy_protocol_from: None,
            timeouts: vec![Commented::new(("idle", "1d".to_string()))],
            routes: vec![Commented::new(Route {
                sni: vec!["a.example.com".to_string(), "*.a.example.com".to_string()],
                target: Target {
                    to: vec!["127.0.0.1:1".to_string()],
                    proxy_protocol: true,
                },
            })],
            default: Some(Commented::new(Target {
                to: vec!["127.0.0.1:2".to_string(), "[::1]:3".to_string()],
                proxy_protocol: false,
            })),
            non_tls: None,
        };
        let text = route_file(&plan);
        assert!(
            text.contains("# not mapped: x.conf:3: `log_format a \"b c\";`: why\n"),
            "{text}"
        );
        let config = crate::config::parse(&text, "routes.yaml").unwrap();
        assert_eq!(config.listen, ["[::]:443".parse().unwrap()]);
        let route = config
            .routes
            .for_server_name(Some("deep.a.example.com"))
            .unwrap();
        let Action::Forward(forward) = &route.action else {
            panic!("{route:?}")
        };
        assert_eq!(forward.proxy_protocol, ProxyProtocol::V1);
        let default = config
            .routes
            .for_server_name(Some("other.example.com"))
            .unwrap();
        let Action::Forward(forward) = &default.action else {
            panic!("{default:?}")
        };
        assert_eq!(forward.upstreams[1].to_string(), "[::1]:3");
        assert_eq!(forward.proxy_protocol, ProxyProtocol::None);
    }
}
