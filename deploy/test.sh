#!/usr/bin/env bash
# The whole test suite, from a clean machine: installs what the tests need from Debian
# packages when missing, starts PostgreSQL, then runs fmt, clippy and every test on
# SQLite and PostgreSQL, on the soft key store and on SoftHSM2.
#
#   deploy/test.sh            # everything
#   deploy/test.sh -- NAME    # extra arguments go to `cargo test` (e.g. a test filter)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# --- Debian packages ---------------------------------------------------------------
# softhsm2: the PKCS#11 token the key-layer tests run on; opensc: pkcs11-tool;
# postgresql: the second storage backend; openssl: the independent judge of signatures;
# python3-venv: a private environment for pkilint and pyHanko; curl: presents a test
# ID card's client certificate; chromium, chromium-driver: the browser tests of the
# pages; libengine-pkcs11-openssl: lets curl log in with a key on an activated card;
# poppler-utils: pdftoppm renders signed PDFs (visible signatures are drawn).
packages=(softhsm2 opensc postgresql openssl python3-venv curl chromium chromium-driver libengine-pkcs11-openssl poppler-utils)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Python judges ---------------------------------------------------------------
# pkilint checks certificates, CRLs and OCSP responses against RFC 5280 and the ETSI
# EN 319 412 profiles.
# In a virtual environment of its own: Debian refuses pip installs into its Python.
judges="$PWD/target/judges"
if [ ! -x "$judges/bin/lint_etsi_cert" ]; then
  say "installing pkilint into $judges"
  python3 -m venv "$judges"
  "$judges/bin/pip" install --quiet --disable-pip-version-check pkilint==0.13.3
fi
# pyHanko judges PAdES signatures (integrity, trust, time-stamps, the DSS for B-LT), in
# the same environment. Pinned together: the CLI and the certificate validator are
# released with the library.
pyhanko_version="0.38.0"
if ! "$judges/bin/pyhanko" --version 2>/dev/null | grep -q "version $pyhanko_version "; then
  say "installing pyHanko $pyhanko_version into $judges"
  [ -x "$judges/bin/pip" ] || python3 -m venv "$judges"
  "$judges/bin/pip" install --quiet --disable-pip-version-check \
    "pyHanko==$pyhanko_version" pyhanko-cli==0.6.0 pyhanko-certvalidator==0.33.0
fi
export PATH="$judges/bin:$PATH"
command -v lint_etsi_cert >/dev/null || { echo "pkilint did not install" >&2; exit 1; }
command -v pyhanko >/dev/null || { echo "pyHanko did not install" >&2; exit 1; }

# An independent OpenID Connect relying party (openid-client, certified by the OpenID
# Foundation) judges the identity provider. It runs on Node.js: the machine's own if it
# has one, else Debian's.
command -v node >/dev/null && command -v npm >/dev/null || {
  say "installing nodejs and npm"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
}
rp_judge="$PWD/target/judges/oidc-rp"
if [ ! -d "$rp_judge/node_modules/openid-client" ] || ! cmp -s tests/judges/oidc-rp/package.json "$rp_judge/package.json"; then
  say "installing openid-client into $rp_judge"
  mkdir -p "$rp_judge"
  cp tests/judges/oidc-rp/package.json "$rp_judge/"
  (cd "$rp_judge" && npm install --no-audit --no-fund --silent)
fi
export EID_TEST_OIDC_RP_DIR="$rp_judge"

# --- PostgreSQL ----------------------------------------------------------------------
say "starting PostgreSQL"
as_postgres() { if [ "$(id -u)" -eq 0 ]; then su postgres -c "$*"; else sudo -u postgres sh -c "$*"; fi; }
cluster=$(pg_lsclusters --no-header | awk 'NR==1 {print $1" "$2}')
if [ -z "$cluster" ]; then
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  as_postgres "pg_createcluster $version main" >/dev/null
  cluster="$version main"
fi
pg_port=$(pg_lsclusters --no-header | awk 'NR==1 {print $3}')
if ! pg_lsclusters --no-header | awk 'NR==1 {print $4}' | grep -q online; then
  if [ "$(id -u)" -eq 0 ]; then pg_ctlcluster $cluster start; else sudo pg_ctlcluster $cluster start; fi
fi
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$pg_port" && break; sleep 1; done
pg_isready -h 127.0.0.1 -p "$pg_port"
# A role that may create one database per test, reached over TCP with a password.
as_postgres "psql -q -p $pg_port -c \"DO \\\$\\\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eid_test') THEN CREATE ROLE eid_test LOGIN CREATEDB PASSWORD 'eid_test'; END IF; END\\\$\\\$;\""
export EID_TEST_POSTGRES_URL="postgres://eid_test:eid_test@127.0.0.1:${pg_port}/postgres"

# --- SoftHSM2 ------------------------------------------------------------------------
export EID_TEST_PKCS11_MODULE="${EID_TEST_PKCS11_MODULE:-$(dpkg -L libsofthsm2 | grep 'libsofthsm2.so$' | head -1)}"
[ -f "$EID_TEST_PKCS11_MODULE" ] || { echo "SoftHSM2 module not found" >&2; exit 1; }

# --- Rust ------------------------------------------------------------------------------
export CARGO_TERM_COLOR=never
say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
say "cargo test (SQLite and PostgreSQL; soft store and SoftHSM2)"
shift_args=()
if [ "${1:-}" = "--" ]; then shift; shift_args=("$@"); fi
cargo test --locked --workspace -- "${shift_args[@]}"
say "all tests passed"
