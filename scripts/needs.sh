# Sourced by scripts/test and scripts/kernel-matrix: log lines, running as root, and
# installing what is missing (an apt package for a command or a file, a Python module).
# Idempotent: what is already there is left alone.

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
# apt_install PACKAGE FOR: installs PACKAGE (needed for FOR), updating the lists once.
apt_install() {
  local package=$1 for=$2
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  log "installing $package (for $for)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
}

# need_apt COMMAND PACKAGE: installs PACKAGE when COMMAND is not on PATH.
need_apt() {
  local command=$1 package=$2
  command -v "$command" >/dev/null 2>&1 && return 0
  apt_install "$package" "$command"
  command -v "$command" >/dev/null 2>&1 || { log "$package did not provide $command"; exit 1; }
}

# need_apt_file PATH PACKAGE: installs PACKAGE when PATH does not exist (headers, libraries).
need_apt_file() {
  local path=$1 package=$2
  [ -e "$path" ] && return 0
  apt_install "$package" "$path"
  [ -e "$path" ] || { log "$package did not provide $path"; exit 1; }
}

# need_python_module MODULE PACKAGE: pip-installs PACKAGE when python3 cannot import MODULE.
need_python_module() {
  local module=$1 package=$2
  python3 -c "import $module" 2>/dev/null && return 0
  log "installing Python package $package"
  python3 -m pip install --quiet --disable-pip-version-check "$package" ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$package"
  python3 -c "import $module"
}
