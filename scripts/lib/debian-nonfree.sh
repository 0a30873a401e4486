# Sourced by scripts/fetch-*.sh: downloads Debian bookworm packages (contrib and non-free
# enabled) through a private APT configuration under a cache dir, so the machine's own sources
# and package state stay untouched. Nothing is installed.
#
#   debian_nonfree_download NAME DEST PACKAGE=VERSION...   # the .deb files land in DEST/debs

debian_nonfree_download() {
  local name=$1 dest=$2
  shift 2
  command -v apt-get >/dev/null || { echo "$name: apt-get is required (Debian/Ubuntu)" >&2; return 1; }
  command -v dpkg-deb >/dev/null || { echo "$name: dpkg-deb is required" >&2; return 1; }
  local apt=$dest/apt
  mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$dest/debs"
  cat > "$apt/sources.list" <<SOURCES
deb http://deb.debian.org/debian bookworm main contrib non-free
deb http://deb.debian.org/debian bookworm-updates main contrib non-free
deb http://deb.debian.org/debian-security bookworm-security main contrib non-free
SOURCES
  local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache::Archives=$apt/archives"
              -o APT::Sandbox::User=root -q)
  apt-get "${opts[@]}" update >&2
  (cd "$dest/debs" && apt-get "${opts[@]}" download "$@" >&2)
}
