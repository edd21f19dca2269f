//! COPY steps: unpacking a client's upload into the build sandbox.

use std::collections::BTreeMap;

use super::{Build, BuildHost, StepError};
use crate::envd_link::{self, EnvdEndpoint};

/// Copies files of an uploaded archive into the build sandbox: the archive is uploaded
/// through envd into the sandbox's `/tmp` (a tmpfs, so not part of the captured layer;
/// never written through the sandbox's paths from the host, where the sandbox's symlinks
/// could redirect it), unpacked by `tar` inside the sandbox into a scratch directory,
/// given its owner and mode there, then copied with `cp -a` to the destination.
pub(super) struct CopyJob {
    pub(super) archive: std::path::PathBuf,
    pub(super) src: String,
    pub(super) dest: String,
    pub(super) owner: String,
    pub(super) mode: String,
    pub(super) workdir: Option<String>,
}

/// `$1` src glob, `$2` dest, `$3` owner, `$4` mode (may be empty), `$5` workdir, `$6`
/// tar's decompression flag (may be empty), `$7` the uploaded archive (removed).
const COPY_SCRIPT: &str = r#"set -eu
stage=$(mktemp -d /tmp/.courier-copy.XXXXXX)
trap 'rm -rf "$stage" "$7"' EXIT
tar -x $6 --no-same-owner -C "$stage" -f "$7"
src=$1 dest=$2 owner=$3 mode=$4
case "$owner" in *:*) ;; *) owner="$owner:" ;; esac
case "$dest" in /*) ;; *) dest="$5/$dest" ;; esac
cd "$stage"
shopt -s nullglob dotglob
IFS=$'
'
matches=( $src )
unset IFS
if [ ${#matches[@]} -eq 0 ]; then
  echo "COPY: $src matches nothing in the uploaded files" >&2
  exit 1
fi
chown -R -- "$owner" "${matches[@]}"
if [ -n "$mode" ]; then
  find "${matches[@]}" -type f -exec chmod "$mode" {} +
fi
many=0
[ ${#matches[@]} -gt 1 ] && many=1
case "$dest" in */) many=1 ;; esac
[ $many -eq 1 ] && mkdir -p -- "$dest"
for m in "${matches[@]}"; do
  if [ -d "$m" ]; then
    mkdir -p -- "$dest"
    cp -a -- "$m/." "$dest/"
  elif [ -d "$dest" ]; then
    cp -a -- "$m" "$dest/"
  else
    mkdir -p -- "$(dirname -- "$dest")"
    cp -a -- "$m" "$dest"
  fi
done
"#;

impl CopyJob {
    /// Uploads the archive into the sandbox's `/tmp` through envd (as root, with envd's
    /// own file access: nothing on the host follows the sandbox's paths), then unpacks
    /// and copies it there with [`COPY_SCRIPT`] as root.
    pub(super) async fn run<H: BuildHost>(
        self,
        build: &Build<'_, H>,
        envd: &EnvdEndpoint,
        token: &str,
        step: &str,
    ) -> Result<(i32, Vec<String>), StepError> {
        use std::io::Read as _;
        let mut magic = [0u8; 2];
        let gzip = std::fs::File::open(&self.archive)
            .and_then(|mut f| f.read(&mut magic))
            .map_err(|source| StepError::MissingUpload {
                path: self.archive.clone(),
                source,
            })?
            == 2
            && magic == [0x1f, 0x8b];
        let workdir = self.workdir.clone().unwrap_or_else(|| {
            let user = self.owner.split(':').next().unwrap_or_default();
            if user == "root" {
                "/root".to_owned()
            } else {
                format!("/home/{user}")
            }
        });
        let inside = format!("/tmp/.courier-copy-{}.tar", crate::state::random_hex(8));
        envd_link::upload(envd, token, &self.archive, &inside, "root")
            .await
            .map_err(StepError::Upload)?;
        let args = vec![
            "-c".to_owned(),
            COPY_SCRIPT.to_owned(),
            "copy".to_owned(),
            self.src,
            self.dest,
            self.owner,
            self.mode,
            workdir,
            if gzip { "-z" } else { "" }.to_owned(),
            inside,
        ];
        build
            .exec(
                envd,
                token,
                step,
                "/bin/bash",
                &args,
                "root",
                None,
                &BTreeMap::new(),
            )
            .await
    }
}
