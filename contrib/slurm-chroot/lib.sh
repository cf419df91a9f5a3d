# contrib/slurm-chroot/lib.sh: helpers shared by build and run (sourced, not executed).
#
# Every mount made here happens inside a private mount namespace (unshare --mount): when the last process of
# that namespace exits, the kernel drops its mounts, so nothing is left mounted on the host even when a run
# is killed with SIGKILL.

prog=${prog:-slurm-chroot}
log() { printf '%s %s: %s\n' "$(date +%T)" "$prog" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The cache root for built chroots; outside any clone, shared by all of them.
cache_root=${DATALAD_SLURM_CHROOT_CACHE:-/var/cache/datalad-slurm}

# recipe_key: a short hash of the files that define what the chroot contains. Changing any of them makes
# `build` produce a new chroot instead of reusing the old one.
recipe_key() {
    local here
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    cat "$here/build" "$here/build-pyslurm" | sha256sum | cut -c1-12
}

chroot_dir() { printf '%s/chroot-forky-%s\n' "$cache_root" "$(recipe_key)"; }

# mount_system ROOT: proc, sys and dev inside ROOT (call only inside a private mount namespace).
mount_system() {
    local root=$1
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
}
