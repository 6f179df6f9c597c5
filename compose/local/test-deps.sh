#!/usr/bin/env bash
# The Debian packages `make test` needs, checked before its tests run (`make test` and
# .ci/run both call this). As root it installs the missing ones with apt-get; as anyone
# else it stops, naming them and the command that installs them, so that no test is
# skipped for a tool that is not there. Without dpkg (not Debian) it checks the commands.
set -euo pipefail

# package               commands the tests (or the local Kafka) run from it
PACKAGES=(
    "maven                mvn"
    "default-jre-headless java"
    "curl                 curl"
    "qemu-utils           qemu-img qemu-io qemu-nbd"
    "libnbd-bin           nbdinfo nbdcopy"
    "nbdkit               nbdkit"
    "nbdkit-plugin-python nbdkit"
    "qemu-system-x86      qemu-system-x86_64"
    "e2fsprogs            mkfs.ext4"
    "xfsprogs             mkfs.xfs"
    "btrfs-progs          mkfs.btrfs"
    "dosfstools           mkfs.fat"
    "mtools               mcopy"
    "fdisk                sfdisk"
    "openssh-server       /usr/sbin/sshd"
    "openssh-client       ssh-keygen"
    "mount                mount umount losetup"
    "procps               pgrep"
    "openssl              openssl"
    "samba                smbd smbpasswd"
    "prometheus           prometheus promtool"
)

die() { echo "test-deps: $*" >&2; exit 1; }

installed() {
    [[ "$(dpkg-query -W -f '${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

# A package counts as present when dpkg has it installed, or else when every command
# the tests need from it is found (java from another JDK package, a system without dpkg).
missing=()
missing_commands=()
for entry in "${PACKAGES[@]}"; do
    read -r package commands <<<"$entry"
    command -v dpkg-query >/dev/null && installed "$package" && continue
    absent=()
    for cmd in $commands; do
        command -v "$cmd" >/dev/null || absent+=("$cmd")
    done
    ((${#absent[@]})) || continue
    missing+=("$package")
    missing_commands+=("${absent[@]}")
done

if ((${#missing[@]})); then
    install=(apt-get install -y -q --no-install-recommends "${missing[@]}")
    if ! command -v apt-get >/dev/null; then
        die "the tests need ${missing_commands[*]}, not found here (Debian packages:" \
            "${missing[*]}): install them with this system's package manager"
    fi
    if [[ $(id -u) != 0 ]]; then
        die "the tests need the Debian packages ${missing[*]} (for ${missing_commands[*]})," \
            "not installed here. Install them with:"$'\n'"    sudo ${install[*]}"
    fi
    echo "== installing the Debian packages the tests need: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    "${install[@]}"
fi

if [[ $(id -u) != 0 ]]; then
    echo "test-deps: not root: the tests that mount a tmpfs, attach a loop device or make" \
        "a device node will be skipped (under CI=true they fail)" >&2
fi
