# Sourced by the suites that run Go-built peers (go-nvml, grpc-authority, gfd, nvidia-ctk):
# builds Go commands from a pinned module directory once, into a cache keyed by the files that
# pin them and the Go version, and prints the directory that holds them.
#
#   dir=$(go_build_cached NAME MODULE_DIR "KEY_FILES" CGO OUT=PACKAGE...)
#
# KEY_FILES: paths under MODULE_DIR (files or directories) whose contents make the key; CGO: 0|1;
# each OUT=PACKAGE builds PACKAGE (a module path, or `.`) as MODULE_DIR-relative OUT. The cache
# is $FAKEGPU_CACHE (default ~/.cache/fake-gpu-operator)/NAME-<key>; concurrent callers wait on a
# lock, and a failed build leaves nothing in the cache. GOTOOLCHAIN keeps its default: a go older
# than a go.mod's `go` line fetches that toolchain from the module proxy instead of failing.
go_build_cached() {
  local name=$1 module=$2 key_files=$3 cgo=$4
  shift 4
  command -v go >/dev/null || { echo "$name: the Go toolchain (go) is not on PATH" >&2; return 2; }
  local cache_root="${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}" key dir
  # shellcheck disable=SC2086 # KEY_FILES is a list of paths
  key="$( { cd "$module" && find $key_files -type f | LC_ALL=C sort | xargs cat; go env GOVERSION; } | sha256sum | cut -c1-16)"
  dir="$cache_root/$name-$key"
  _go_built() { local o; for o in "$@"; do [ -x "$dir/${o%%=*}" ] || return 1; done; }
  if ! _go_built "$@"; then
    mkdir -p "$cache_root"
    (
      flock 9
      _go_built "$@" && exit 0
      tmp="$(mktemp -d "$cache_root/.$name-$key.XXXXXX")"
      for o in "$@"; do
        echo "$name: building ${o%%=*} (${o#*=})" >&2
        start=$SECONDS
        (cd "$module" && CGO_ENABLED=$cgo GOFLAGS="-mod=readonly ${GOFLAGS:-}" \
          go build -trimpath -o "$tmp/${o%%=*}" "${o#*=}" 2>"$tmp/build.log") \
          || { cat "$tmp/build.log" >&2; rm -rf "$tmp"; exit 1; }
        echo "$name: ${o%%=*} built in $((SECONDS - start)) s" >&2
      done
      rm -f "$tmp/build.log"
      rm -rf "$dir" && mv "$tmp" "$dir"
    ) 9>"$cache_root/.$name-$key.lock" || return 1
  fi
  echo "$dir"
}
