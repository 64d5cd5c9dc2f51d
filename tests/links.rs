//! `frontgate link` and `frontgate secret` as an operator runs them: the JSON, the PNG files
//! and the terminal QR codes, each code read back by a real decoder (`zbarimg`, Debian's
//! `zbar-tools`) and compared with the link; the terminal text is drawn as a dark and as a
//! light terminal theme would show it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

/// Two users and two exact names on the `mtproto: true` route: four links.
const ROUTES: &str = "\
listen: 127.0.0.1:8443
mtproto:
  users:
    alice: 00112233445566778899aabbccddeeff
    bob.b-2: ffeeddccbbaa99887766554433221100
routes:
  - sni: [proxy.example.com, cdn.example.net]
    mtproto: true
    to: 127.0.0.1:9444
";

fn frontgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frontgate"))
        .args(args)
        .output()
        .expect("frontgate runs")
}

fn routes_file(dir: &Path) -> String {
    let path = dir.join("routes.yaml");
    std::fs::write(&path, ROUTES).unwrap();
    path.to_str().unwrap().to_string()
}

/// What `zbarimg` reads in the image at `path`: one line per code found.
fn decode(path: &Path) -> Vec<String> {
    let out = Command::new("zbarimg")
        .args(["--quiet", "--raw", "--nodbus"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("zbarimg (apt-get install zbar-tools) does not run: {e}"));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn json_links(output: &Output) -> Vec<serde_json::Value> {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output:?}"))
}

#[test]
fn json_lists_every_user_and_name_with_escaped_query_values() {
    let dir = tempfile::tempdir().unwrap();
    let routes = routes_file(dir.path());
    let links = json_links(&frontgate(&[
        "link", "--config", &routes, "--json", "--host", "a b&c", "--port", "443",
    ]));
    let ee = |secret: &str, domain: &str| format!("ee{secret}{}", hex::encode(domain));
    let mut expected = Vec::new();
    for (user, secret) in [
        ("alice", "00112233445566778899aabbccddeeff"),
        ("bob.b-2", "ffeeddccbbaa99887766554433221100"),
    ] {
        for domain in ["cdn.example.net", "proxy.example.com"] {
            let ee = ee(secret, domain);
            let query = format!("server=a%20b%26c&port=443&secret={ee}");
            expected.push(serde_json::json!({
                "user": user,
                "domain": domain,
                "host": "a b&c",
                "port": 443,
                "secret": ee,
                "tg": format!("tg://proxy?{query}"),
                "tme": format!("https://t.me/proxy?{query}"),
            }));
        }
    }
    assert_eq!(links, expected);
}

#[test]
fn one_png_per_user_and_name_decodes_to_its_link() {
    let dir = tempfile::tempdir().unwrap();
    let routes = routes_file(dir.path());
    let pngs = dir.path().join("codes");
    let links = json_links(&frontgate(&[
        "link",
        "--config",
        &routes,
        "--json",
        "--host",
        "203.0.113.5",
        "--qr-png",
        pngs.to_str().unwrap(),
    ]));
    let mut names: Vec<String> = std::fs::read_dir(&pngs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "alice@cdn.example.net.png",
            "alice@proxy.example.com.png",
            "bob.b-2@cdn.example.net.png",
            "bob.b-2@proxy.example.com.png",
        ]
    );
    assert_eq!(links.len(), 4);
    for link in &links {
        let file = pngs.join(format!("{}@{}.png", link["user"], link["domain"]).replace('"', ""));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{} holds a secret", file.display());
        assert_eq!(decode(&file), [link["tg"].as_str().unwrap()]);
    }
}

/// A terminal's colours: the default foreground and background of its theme, and what the
/// SGR colour codes the QR text may use turn into (grey levels).
#[derive(Clone, Copy)]
struct Theme {
    foreground: u8,
    background: u8,
}

const DARK_THEME: Theme = Theme {
    foreground: 230,
    background: 20,
};
const LIGHT_THEME: Theme = Theme {
    foreground: 20,
    background: 250,
};

