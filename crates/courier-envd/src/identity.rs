//! Acting as the requesting user: every file-system operation envd performs for a request
//! (download, upload, Stat, MakeDir, Move, ListDir, Remove, watches, a process's cwd check)
//! runs with that user's credentials, so the kernel's permission checks and symlink
//! resolution are the user's and not root's.
//!
//! Why: envd is the sandbox's init and runs as root there. Acting as root for `user` lets
//! `user` plant `~/link -> /etc/shadow` and read it through a (signed) download, or
//! overwrite a root-owned file through an upload.
//!
//! How: the work runs on a blocking thread whose credentials are switched for its
//! duration with raw, per-thread system calls (Linux keeps credentials per thread; the
//! glibc and nix wrappers broadcast the change to every thread, which would turn the whole
//! daemon into `user`): `setgroups(<user's groups>)`, `setresgid(-1, gid, -1)`,
//! `setresuid(-1, uid, -1)`. rustix's `set_thread_*` are exactly these system calls, so
//! this module needs no `unsafe`. Real and saved ids stay 0, which is what allows the way
//! back; the kernel clears the thread's effective capabilities while its effective uid is
//! not 0 and restores them from the permitted set when it is 0 again. `setfsuid` is not
//! used: gVisor's Sentry does not implement it.
//!
//! The way back (uid, then gid, then groups) is a guard's `Drop`, so it also runs when the
//! work panics; if it fails the process aborts, because a thread left with `user`'s
//! credentials must never run another request's work.
//!
//! No switch happens when the requesting user is root, or when envd itself does not run as
//! root (development and tests: envd runs as an ordinary user serving that same user).

use std::cell::Cell;
use std::sync::Arc;

use nix::unistd::{getegid, geteuid, getgroups, getuid};
use rustix::thread::{
    Gid, Uid, capabilities, set_thread_groups, set_thread_res_gid, set_thread_res_uid,
};

use crate::{
    Error,
    users::{User, UserDb},
};

/// The user a child switches to (only when the daemon runs as root).
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Who a request acts as.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The account (Basic auth or `username`, else the default user).
    pub user: User,
    /// The credentials its file-system work runs with ([`crate::identity::as_user`]);
    /// `None`: the daemon's own.
    pub identity: Option<Identity>,
    /// The account database, read as root before any switch (for owner and group names).
    pub db: Arc<UserDb>,
}

/// The credentials file-system work for `user` must run with: `None` when it runs with
/// the daemon's own (the user is root, or the daemon is not root and cannot switch).
///
/// An id of `u32::MAX` is refused: to the kernel it means "leave unchanged", so such a
/// passwd entry would silently act as root.
pub(crate) fn acting_as(user: &User, db: &UserDb) -> Result<Option<Identity>, Error> {
    if !geteuid().is_root() || user.uid == 0 {
        return Ok(None);
    }
    let groups = db.supplementary_groups(user);
    if user.uid == u32::MAX || user.gid == u32::MAX || groups.contains(&u32::MAX) {
        return Err(Error::PermissionDenied(format!(
            "user '{}' has an invalid uid or gid (4294967295)",
            user.name
        )));
    }
    Ok(Some(Identity {
        uid: user.uid,
        gid: user.gid,
        groups,
    }))
}

/// Runs `work` on a blocking thread with `identity`'s credentials (the daemon's own when
/// `None`), switching back before the thread serves anything else.
pub(crate) async fn as_user<T, F>(identity: Option<Identity>, work: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    tokio::task::spawn_blocking(move || run_as(identity.as_ref(), work))
        .await
        .map_err(|e| Error::Internal(format!("file system task failed: {e}")))?
}

