#!/usr/bin/env bash
# The bench's image of real OS files (BENCH_IMAGE=os): a Debian bookworm root made by
# mmdebstrap (variant standard, plus a JDK, LibreOffice, Firefox, clang/LLVM, gcc, gdb,
# TeX and numpy: binaries, libraries, documentation, fonts, compressed packages) put into
# a fresh ext4 file system with mkfs.ext4 -d, in a sparse raw image of SIZE_MIB MiB.
# The image is kept while its stamp matches; the packages come from Debian's mirror of
# the day, so two builds on different days differ a little (the stamp names the day).
#
#   os_image.sh IMAGE SIZE_MIB [PACKAGES]
#
# PACKAGES (comma-separated) replaces the bench's list above: `make run-two-sites` takes
# a smaller root (python3,git,vim: about 600 MiB of files).
set -euo pipefail
image="$1"
size_mib="$2"
work="$(dirname "$image")"
BENCH_PACKAGES="default-jdk-headless,libreoffice-writer,libreoffice-calc,libreoffice-impress,firefox-esr,clang-15,llvm-15,gcc,g++,gdb,texlive-latex-base,texlive-fonts-recommended,python3-numpy,git,vim"
PACKAGES="${3:-$BENCH_PACKAGES}"

die() { echo "os_image: error: $*" >&2; exit 1; }
[[ "$PACKAGES" != "$BENCH_PACKAGES" ]] || ((size_mib >= 3072)) \
    || die "an image of real OS files needs BENCH_SIZE_MIB >= 3072 (the root alone is about 2.4 GiB)"

stamp="bookworm standard $PACKAGES $size_mib"
if [[ -f "$image" && "$(cat "$image.stamp" 2>/dev/null)" == "$stamp"* ]]; then
    echo "== reusing the ${size_mib} MiB image of OS files $image (built $(awk '{print $NF}' "$image.stamp"))"
    exit 0
fi
for tool in mmdebstrap mkfs.ext4; do
    command -v "$tool" >/dev/null && continue
    [[ $(id -u) == 0 ]] || die "$tool is missing and this is not root: install mmdebstrap and e2fsprogs first"
    echo "== installing mmdebstrap and e2fsprogs (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends mmdebstrap e2fsprogs >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends mmdebstrap e2fsprogs >/dev/null; } \
        || die "could not install mmdebstrap with apt-get"
done

root="$work/os-root"
rm -rf "$root" "$image" "$image.stamp"
echo "== building a Debian root with mmdebstrap (a few minutes; log $work/os-build.log)"
started=$SECONDS
mmdebstrap --mode=auto --variant=standard --include="$PACKAGES" bookworm "$root" \
    >"$work/os-build.log" 2>&1 || die "mmdebstrap failed: see $work/os-build.log"
used_mib=$(($(du -sm "$root" | cut -f1)))
((used_mib + 256 < size_mib)) || die "the root takes $used_mib MiB, too much for a ${size_mib} MiB image"
truncate -s "${size_mib}M" "$image"
mkfs.ext4 -q -F -L bench-os -d "$root" "$image" >>"$work/os-build.log" 2>&1 \
    || die "mkfs.ext4 -d failed: see $work/os-build.log"
rm -rf "$root"
echo "$stamp $(date -u +%F)" >"$image.stamp"
echo "== image of OS files built in $((SECONDS - started)) s: $used_mib MiB of files in a ${size_mib} MiB ext4 image"