/// Draws terminal text as a terminal with `theme` shows it: each cell two pixels tall (its
/// upper and lower half), SGR colour codes applied, the window's own background around it,
/// then scaled up 4 times; written as a grayscale PNG to `path`.
fn draw_terminal(text: &str, theme: Theme, path: &Path) {
    const MARGIN: usize = 3;
    const SCALE: usize = 4;
    let mut rows: Vec<Vec<u8>> = Vec::new();
    for line in text.lines() {
        let (mut fg, mut bg) = (theme.foreground, theme.background);
        let (mut top, mut bottom) = (Vec::new(), Vec::new());
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                assert_eq!(chars.next(), Some('['), "{line:?}");
                let params: String = chars.by_ref().take_while(|&c| c != 'm').collect();
                for code in params.split(';') {
                    match code.parse::<u8>().unwrap() {
                        0 => (fg, bg) = (theme.foreground, theme.background),
                        30 => fg = 0,
                        37 => fg = 200,
                        97 => fg = 255,
                        39 => fg = theme.foreground,
                        40 => bg = 0,
                        47 => bg = 200,
                        107 => bg = 255,
                        49 => bg = theme.background,
                        other => panic!("SGR {other} is not drawn by this test: {line:?}"),
                    }
                }
                continue;
            }
            let (upper, lower) = match c {
                ' ' => (bg, bg),
                '▀' => (fg, bg),
                '▄' => (bg, fg),
                '█' => (fg, fg),
                other => panic!("{other:?} is not a QR cell"),
            };
            top.push(upper);
            bottom.push(lower);
        }
        rows.push(top);
        rows.push(bottom);
    }
    let width = rows.iter().map(Vec::len).max().unwrap() + 2 * MARGIN;
    let height = rows.len() + 4 * MARGIN;
    let mut pixels = Vec::with_capacity(width * height * SCALE * SCALE);
    for y in 0..height {
        let row = y
            .checked_sub(2 * MARGIN)
            .and_then(|y| rows.get(y))
            .cloned()
            .unwrap_or_default();
        let mut line = Vec::with_capacity(width * SCALE);
        for x in 0..width {
            let value = x
                .checked_sub(MARGIN)
                .and_then(|x| row.get(x).copied())
                .unwrap_or(theme.background);
            line.extend(std::iter::repeat_n(value, SCALE));
        }
        for _ in 0..SCALE {
            pixels.extend_from_slice(&line);
        }
    }
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(
        file,
        u32::try_from(width * SCALE).unwrap(),
        u32::try_from(height * SCALE).unwrap(),
    );
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&pixels).unwrap();
    writer.finish().unwrap();
}

#[test]
fn the_terminal_code_reads_on_dark_and_light_themes() {
    let dir = tempfile::tempdir().unwrap();
    let routes = routes_file(dir.path());
    let links = json_links(&frontgate(&[
        "link", "--config", &routes, "--json", "--user", "alice",
    ]));
    let out = frontgate(&["link", "--config", &routes, "--qr", "--user", "alice"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    // Each link's text lines, then its code: the lines that carry colour codes.
    let mut codes: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with('\x1b') {
            current.push_str(line);
            current.push('\n');
        } else if !current.is_empty() {
            codes.push(std::mem::take(&mut current));
        }
    }
    codes.push(current);
    assert_eq!(codes.len(), links.len(), "{text}");
    for (code, link) in codes.iter().zip(&links) {
        let tg = link["tg"].as_str().unwrap();
        assert!(text.contains(tg));
        for (name, theme) in [("dark", DARK_THEME), ("light", LIGHT_THEME)] {
            let image = dir.path().join(format!("{}-{name}.png", link["domain"]));
            draw_terminal(code, theme, &image);
            assert_eq!(decode(&image), [tg], "{name} theme");
        }
    }
}

#[test]
fn a_code_that_cannot_be_drawn_fails_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let routes = routes_file(dir.path());
    // The longest QR code holds 2953 bytes: this host makes every link longer.
    let host = "h".repeat(3000);
    let out = frontgate(&["link", "--config", &routes, "--host", &host, "--qr"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot draw the QR code of alice") && stderr.contains("does not fit"),
        "{stderr}"
    );
    let pngs = dir.path().join("codes");
    let out = frontgate(&[
        "link",
        "--config",
        &routes,
        "--host",
        &host,
        "--qr-png",
        pngs.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(std::fs::read_dir(&pngs).unwrap().count(), 0);
}

#[test]
fn port_zero_and_an_empty_host_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let routes = routes_file(dir.path());
    let out = frontgate(&["link", "--config", &routes, "--port", "0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 is not in 1..=65535"));
    let out = frontgate(&["link", "--config", &routes, "--host", ""]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("host clients connect to is empty"));
}

#[test]
fn secret_output_is_labelled() {
    let out = frontgate(&["secret", "--domain", "proxy.example.com"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let secret = lines[0].strip_prefix("secret: ").expect("labelled secret");
    assert_eq!(secret.len(), 32);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    let ee = lines[1]
        .strip_prefix("ee secret for proxy.example.com: ")
        .expect("labelled ee secret");
    assert_eq!(
        ee,
        format!("ee{secret}{}", hex::encode("proxy.example.com"))
    );
}
