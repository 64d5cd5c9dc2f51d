//! The last good middle-proxy configuration on disk (`state.dir/middle-proxy/`), so a restart
//! without network still reaches the middle proxies. Each file is replaced atomically (write
//! a temporary file, sync, rename); a copy that does not parse is ignored.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::directory::{Directory, ProxyList, ProxySecret};

const SUBDIR: &str = "middle-proxy";
const SECRET: &str = "proxy-secret";
const CONFIG: &str = "proxy-config";
const CONFIG_V6: &str = "proxy-config-v6";

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(SUBDIR)
}

/// The cached configuration under `state_dir`, if a complete, valid copy is there.
pub fn load(state_dir: &Path) -> Option<Directory> {
    let dir = dir(state_dir);
    let read = |name: &str| std::fs::read(dir.join(name)).ok();
    let secret = ProxySecret::parse(&read(SECRET)?).ok()?;
    let v4 = ProxyList::parse(&read(CONFIG)?).ok()?;
    let v6 = read(CONFIG_V6)
        .and_then(|text| ProxyList::parse(&text).ok())
        .unwrap_or_default();
    Some(Directory { secret, v4, v6 })
}

/// Stores the raw answers a [`Directory`] was parsed from (`v6` may be absent).
pub fn store(state_dir: &Path, secret: &[u8], v4: &[u8], v6: Option<&[u8]>) -> io::Result<()> {
    let dir = dir(state_dir);
    std::fs::create_dir_all(&dir)?;
    replace(&dir, SECRET, secret)?;
    replace(&dir, CONFIG, v4)?;
    if let Some(v6) = v6 {
        replace(&dir, CONFIG_V6, v6)?;
    }
    Ok(())
}

fn replace(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_copy_loads_and_a_broken_one_is_ignored() {
        let state = tempfile::tempdir().unwrap();
        assert!(load(state.path()).is_none());
        store(state.path(), &[9; 128], b"proxy_for 2 127.0.0.1:1;\n", None).unwrap();
        let loaded = load(state.path()).unwrap();
        assert_eq!(loaded.secret.0, vec![9; 128]);
        assert_eq!(loaded.v4.for_dc(2), ["127.0.0.1:1".parse().unwrap()]);
        std::fs::write(state.path().join(SUBDIR).join(CONFIG), b"garbage").unwrap();
        assert!(load(state.path()).is_none());
    }
}