thread_local! {
    /// The uid this thread is switched to, if any: a nested switch to someone else is a
    /// bug that must not silently run with the outer identity.
    static SWITCHED_TO: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Runs `work` on the current thread with `identity`'s credentials, then switches back.
/// It blocks: call it on a blocking thread (see [`as_user`]), never on an async worker.
///
/// Threads the work starts keep the credentials it ran with, for their whole life: that is
/// how a watcher's notify thread reads directories as the user who asked for the watch.
/// So `work` must not start tokio blocking tasks: a pool thread born then would be the
/// user's forever (and is refused here, see below, rather than trusted).
pub(crate) fn run_as<T>(
    identity: Option<&Identity>,
    work: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    let current = SWITCHED_TO.get();
    let wanted = identity.map(|i| i.uid);
    if current.is_some() {
        return if current == wanted {
            work()
        } else {
            Err(Error::Internal(format!(
                "refusing a nested switch from uid {current:?} to {wanted:?}"
            )))
        };
    }
    // A thread with the daemon's own credentials has equal real and effective ids; one
    // born from a switched thread would not, and must neither act as the daemon nor take
    // the user's ids as the ones to switch back to.
    let (real, effective) = (getuid(), geteuid());
    if real != effective {
        return Err(Error::Internal(format!(
            "this thread runs as uid {effective} instead of {real}; refusing file access on it"
        )));
    }
    let Some(identity) = identity else {
        return work();
    };
    let _switched = Switched::to(identity)?;
    work()
}

/// A thread switched away from the daemon's credentials; dropping it switches back.
struct Switched {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

impl Switched {
    fn to(identity: &Identity) -> Result<Switched, Error> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Error::Internal(format!(
                "switching to uid {} gid {} for file access ({what}): {e}",
                identity.uid, identity.gid
            ))
        };
        let groups = getgroups().map_err(|e| failed("reading groups", &e))?;
        // From here on, dropping `back` restores whatever was changed (each call of the way
        // back is harmless when its part was not changed yet).
        let back = Switched {
            uid: Uid::from_raw(geteuid().as_raw()),
            gid: Gid::from_raw(getegid().as_raw()),
            groups: groups.iter().map(|g| Gid::from_raw(g.as_raw())).collect(),
        };
        SWITCHED_TO.set(Some(identity.uid));
        let user_groups: Vec<Gid> = identity.groups.iter().copied().map(Gid::from_raw).collect();
        // Order matters: groups and gid need CAP_SETGID, which the uid switch takes away.
        set_thread_groups(&user_groups).map_err(|e| failed("setgroups", &e))?;
        set_thread_res_gid(None, Gid::from_raw(identity.gid), None)
            .map_err(|e| failed("setresgid", &e))?;
        set_thread_res_uid(None, Uid::from_raw(identity.uid), None)
            .map_err(|e| failed("setresuid", &e))?;
        // With SECBIT_NO_SETUID_FIXUP the kernel keeps root's effective capabilities
        // (CAP_DAC_OVERRIDE, ...) across the uid switch, and the kernel would check nothing:
        // refuse rather than act as an all-powerful `user`.
        let caps = capabilities(None).map_err(|e| failed("capget", &e))?;
        if !caps.effective.is_empty() {
            return Err(failed(
                "capabilities",
                &"effective capabilities survive the uid switch (SECBIT_NO_SETUID_FIXUP?)",
            ));
        }
        Ok(back)
    }
}

impl Drop for Switched {
    fn drop(&mut self) {
        let restored = set_thread_res_uid(None, self.uid, None)
            .and_then(|()| set_thread_res_gid(None, self.gid, None))
            .and_then(|()| set_thread_groups(&self.groups));
        let (uid, gid) = (geteuid().as_raw(), getegid().as_raw());
        if restored.is_err() || uid != self.uid.as_raw() || gid != self.gid.as_raw() {
            // Never let this thread serve another request: it may still be `user`.
            eprintln!(
                "courier-envd: cannot switch a thread back to uid {} gid {} after file access \
                 (now {uid}/{gid}, {restored:?}); aborting",
                self.uid.as_raw(),
                self.gid.as_raw(),
            );
            std::process::abort();
        }
        SWITCHED_TO.set(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> Option<Identity> {
        if !geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the identity tests as root"
            );
            println!("skipped: switching credentials needs root");
            return None;
        }
        Some(Identity {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        })
    }

