//! `sluice serve`'s settings: the command line, then the environment (`SLUICE_LISTEN`,
//! `SLUICE_DATA_DIR`, ...), then the file `--config` names (`SLUICE_CONFIG`), then the
//! defaults. The file is TOML with the options' names; relative paths in it are taken
//! from the file's folder:
//!
//! ```toml
//! listen = "0.0.0.0:50551"
//! data_dir = "/var/lib/sluice"
//! # PostgreSQL instead of SQLite in data_dir; replicas of a domain share one.
//! database = "postgres://sluice@db.example.net/sluice_garr"
//! topology = "garr.toml"
//! hold_timeout = "120s"
//! log_format = "json"
//! federation = "federation.toml"
//! agents = "agents.toml"
//! operators = "operators.toml"
//! metrics = "127.0.0.1:9184"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database: Option<String>,
    pub topology: Option<PathBuf>,
    pub hold_timeout: Option<String>,
    pub log_format: Option<String>,
    pub federation: Option<PathBuf>,
    pub agents: Option<PathBuf>,
    pub operators: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
}

impl ServeFile {
    pub fn load(path: &Path) -> Result<ServeFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut f: ServeFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut f.data_dir,
            &mut f.topology,
            &mut f.federation,
            &mut f.agents,
            &mut f.operators,
        ]
        .into_iter()
        .flatten()
        {
            *p = base.join(&*p);
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployed_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/sluice.toml");
        let f = ServeFile::load(&path).unwrap();
        assert_eq!(f.data_dir, Some(PathBuf::from("/var/lib/sluice")));
        assert_eq!(f.log_format.as_deref(), Some("json"));
        assert!(f.topology.unwrap().ends_with("systemd/topology.toml"));
    }

    #[test]
    fn the_postgresql_federation_examples_are_valid() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/federation/postgres");
        for d in ["garr", "geant", "internet2"] {
            let f = ServeFile::load(&folder.join(format!("{d}.toml"))).unwrap();
            let db = f.database.unwrap();
            assert!(db.starts_with("postgres://") && db.ends_with(&format!("/sluice_{d}")));
            let topology = f.topology.unwrap();
            assert!(topology.exists(), "{}", topology.display());
            let federation = f.federation.unwrap();
            assert!(federation.exists(), "{}", federation.display());
        }
    }

    #[test]
    fn paths_are_taken_from_the_files_folder_and_unknown_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\ndata_dir = \"data\"\nagents = \"/etc/sluice/agents.toml\"\nhold_timeout = \"5s\"\n",
        )
        .unwrap();
        let f = ServeFile::load(&file).unwrap();
        assert_eq!(f.data_dir, Some(dir.path().join("data")));
        assert_eq!(f.agents, Some(PathBuf::from("/etc/sluice/agents.toml")));
        assert_eq!(f.hold_timeout.as_deref(), Some("5s"));
        std::fs::write(&file, "listen = \"127.0.0.1:1\"\ncolour = \"blue\"\n").unwrap();
        let e = ServeFile::load(&file).unwrap_err();
        assert!(e.contains("colour") && e.contains("line 2"), "{e}");
    }
}
