//! Local state every command shares: the data directory (private to its owner), the database
//! (an embedded SQLite file in it, mode 0600, unless a URL is given) and the master key the
//! database's keys are wrapped with (one rule for where it comes from).

use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use gatehouse_secrets::Key;
use secrecy::{ExposeSecret as _, SecretString};

/// The master key file `gatehouse` generates in a data directory when it may.
const MASTER_KEY_FILE: &str = "master.key";

/// Creates `dir` (and missing parents) readable by its owner only, or tightens an existing one.
///
/// Mode 0700; a root-owned directory gets 0711 instead, because a managed PostgreSQL started by
/// root runs as the `postgres` user and must pass through it to its own directory (others can
/// still neither list it nor read what is in it: the files holding secrets are 0600).
pub(crate) fn private_dir(dir: &Path) -> anyhow::Result<()> {
    let created = !dir.exists();
    if created {
        // Parents as usual (a root-owned 0700 parent would shut the managed PostgreSQL out);
        // the data directory itself private from its first instant.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("creating {}", dir.display()));
            }
            _ => {}
        }
    }
    let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    let want = if meta.uid() == 0 { 0o711 } else { 0o700 };
    let looser = mode & !want != 0;
    if looser || (created && mode != want) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(want))
            .with_context(|| format!("setting the mode of {}", dir.display()))?;
    }
    if looser {
        tracing::warn!(
            path = %dir.display(),
            was = format!("{mode:04o}"),
            now = format!("{want:04o}"),
            "the data directory was open to other users; restricted it"
        );
    }
    Ok(())
}

/// Makes `path` a file only its owner may read and write: created empty with mode 0600 when
/// missing (before SQLite opens it, so it is never readable by others), else tightened.
fn private_file(path: &Path, create: bool) -> anyhow::Result<()> {
    if create && !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
    }
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
        tracing::warn!(
            path = %path.display(),
            was = format!("{mode:04o}"),
            "a database file was open to other users; restricted it to 0600"
        );
    }
    Ok(())
}

/// The database file of a `sqlite://PATH?...` URL (none for in-memory databases).
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.starts_with(':')).then(|| PathBuf::from(path))
}

/// The database file and the write-ahead log and shared-memory files SQLite keeps beside it.
fn sqlite_files(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [db.to_owned(), with("-wal"), with("-shm")]
}

/// Opens the database: `database_url`, or an embedded SQLite file in `data_dir` (created 0700,
/// the database file and its -wal/-shm files 0600).
pub(crate) async fn open_store(
    data_dir: &Path,
    database_url: Option<&str>,
) -> anyhow::Result<gatehouse_store::Store> {
    let url = match database_url {
        Some(u) => u.to_owned(),
        None => {
            private_dir(data_dir)?;
            format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("gatehouse.db").display()
            )
        }
    };
    let db = sqlite_file(&url);
    if let Some(db) = &db {
        for (i, f) in sqlite_files(db).iter().enumerate() {
            private_file(f, i == 0)?;
        }
    }
    let store = gatehouse_store::Store::connect(&url)
        .await
        .context("opening the database")?;
    // SQLite gives the log files the database file's mode; make sure of it.
    if let Some(db) = &db {
        for f in &sqlite_files(db)[1..] {
            private_file(f, false)?;
        }
    }
    Ok(store)
}

/// What to do when no master key is given and the data directory holds none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfNoMasterKey {
    /// Write a new one to `<data-dir>/master.key` (mode 0600), with a warning (development).
    Generate,
    /// Refuse to start, saying how to make one (production).
    Refuse,
}

/// The master key the database's keys are wrapped with, from the first of: `file`
/// (`--master-key-file`, `GATEHOUSE_SECRETS_MASTER_KEY_FILE`), the `GATEHOUSE_SECRETS_MASTER_KEY`
/// variable, `<data-dir>/master.key`; else generated there or refused, as `if_none` says.
pub(crate) fn master_key(
    file: Option<&Path>,
    data_dir: &Path,
    if_none: IfNoMasterKey,
) -> anyhow::Result<Arc<Key>> {
    if let Some(f) = file {
        let text = SecretString::from(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the master key file {}", f.display()))?,
        );
        return Key::from_base64(text.expose_secret())
            .map(Arc::new)
            .context("the master key is unusable");
    }
    if let Ok(text) = std::env::var("GATEHOUSE_SECRETS_MASTER_KEY") {
        let text = SecretString::from(text);
        if !text.expose_secret().trim().is_empty() {
            return Key::from_base64(text.expose_secret())
                .map(Arc::new)
                .context("the master key is unusable");
        }
    }
    let path = data_dir.join(MASTER_KEY_FILE);
    if path.exists() {
        return master_key(Some(&path), data_dir, if_none);
    }
    if if_none == IfNoMasterKey::Refuse {
        bail!(
            "no master key: give --master-key-file FILE (make one with \
             `gatehouse secrets generate-master-key FILE`) or set GATEHOUSE_SECRETS_MASTER_KEY"
        );
    }
    private_dir(data_dir)?;
    let key = Key::generate().context("generating a master key")?;
    crate::write_private(&path, &format!("{}\n", key.to_base64().as_str()), true)?;
    tracing::warn!(
        path = %path.display(),
        fingerprint = key.fingerprint(),
        "generated a master key: signing keys and secrets are wrapped with it; keep it apart from \
         the database's backups (production: --master-key-file)"
    );
    Ok(Arc::new(key))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn private_dir_mode(p: &Path) -> u32 {
        if std::fs::metadata(p).unwrap().uid() == 0 {
            0o711
        } else {
            0o700
        }
    }

    /// What another local user would see: a data directory they cannot list and a database
    /// (with its write-ahead log) they cannot read.
    #[tokio::test]
    async fn data_dir_and_database_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let store = open_store(&data, None).await.unwrap();
        store.put_project_settings("p", "{}").await.unwrap();
        let want = private_dir_mode(&data);
        assert_eq!(mode(&data), want);
        let db = data.join("gatehouse.db");
        let files = sqlite_files(&db);
        assert!(files[1].exists(), "the write-ahead log is in use");
        for f in &files {
            if f.exists() {
                assert_eq!(mode(f), 0o600, "{}", f.display());
            }
        }
        store.close().await;
    }

    /// A data directory made by an earlier version (0755, database 0644) is tightened at start.
    #[tokio::test]
    async fn loose_state_from_before_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = data.join("gatehouse.db");
        for f in sqlite_files(&db) {
            std::fs::write(&f, b"").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        // Empty -wal/-shm files are valid for SQLite; the database opens over them.
        let store = open_store(&data, None).await.unwrap();
        assert_eq!(mode(&data), private_dir_mode(&data));
        for f in sqlite_files(&db) {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
        store.close().await;
    }

    #[test]
    fn master_key_generated_once_in_development_refused_in_production() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let err = master_key(None, &data, IfNoMasterKey::Refuse).unwrap_err();
        assert!(err.to_string().contains("--master-key-file"), "{err}");
        let first = master_key(None, &data, IfNoMasterKey::Generate).unwrap();
        assert_eq!(mode(&data.join(MASTER_KEY_FILE)), 0o600);
        // The next start finds it, in either mode.
        let again = master_key(None, &data, IfNoMasterKey::Refuse).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
    }

    #[test]
    fn sqlite_urls() {
        assert_eq!(
            sqlite_file("sqlite:///tmp/x/g.db?mode=rwc"),
            Some(PathBuf::from("/tmp/x/g.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }
}