    fn groups_now() -> Vec<u32> {
        getgroups().unwrap().iter().map(|g| g.as_raw()).collect()
    }

    #[test]
    fn work_runs_as_the_user_and_the_thread_is_root_again_afterwards() {
        let Some(nobody) = nobody() else { return };
        let before = groups_now();
        let inside = run_as(Some(&nobody), || {
            Ok((geteuid().as_raw(), getegid().as_raw(), groups_now()))
        })
        .unwrap();
        assert_eq!(inside, (65534, 65534, vec![65534]));
        assert_eq!((geteuid().as_raw(), getegid().as_raw()), (0, 0));
        assert_eq!(groups_now(), before);
        assert!(!capabilities(None).unwrap().effective.is_empty());
    }

    #[test]
    fn other_threads_keep_root_while_one_thread_is_switched() {
        let Some(nobody) = nobody() else { return };
        // An attacker's long request (a slow upload as `user`) must not make the daemon's
        // other threads lose root, nor the reverse.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let switched = std::thread::spawn(move || {
            run_as(Some(&nobody), || {
                tx.send(geteuid().as_raw()).unwrap();
                done_rx.recv().unwrap();
                Ok(())
            })
            .unwrap();
        });
        assert_eq!(rx.recv().unwrap(), 65534);
        assert_eq!(geteuid().as_raw(), 0);
        done_tx.send(()).unwrap();
        switched.join().unwrap();
    }

    #[test]
    fn a_panicking_work_still_switches_back() {
        let Some(nobody) = nobody() else { return };
        // A request that makes the work panic must not leave the pool thread as `user`.
        let caught = std::panic::catch_unwind(|| {
            let _ = run_as(Some(&nobody), || -> Result<(), Error> { panic!("boom") });
        });
        assert!(caught.is_err());
        assert_eq!((geteuid().as_raw(), getegid().as_raw()), (0, 0));
        assert_eq!(SWITCHED_TO.get(), None);
    }

    #[test]
    fn a_thread_born_while_switched_is_never_trusted() {
        let Some(nobody) = nobody() else { return };
        // If work ever started a pool thread, that thread would be `user` for good: it
        // must not serve root's work, nor a switch that would "restore" to `user`.
        let born = run_as(Some(&nobody), || {
            Ok(std::thread::spawn(|| {
                let as_daemon = run_as(None, || Ok(geteuid().as_raw()));
                let as_nobody = run_as(
                    Some(&Identity {
                        uid: 65534,
                        gid: 65534,
                        groups: vec![65534],
                    }),
                    || Ok(()),
                );
                (as_daemon.is_err(), as_nobody.is_err(), geteuid().as_raw())
            }))
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(born, (true, true, 65534));
    }

    #[test]
    fn a_nested_switch_to_someone_else_is_refused() {
        let Some(nobody) = nobody() else { return };
        let other = Identity {
            uid: 65533,
            gid: 65533,
            groups: vec![],
        };
        let nested = run_as(Some(&nobody), || {
            let same = run_as(Some(&nobody), || Ok(geteuid().as_raw()))?;
            let as_daemon = run_as(None, || Ok(()));
            let as_other = run_as(Some(&other), || Ok(()));
            Ok((same, as_daemon.is_err(), as_other.is_err()))
        })
        .unwrap();
        assert_eq!(nested, (65534, true, true));
    }

    #[test]
    fn an_id_meaning_unchanged_is_refused() {
        let Some(_) = nobody() else { return };
        // A passwd entry with uid 4294967295 would make setresuid leave the thread root.
        let user = User {
            name: "minus-one".into(),
            uid: u32::MAX,
            gid: 1000,
            home: "/".into(),
            shell: "/bin/sh".into(),
        };
        assert!(acting_as(&user, &UserDb::default()).is_err());
        let root = User {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
            shell: "/bin/sh".into(),
        };
        assert!(acting_as(&root, &UserDb::default()).unwrap().is_none());
    }
}
