//! Spawn-time limits: setrlimit for open files, core size and address space, in a `pre_exec` hook.

use crate::config::Rlimits;

const MB: u64 = 1024 * 1024;

/// Apply the configured limits to the calling process. Meant for `CommandExt::pre_exec`: it only
/// calls getrlimit/setrlimit (async-signal-safe) and allocates nothing. Each configured value sets
/// both the soft and the hard limit (so the agent cannot raise it back), clamped to the current hard
/// limit since an unprivileged process cannot raise that. `None` leaves the inherited value.
pub fn apply_rlimits(r: &Rlimits) -> std::io::Result<()> {
    if let Some(n) = r.nofile {
        set(libc::RLIMIT_NOFILE, n)?;
    }
    if let Some(mb) = r.core_mb {
        set(libc::RLIMIT_CORE, mb.saturating_mul(MB))?;
    }
    if let Some(mb) = r.address_space_mb {
        set(libc::RLIMIT_AS, mb.saturating_mul(MB))?;
    }
    Ok(())
}

#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

fn set(resource: Resource, value: u64) -> std::io::Result<()> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(resource, &mut cur) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let v = value.min(cur.rlim_max);
    let new = libc::rlimit {
        rlim_cur: v,
        rlim_max: v,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(resource, &new) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
