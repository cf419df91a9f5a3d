# contrib/slurm-chroot/lib.sh: helpers shared by build and run (sourced, not executed).
#
# Every mount made here happens inside a private mount namespace (unshare --mount): when the last process of
# that namespace exits, the kernel drops its mounts, so nothing is left mounted on the host even when a run
# is killed with SIGKILL.

prog=${prog:-slurm-chroot}
log() { printf '%s %s: %s\n' "$(date +%T)" "$prog" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

slurm_chroot_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The cache root for built chroots; outside any clone, shared by all of them.
cache_root=${DATALAD_SLURM_CHROOT_CACHE:-/var/cache/datalad-slurm}

# The Debian releases a chroot can be built from: one recipe file release-<name> each.
known_releases() {
    local f
    for f in "$slurm_chroot_dir"/release-*; do printf '%s ' "${f##*/release-}"; done
}

# check_release NAME: dies unless NAME has a recipe.
check_release() {
    [[ $1 =~ ^[a-z]+$ && -f $slurm_chroot_dir/release-$1 ]] \
        || die "unknown release '$1' (known: $(known_releases))"
}

# recipe_files RELEASE: the files that define what that release's chroot contains: build, the release's
# recipe and the helper scripts that recipe runs inside the chroot (its `steps`).
recipe_files() {
    local steps=()
    # shellcheck disable=SC1090
    steps=($(source "$slurm_chroot_dir/release-$1"; printf '%s\n' "${steps[@]}"))
    printf '%s\n' "$slurm_chroot_dir/build" "$slurm_chroot_dir/release-$1"
    local s
    for s in "${steps[@]}"; do printf '%s\n' "$slurm_chroot_dir/$s"; done
}

# recipe_key RELEASE: a short hash of the release's recipe files. Changing any of them makes `build` produce a
# new chroot instead of reusing the old one; the other release's chroot stays valid.
recipe_key() {
    local files
    mapfile -t files < <(recipe_files "$1")
    { printf '%s\n' "$1"; cat "${files[@]}"; } | sha256sum | cut -c1-12
}

# chroot_dir RELEASE: where that release's chroot is (or will be) built.
chroot_dir() { printf '%s/chroot-%s-%s\n' "$cache_root" "$1" "$(recipe_key "$1")"; }

# mount_system ROOT: proc, sys and dev inside ROOT (call only inside a private mount namespace).
mount_system() {
    local root=$1
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
}
