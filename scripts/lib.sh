# shellcheck shell=bash
# Helpers sourced by the scripts: installing what OceanChat needs on a
# Debian 12 machine, and waiting for ports and HTTP endpoints.
# Plain bash: /dev/tcp stands in for curl and ss, which a fresh Debian may
# not have.

OC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OC_VENV="$OC_ROOT/.cache/venv"
# SecantusDB has only pre-releases so far: pin the one that was checked.
OC_SECANTUS_VERSION="0.7.0b3"
export OC_SECANTUSD="$OC_VENV/bin/secantusd-py"

oc_say() { printf '%s\n' "$*" >&2; }
oc_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root: directly when we are root, else through sudo.
oc_as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        oc_die "need root to run: $* (run as root or install sudo)"
    fi
}

OC_APT_UPDATED=""
# Installs Debian packages, running `apt-get update` once per shell.
oc_apt_install() {
    command -v apt-get >/dev/null || oc_die "apt-get not found; please install: $*"
    oc_say "installing $* (apt-get)"
    if [[ -z $OC_APT_UPDATED ]]; then
        oc_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        OC_APT_UPDATED=1
    fi
    oc_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Stops and disables a systemd service that a package install started.
oc_disable_service() {
    command -v systemctl >/dev/null || return 0
    systemctl is-active --quiet "$1" 2>/dev/null || return 0
    oc_say "stopping and disabling the system service $1 (OceanChat starts its own)"
    oc_as_root systemctl disable --now "$1" >/dev/null 2>&1 || true
}

# True when the venv holds SecantusDB at the pinned version.
oc_secantus_installed() {
    [[ -x $OC_SECANTUSD ]] &&
        "$OC_VENV/bin/python" - "$OC_SECANTUS_VERSION" <<'PY' 2>/dev/null
import importlib.metadata, sys
sys.exit(importlib.metadata.version("SecantusDB") != sys.argv[1])
PY
}

# Installs whatever is missing: redis-server, nats-server, nginx (in front
# with scripts/up --nginx, and in the tests) and a C compiler (ring and
# mimalloc build C code) from Debian; SecantusDB from PyPI into
# .cache/venv. Checks that cargo exists. Quiet when nothing is missing.
oc_install() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v nats-server >/dev/null || missing+=(nats-server)
    command -v cc >/dev/null || missing+=(gcc libc6-dev)
    # Tests make throwaway TLS certificates for NATS and Redis.
    command -v openssl >/dev/null || missing+=(openssl)
    # Debian puts nginx in /usr/sbin, off a normal user's PATH.
    oc_nginx_path >/dev/null || missing+=(nginx)
    if ! oc_secantus_installed; then
        command -v python3 >/dev/null || missing+=(python3 python3-venv)
    fi
    if ((${#missing[@]})); then
        oc_apt_install "${missing[@]}"
        # Debian starts these as system services on the default ports;
        # OceanChat runs its own instances, which those would block.
        local service
        for service in redis-server nats-server nginx; do
            if [[ " ${missing[*]} " == *" $service "* ]]; then
                oc_disable_service "$service"
            fi
        done
    fi

    if ! oc_secantus_installed; then
        oc_say "installing SecantusDB $OC_SECANTUS_VERSION into $OC_VENV"
        mkdir -p "$(dirname "$OC_VENV")"
        # Debian's python3 needs python3-venv for `-m venv` (ensurepip).
        if ! python3 -m venv "$OC_VENV" >/dev/null 2>&1; then
            rm -rf "$OC_VENV"
            oc_apt_install python3-venv
            python3 -m venv "$OC_VENV"
        fi
        "$OC_VENV/bin/pip" install --quiet --disable-pip-version-check \
            "SecantusDB==$OC_SECANTUS_VERSION"
        oc_secantus_installed || oc_die "SecantusDB $OC_SECANTUS_VERSION did not install into $OC_VENV"
    fi

    command -v cargo >/dev/null ||
        oc_die "cargo not found: install Rust with rustup (https://rustup.rs), then open a new shell"
}

# What the browser tests (tests/tests/web_browser.rs) need: Debian's
# chromium, node (18 or later) with npm, and the packages of tests/web,
# installed with `npm ci` from the committed package-lock.json whenever it
# differs from what was installed last. Quiet when nothing is missing.
oc_install_browser() {
    local missing=()
    [[ -x ${OC_CHROMIUM:-/usr/bin/chromium} ]] || missing+=(chromium)
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    if ((${#missing[@]})); then
        oc_apt_install "${missing[@]}"
    fi
    local major
    major=$(node -p 'process.versions.node.split(".")[0]')
    ((major >= 18)) || oc_die "node $(node --version) is too old for playwright-core (18 or later)"

    local dir="$OC_ROOT/tests/web" stamp="$OC_ROOT/tests/web/node_modules/.oc-installed-lock"
    if ! cmp -s "$dir/package-lock.json" "$stamp"; then
        oc_say "installing the browser tests' packages (npm ci in tests/web)"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
        cp "$dir/package-lock.json" "$stamp"
    fi
}

# Installs the cargo subcommand `cargo NAME` (crate cargo-NAME, from
# crates.io, at the version its lock file pins) when it is missing. ABOUT
# says how long that takes, for the message.
oc_cargo_tool() {
    local name=$1 about=$2
    cargo "$name" --version >/dev/null 2>&1 && return 0
    oc_say "installing cargo-$name (cargo install, $about)"
    nice -n 10 cargo install --locked "cargo-$name"
}

# Prints the path of nginx: on PATH, else Debian's /usr/sbin/nginx (off a
# normal user's PATH); fails when neither exists.
oc_nginx_path() {
    if command -v nginx 2>/dev/null; then
        return 0
    fi
    [[ -x /usr/sbin/nginx ]] && printf '%s\n' /usr/sbin/nginx
}

# True when something accepts TCP connections on HOST:PORT.
oc_port_open() {
    local host=$1 port=$2
    # shellcheck disable=SC2016 # expanded by the inner bash, from its arguments
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

# Fails with a message when HOST:PORT is already taken. NAME says by what
# it was meant to be used.
oc_require_free_port() {
    local name=$1 host=$2 port=$3
    if oc_port_open "$host" "$port"; then
        oc_say "error: $host:$port (for $name) is already in use; stop whatever holds it" \
            "or choose another port (see the OC_* variables at the top of scripts/up)"
        return 1
    fi
}

# Waits up to TIMEOUT seconds until HOST:PORT accepts connections. With a
# PID, gives up early when that process has died.
oc_wait_port() {
    local host=$1 port=$2 timeout_s=$3 pid=${4:-}
    local deadline=$((SECONDS + timeout_s))
    until oc_port_open "$host" "$port"; do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# Prints the HTTP status code of GET PATH on HOST:PORT, or fails.
oc_http_status() {
    local host=$1 port=$2 path=$3 line
    # shellcheck disable=SC2016 # expanded by the inner bash, from its arguments
    line=$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n" "$2" "$0" "$1" >&3
        head -n 1 <&3' "$host" "$port" "$path" 2>/dev/null) || return 1
    # "HTTP/1.1 200 OK\r" -> "200"
    line=${line#* }
    printf '%s\n' "${line%% *}"
}

# Waits up to TIMEOUT seconds until GET PATH on HOST:PORT answers 200. With
# a PID, gives up early when that process has died.
oc_wait_http_200() {
    local host=$1 port=$2 path=$3 timeout_s=$4 pid=${5:-}
    local deadline=$((SECONDS + timeout_s))
    until [[ $(oc_http_status "$host" "$port" "$path" || true) == 200 ]]; do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# Splits "HOST:PORT" into the globals OC_HOST and OC_PORT; a wildcard host
# becomes 127.0.0.1, which is where local probes connect.
oc_split_addr() {
    OC_HOST=${1%:*}
    OC_PORT=${1##*:}
    if [[ $OC_HOST == 0.0.0.0 || $OC_HOST == "[::]" ]]; then
        OC_HOST=127.0.0.1
    fi
    [[ $OC_PORT =~ ^[0-9]+$ ]] || oc_die "not a HOST:PORT address: $1"
}
