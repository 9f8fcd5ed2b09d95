//! Loaded PKCS#11 modules, shared by every [`Hsm`](super::Hsm) of the
//! process: a module is initialized once, and finalized when its last user
//! goes if the initialization was ours. Never unloaded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use super::error::HsmError;

/// One loaded module and how many [`Hsm`]s use it.
struct Module {
    ctx: Pkcs11,
    users: usize,
    /// Whether this module's `C_Initialize` was ours (and so the last user
    /// finalizes it); `false` when something else in the process had
    /// initialized it already.
    finalize_when_unused: bool,
}

/// Loaded modules by canonical path. Never shrinks: unloading a module that
/// registered exit handlers can crash the process later.
static MODULES: Mutex<Option<HashMap<PathBuf, Module>>> = Mutex::new(None);

fn modules() -> MutexGuard<'static, Option<HashMap<PathBuf, Module>>> {
    // The map is consistent after every statement, so a panic elsewhere while
    // holding the lock leaves nothing half-done.
    MODULES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One [`Hsm`]'s use of a module; dropping it finalizes the module when it
/// was the last user.
pub(super) struct Lease {
    pub(super) path: PathBuf,
    pub(super) ctx: Pkcs11,
}

impl Lease {
    /// Loads (once per process) and initializes the module at `path`.
    pub(super) fn acquire(configured: &Path) -> Result<Lease, HsmError> {
        let not_found = |why| HsmError::ModuleNotFound {
            path: configured.to_owned(),
            why,
        };
        if !configured.is_absolute() {
            return Err(not_found("the path must be absolute"));
        }
        let path = configured
            .canonicalize()
            .map_err(|_| not_found("no such file"))?;
        if !path.is_file() {
            return Err(not_found("not a file"));
        }
        let invalid = |detail: String| HsmError::ModuleInvalid {
            path: configured.to_owned(),
            detail,
        };
        let mut guard = modules();
        let map = guard.get_or_insert_with(HashMap::new);
        if !map.contains_key(&path) {
            let ctx = Pkcs11::new(&path).map_err(|e| invalid(format!("{e}")))?;
            map.insert(
                path.clone(),
                Module {
                    ctx,
                    users: 0,
                    finalize_when_unused: false,
                },
            );
        }
        let module = map
            .get_mut(&path)
            .ok_or_else(|| invalid("module registry lost the module".to_owned()))?;
        if module.users == 0 {
            match module
                .ctx
                .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            {
                Ok(()) => module.finalize_when_unused = true,
                Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                    module.finalize_when_unused = false;
                }
                Err(e) => return Err(invalid(format!("C_Initialize: {e:?}"))),
            }
        }
        module.users += 1;
        Ok(Lease {
            path,
            ctx: module.ctx.clone(),
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut guard = modules();
        let Some(module) = guard.as_mut().and_then(|m| m.get_mut(&self.path)) else {
            return;
        };
        module.users = module.users.saturating_sub(1);
        if module.users == 0 && module.finalize_when_unused {
            module.finalize_when_unused = false;
            if let Err(e) = module.ctx.clone().finalize() {
                tracing::warn!(module = %self.path.display(), error = ?e, "PKCS#11 C_Finalize failed");
            }
        }
    }
}
