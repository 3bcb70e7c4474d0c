//! One running agent per state directory.
//!
//! Two agents started from one config share an identity: the brain closes the older session
//! when the newer connects, so running the enrollment line a second time beside a running
//! agent used to stop the first one with no word from the second. `run` now holds an
//! exclusive lock on `<state_dir>/agent.lock` for as long as it runs (the kernel releases it
//! when the process ends, however it ends), and a second `run` refuses to start, saying why.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

/// The lock, held until dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Takes the state directory's lock, or says that another agent holds it.
pub fn lock(state_dir: &Path) -> Result<StateLock, String> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
    let path = state_dir.join("agent.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(StateLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(format!(
            "another taskward-agent is already running with the state directory {} (it holds \
             {}); stop it first: two agents with one identity would take the link from each other",
            state_dir.display(),
            path.display()
        )),
        Err(TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::lock;

    /// While one holder has the lock a second is refused, naming the directory; once the
    /// first is dropped the lock can be taken again.
    #[test]
    fn a_second_agent_on_one_state_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let err = lock(dir.path()).unwrap_err();
        assert!(err.contains("already running"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        drop(first);
        lock(dir.path()).unwrap();
    }
}
