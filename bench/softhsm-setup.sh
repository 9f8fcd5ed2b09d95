#!/usr/bin/env bash
# Creates a throwaway SoftHSM2 token for trying or benchmarking tally's PKCS#11
# signer (`signer = "pkcs11"`), with random PINs, in DIR:
#
#   bench/softhsm-setup.sh DIR && source DIR/env
#
# DIR/env exports SOFTHSM2_CONF (SoftHSM2 reads it when it is initialized) and
# TALLY_PKCS11_PIN; DIR/pkcs11.toml is the matching `[pkcs11]` table. The PINs
# pass through softhsm2-util's command line: use this for test tokens only.
set -euo pipefail

dir=${1:?usage: $0 DIR}
module=/usr/lib/softhsm/libsofthsm2.so
if [ ! -e "$module" ]; then
    echo "SoftHSM2 is not installed ($module): apt-get install softhsm2" >&2
    exit 1
fi

umask 077
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
cat >"$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF

random_pin() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
pin=$(random_pin)
SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --init-token --free --label tally \
    --so-pin "$(random_pin)" --pin "$pin" >/dev/null

cat >"$dir/env" <<ENV
export SOFTHSM2_CONF=$dir/softhsm2.conf
export TALLY_PKCS11_PIN=$pin
ENV
cat >"$dir/pkcs11.toml" <<TOML
[pkcs11]
module = "$module"
token_label = "tally"
pin_env = "TALLY_PKCS11_PIN"
TOML
echo "SoftHSM2 token \"tally\" ready: source $dir/env"
