//! `mpm trust [PATH]`, `mpm trust --list`, `mpm trust --revoke PATH`: which projects' `./.mpm/`
//! configuration may choose commands (see `crate::trust`).

use std::path::PathBuf;

use clap::Args;

use super::output::outln;
use crate::trust;

#[derive(Debug, Args)]
pub(crate) struct TrustArgs {
    /// The project folder whose `.mpm/config.yaml` to trust as it is now (default: here).
    #[arg(value_name = "PATH", conflicts_with_all = ["list", "revoke"])]
    pub path: Option<PathBuf>,
    /// The trusted folders, each with whether its file still matches.
    #[arg(long)]
    pub list: bool,
    /// Forget a folder: its project file is ignored again when it chooses commands.
    #[arg(long, value_name = "PATH", conflicts_with = "list")]
    pub revoke: Option<PathBuf>,
}

pub(super) fn trust(a: TrustArgs) -> anyhow::Result<i32> {
    let record = trust::record_path();
    if a.list {
        for (folder, digest) in trust::TrustRecord::load(&record)?.folders {
            let file = PathBuf::from(&folder).join(trust::PROJECT_FILE);
            let state = match std::fs::read(&file) {
                Ok(b) if trust::digest(&b) == digest => "trusted",
                Ok(_) => "changed (needs `mpm trust` again)",
                Err(_) => "missing",
            };
            outln!("{folder}  {}  {state}", &digest[..digest.len().min(12)])?;
        }
        return Ok(0);
    }
    if let Some(folder) = a.revoke {
        let was = trust::revoke(&folder, &record)?;
        outln!(
            "{} {}",
            if was { "revoked" } else { "was not trusted:" },
            folder.display()
        )?;
        return Ok(0);
    }
    let folder = a.path.unwrap_or_else(|| PathBuf::from("."));
    let (canonical, digest) = trust::trust(&folder, &record)?;
    outln!(
        "trusted {} ({} sha256 {})",
        canonical.display(),
        trust::PROJECT_FILE,
        &digest[..12]
    )?;
    Ok(0)
}
